"""``POST /v1/builds/cancel`` and ``GET /v1/cancels/{cancel_id}``: batch cancel over REST.

The order of work keeps every refusal free of side effects: authenticate,
check the size of the body (no database yet), resolve build ids through the
status store, plan (validate and find the runs, no locks), check that the
caller may edit every DAG of the plan, and only then cancel. Any 4xx answer
means nothing changed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial
from typing import Annotated, Any, Protocol, TypeVar, cast

from fastapi import APIRouter, HTTPException, Path, Request, status
from sqlalchemy import Engine, select

from airflow_bkci.api.cancel_schemas import (
    CancelBody,
    CanceledBuild,
    CancelRecord,
    CancelResponse,
    ForbiddenAnswer,
    ProblemAnswer,
)
from airflow_bkci.api.errors import (
    AIRFLOW_DB,
    STATUS_STORE,
    blocking,
    is_connection_error,
    opened,
    problem,
    unavailable,
)
from airflow_bkci.api.security import AuthManager, Caller, denied_dags
from airflow_bkci.cancel import CancelRejected, CancelRequest, CancelResult, RunFilter
from airflow_bkci.cancel.request import CancelForbidden, CancelIncomplete, RunKey
from airflow_bkci.cancel.service import Plan, is_lock_conflict
from airflow_bkci.cancel.writes import task_key
from airflow_bkci.model.event import build_id_for

log = logging.getLogger(__name__)

router = APIRouter(tags=["cancel"])

SHOWN = 10  # ids named in a message; the problems list names up to LISTED
LISTED = 100

R = TypeVar("R")


class CancelBackend(Protocol):
    """What the routes need from :class:`airflow_bkci.cancel.CancelService`."""

    max_builds: int
    engine: Engine

    def cancel(
        self, request: CancelRequest, *, authorize: Callable[[Plan], None] | None = None
    ) -> CancelResult: ...


class BuildIndex(Protocol):
    """What the routes need from the status store: :meth:`airflow_bkci.store.Store.build_refs`."""

    def build_refs(self, build_ids: Sequence[str]) -> dict[str, tuple[str, str]]: ...


# ------------------------------------------------------------------ answers
def _rejected(exc: CancelRejected) -> HTTPException:
    return problem(exc.status, f"nothing was canceled: {'; '.join(exc.problems)}", exc.problems)


def _unavailable(where: str, exc: BaseException) -> HTTPException:
    if is_lock_conflict(exc):
        message = (
            "the builds stayed locked by the scheduler or another cancel through every "
            "attempt ([bkci] cancel_attempts)"
        )
    else:
        message = f"{where} is unavailable"
    return unavailable(
        where,
        exc,
        f"{message}. A cancel commits in full or not at all, and sending it again is safe: "
        "builds already canceled come back as already_canceled",
    )


def _named(ids: Sequence[str]) -> str:
    more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return ", ".join(ids[:SHOWN]) + more


def _forbidden(message: str, denied: list[str]) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail={"message": message, "dags": denied})


# ------------------------------------------------------------ blocking calls
async def _blocking(where: str, func: Callable[..., R], *args: Any) -> R:
    """Run ``func`` in a worker thread; refusals and an unreachable database become answers."""
    try:
        return await blocking(
            where,
            func,
            *args,
            retryable=lambda exc: is_connection_error(exc) or is_lock_conflict(exc),
            answer=_unavailable,
        )
    except CancelForbidden as exc:
        raise _forbidden(exc.problems[0], exc.dags) from None
    except CancelRejected as exc:
        raise _rejected(exc) from None
    except CancelIncomplete as exc:
        # Part of a chunked cancel committed: say exactly which part.
        log.warning("bkci cancel API: %s", exc, exc_info=True)
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            detail={"message": str(exc), "partial": exc.result.to_json()},
        ) from None


# --------------------------------------------------------------- the request
def _check_count(body: CancelBody, limit: int) -> None:
    named = len(body.builds or ()) + len(body.build_ids or ())
    if named > limit:
        raise problem(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{named} builds named; one request may name at most {limit} "
            "([bkci] cancel_max_builds). Nothing was canceled: split it into smaller requests",
            [f"{named} builds named; the limit is {limit}"],
        )


async def _runs_of(request: Request, body: CancelBody) -> list[RunKey]:
    if body.builds is not None:
        return [(b.dag_id, b.run_id) for b in body.builds]
    if not body.build_ids:
        return []
    store = cast(BuildIndex, await opened(request.app.state.bkci_store, STATUS_STORE))
    refs = await _blocking(STATUS_STORE, store.build_refs, body.build_ids)
    unknown = [b for b in dict.fromkeys(body.build_ids) if b not in refs]
    if unknown:
        listed = [f"unknown build id {b!r}" for b in unknown[:LISTED]]
        if len(unknown) > LISTED:
            listed.append(f"and {len(unknown) - LISTED} more unknown build ids")
        ids = "build ids" if len(unknown) > 1 else "build id"
        raise problem(
            status.HTTP_404_NOT_FOUND,
            f"nothing was canceled: {len(unknown)} unknown {ids}: {_named(unknown)}. The status "
            "store knows a build once its run was seen; name the run by dag_id and run_id instead",
            listed,
        )
    return [refs[b] for b in body.build_ids]


def _cancel_request(body: CancelBody, runs: list[RunKey], user: str) -> CancelRequest:
    run_filter = None
    if body.filter is not None:
        age = body.filter.older_than_seconds
        run_filter = RunFilter(
            dag_ids=tuple(body.filter.dag_ids),
            states=tuple(body.filter.states),
            older_than=None if age is None else timedelta(seconds=age),
            due_before=body.filter.due_before,
            exclude=tuple((b.dag_id, b.run_id) for b in body.filter.exclude),
            conf=body.filter.conf,
        )
    return CancelRequest(
        reason=body.reason,
        user=user,
        runs=tuple(runs),
        filter=run_filter,
        dry_run=body.dry_run,
        chunked=body.chunked,
        source="api",
    )


@router.post(
    "/v1/builds/cancel",
    response_model=CancelResponse,
    summary="Cancel builds, all or nothing",
    responses={
        400: {"model": ProblemAnswer, "description": "Refused: the problems say why"},
        401: {"description": "No valid Airflow token"},
        403: {"model": ForbiddenAnswer, "description": "No edit permission on some DAGs"},
        404: {"model": ProblemAnswer, "description": "Unknown builds or build ids"},
        413: {"model": ProblemAnswer, "description": "Too many builds for one request"},
        503: {"model": ProblemAnswer, "description": "Database unavailable; see Retry-After"},
    },
)
async def cancel_builds(
    body: CancelBody, request: Request, user: Caller, auth_manager: AuthManager
) -> dict[str, Any]:
    """Cancel the named or matching queued and running builds in one transaction.

    Running tasks fail, tasks not started are skipped, teardown tasks still run;
    each run gets a note, an audit log row and a marker that makes BK-CI report
    it CANCELED. Needs edit permission on every DAG involved. With ``dry_run``
    the answer is exactly what would change, and nothing does.
    """
    service = cast(CancelBackend, await opened(request.app.state.bkci_cancel, AIRFLOW_DB))
    _check_count(body, service.max_builds)
    wanted = _cancel_request(body, await _runs_of(request, body), user.get_name())

    def authorize(plan: Plan) -> None:
        # Between planning and locking, in the service's worker thread: the
        # cancel changes only the builds of the DAGs checked here.
        denied = denied_dags(auth_manager, user, plan.dag_ids, "PUT")
        if denied:
            log.info("bkci: cancel by %s refused: may not edit %s", wanted.user, ", ".join(denied))
            raise CancelForbidden(
                f"nothing was canceled: you may not edit {len(denied)} of the "
                f"{len(plan.dag_ids)} DAGs of this cancel ({_named(denied)}). Ask for edit "
                "permission on them, or leave their builds out",
                denied,
            )

    result = await _blocking(AIRFLOW_DB, partial(service.cancel, wanted, authorize=authorize))
    return result.to_json()


# ----------------------------------------------------------- what was done
def read_cancel(engine: Engine, cancel_id: str) -> CancelRecord | None:
    """The runs one cancel changed, from its marker rows; None if it left none."""
    from airflow.models.dagrun import DagRun

    from airflow_bkci.cancel.marks import cancel_table, cancel_task_table, ensure_tables

    ensure_tables(engine)
    c, t, dr = cancel_table.c, cancel_task_table.c, DagRun.__table__.c
    runs = (
        select(cancel_table, dr.state, dr.clear_number.label("clear_now"))
        .join_from(cancel_table, DagRun.__table__, dr.id == c.dag_run_id)
        .where(c.cancel_id == cancel_id)
        .order_by(c.dag_run_id)
    )
    tasks = (
        select(t.dag_run_id, t.task_id, t.map_index, t.new_state)
        .where(t.cancel_id == cancel_id)
        .order_by(t.task_id, t.map_index)
    )
    changed: dict[tuple[int, str], list[str]] = defaultdict(list)
    with engine.connect() as conn:
        rows = conn.execute(runs).all()
        if not rows:
            return None
        for run_pk, task_id, map_index, new_state in conn.execute(tasks):
            changed[run_pk, new_state].append(task_key(task_id, map_index))
    builds = [
        CanceledBuild(
            build_id=build_id_for(row.dag_id, row.run_id),
            dag_id=row.dag_id,
            run_id=row.run_id,
            prior_state=row.prior_state,
            state=row.state,
            cleared_since=(row.clear_now or 0) > row.clear_number,
            canceled_at=row.canceled_at.isoformat(),
            failed_tasks=changed[row.dag_run_id, "failed"],
            skipped_tasks=changed[row.dag_run_id, "skipped"],
        )
        for row in rows
    ]
    return CancelRecord(
        cancel_id=cancel_id,
        reason=rows[0].reason,
        canceled_by=rows[0].canceled_by,
        canceled_at=max(row.canceled_at for row in rows).isoformat(),
        builds=builds,
    )


@router.get(
    "/v1/cancels/{cancel_id}",
    response_model=CancelRecord,
    summary="Show the builds one cancel changed",
    responses={
        401: {"description": "No valid Airflow token"},
        403: {"model": ForbiddenAnswer, "description": "No read permission on some DAGs"},
        404: {"model": ProblemAnswer, "description": "No such cancel"},
        503: {"model": ProblemAnswer, "description": "Database unavailable; see Retry-After"},
    },
)
async def get_cancel(
    cancel_id: Annotated[str, Path(max_length=64)],
    request: Request,
    user: Caller,
    auth_manager: AuthManager,
) -> CancelRecord:
    """The runs a cancel changed, their tasks, and each run's state now.

    Only a cancel that changed a build is kept (not a dry run); its record goes
    with its runs. Needs read permission on every DAG involved.
    """
    service = cast(CancelBackend, await opened(request.app.state.bkci_cancel, AIRFLOW_DB))
    record = await _blocking(AIRFLOW_DB, read_cancel, service.engine, cancel_id)
    if record is None:
        raise problem(
            status.HTTP_404_NOT_FOUND,
            f"no cancel {cancel_id!r} here: the id is unknown, was a dry run, changed no "
            "build, or its runs were deleted",
            [f"unknown cancel id {cancel_id!r}"],
        )
    denied = await _blocking(AIRFLOW_DB, denied_dags, auth_manager, user, record.dag_ids, "GET")
    if denied:
        raise _forbidden(
            f"you may not read {len(denied)} of the {len(record.dag_ids)} DAGs this cancel "
            f"changed ({_named(denied)}); ask for read permission on them",
            denied,
        )
    return record
