"""Builds: a pipeline's builds, one build's snapshot, its change sets, a node's history.

``GET /v1/pipelines/{dag_id}/builds``, ``GET /v1/builds/{build_id}``,
``GET /v1/builds/{build_id}/changes`` and ``GET /v1/builds/{build_id}/history``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from airflow.utils.types import DagRunTriggeredByType
from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import AwareDatetime

from airflow_bkci.api.query_schemas import (
    BuildPage,
    ChangePage,
    ForbiddenAnswer,
    NodeHistory,
    ProblemAnswer,
    Snapshot,
)
from airflow_bkci.api.query_support import (
    MAX_CONF_FILTERS,
    STATUS_STORE,
    QueryStore,
    blocking,
    check_readable,
    conf_filters,
    decode_cursor,
    encode_cursor,
    fingerprint,
    problem,
    query_store,
)
from airflow_bkci.api.security import AuthManager, Caller
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.store.queries import BuildFilter, BuildKey
from airflow_bkci.store.results import Transition

router = APIRouter(tags=["builds"])

Store = Annotated[QueryStore, Depends(query_store)]
DagId = Annotated[str, Path(min_length=1, max_length=250, description="The DAG id")]
BuildId = Annotated[str, Path(min_length=1, max_length=64, description="The build id (b-…)")]

_UNAVAILABLE = {"model": ProblemAnswer, "description": "Database unavailable; see Retry-After"}
_COMMON: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid Airflow token"},
    403: {"model": ForbiddenAnswer, "description": "The caller may not read the DAG"},
    503: _UNAVAILABLE,
}


def unknown_build(build_id: str) -> Exception:
    return problem(
        status.HTTP_404_NOT_FOUND,
        f"no build {build_id!r} in the status store: build ids look like 'b-…' and come "
        "from GET /v1/pipelines/{dag_id}/builds; a run is known once it was seen",
    )


def unknown_pipeline(dag_id: str) -> Exception:
    return problem(
        status.HTTP_404_NOT_FOUND,
        f"no pipeline {dag_id!r} in the status store: no build of that DAG was seen (check "
        "the DAG id; GET /v1/pipelines lists the known ones)",
    )


def check_window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"since={since.isoformat()} is not before until={until.isoformat()}: the time "
            "range is empty; give since < until (since is inclusive, until exclusive)",
        )


# ----------------------------------------------------------- pipeline builds
# Free keys, so not a declared parameter: described as OpenAPI's free-form query
# object (style form, explode), which a client turns into conf.<key>=<value> pairs.
_CONF_PARAMETER = {
    "name": "conf",
    "in": "query",
    "required": False,
    "style": "form",
    "explode": True,
    "description": "Only builds whose run conf has each top-level key with that value: "
    "conf.<key>=<value>, one parameter per key, at most "
    f"{MAX_CONF_FILTERS}. The value matches a JSON string equal to it, a number equal to "
    "it (conf.retries=3 matches 3 and 3.0), or a boolean for true/false. A conf over 16 KiB "
    "is not kept, so such builds never match.",
    "schema": {
        "type": "object",
        "propertyNames": {"pattern": r"^conf\.[A-Za-z0-9_.-]{1,100}$"},
        "additionalProperties": {"type": "string", "maxLength": 1000},
        "maxProperties": MAX_CONF_FILTERS,
    },
    "example": {"conf.branch": "main"},
}


@router.get(
    "/v1/pipelines/{dag_id}/builds",
    response_model=BuildPage,
    summary="List a pipeline's builds, newest first, with filters",
    responses={
        **_COMMON,
        400: {"model": ProblemAnswer, "description": "A cursor this list did not give out"},
        404: {"model": ProblemAnswer, "description": "Unknown pipeline"},
        422: {"description": "A bad filter (conf key, too many conf filters), time range or limit"},
    },
    openapi_extra={"parameters": [_CONF_PARAMETER]},
)
async def list_builds(
    request: Request,
    dag_id: DagId,
    user: Caller,
    auth_manager: AuthManager,
    store: Store,
    statuses: Annotated[
        list[BuildStatus] | None,
        Query(alias="status", description="Only builds in these statuses (repeat the key)"),
    ] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="Only builds due (run_after) at or after")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="Only builds due (run_after) before")
    ] = None,
    trigger_type: Annotated[
        list[DagRunTriggeredByType] | None,
        Query(description="Only builds triggered this way (repeat the key)"),
    ] = None,
    triggering_user: Annotated[
        str | None, Query(min_length=1, max_length=512, description="Only builds this user ran")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Builds per page")] = 50,
    cursor: Annotated[
        str | None, Query(description="next_cursor of the previous page, same filters")
    ] = None,
) -> dict[str, Any]:
    """Newest first by run_after (then build number); cursor pagination.

    A page starts right after the last build of the previous one, so builds
    added meanwhile never shift a page: every build that existed when the
    first page was read is listed exactly once. ``conf.<key>=<value>``
    parameters filter by the run's conf (see the ``conf`` parameter); the
    answer never shows a build's conf.
    """
    check_window(since, until)
    conf = conf_filters(request.query_params.multi_items())
    flt = BuildFilter(
        statuses=tuple(dict.fromkeys(statuses or ())),
        since=since,
        until=until,
        trigger_types=tuple(dict.fromkeys(t.value for t in trigger_type or ())),
        triggering_user=triggering_user,
        conf=conf,
    )
    scope = "builds:" + fingerprint(
        dag_id=dag_id,
        status=sorted(s.value for s in flt.statuses),
        since=since,
        until=until,
        trigger_type=sorted(flt.trigger_types),
        triggering_user=triggering_user,
        **({"conf": conf} if conf else {}),  # cursors given out before conf filters stay good
    )
    after = _position(decode_cursor(cursor, scope)) if cursor is not None else None
    await check_readable(auth_manager, user, dag_id, "its builds")
    rows = await blocking(STATUS_STORE, store.build_page, dag_id, flt, after, limit + 1)
    if not rows and dag_id not in await blocking(STATUS_STORE, store.pipeline_ids):
        raise unknown_pipeline(dag_id)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor(scope, [last["run_after"], last["build_num"]])
    return {
        "pipeline_id": dag_id,
        "builds": page,
        "next_cursor": next_cursor,
        "conf": dict(conf),
    }


def _position(raw: Any) -> BuildKey:
    try:
        run_after, build_num = raw
        key = (datetime.fromisoformat(run_after), int(build_num))
        if key[0].tzinfo is None or isinstance(build_num, bool):
            raise ValueError("bad position")
    except (TypeError, ValueError):
        raise problem(
            status.HTTP_400_BAD_REQUEST,
            "this cursor does not hold a build position; pass the next_cursor of the "
            "previous page unchanged, or leave cursor out to start from the first page",
        ) from None
    return key


# -------------------------------------------------------------- one build
@router.get(
    "/v1/builds/{build_id}",
    response_model=Snapshot,
    summary="One build's snapshot: document and sequence, read together",
    responses={**_COMMON, 404: {"model": ProblemAnswer, "description": "Unknown build"}},
)
async def get_build(
    build_id: BuildId, user: Caller, auth_manager: AuthManager, store: Store
) -> Any:
    """The build tree and the sequence of the change set that made it.

    A consumer that saw a gap in the change stream resets to this, then applies
    change sets after ``sequence`` (GET /v1/builds/{build_id}/changes).
    """
    snapshot = await blocking(STATUS_STORE, store.snapshot, build_id)
    if snapshot is None:
        raise unknown_build(build_id)
    await check_readable(auth_manager, user, snapshot["pipeline_id"], f"build {build_id!r}")
    return snapshot


@router.get(
    "/v1/builds/{build_id}/changes",
    response_model=ChangePage,
    summary="A build's change sets after a sequence (resync)",
    responses={
        **_COMMON,
        404: {"model": ProblemAnswer, "description": "Unknown build"},
        409: {"model": ProblemAnswer, "description": "after is beyond the build's sequence"},
        410: {"model": ProblemAnswer, "description": "Change sets no longer kept: snapshot"},
        422: {"description": "after or limit out of range"},
    },
)
async def get_changes(
    build_id: BuildId,
    user: Caller,
    auth_manager: AuthManager,
    store: Store,
    after: Annotated[int, Query(ge=0, description="The last sequence the client has")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000, description="Change sets per answer")] = 1000,
) -> dict[str, Any]:
    """Change sets with a sequence above ``after``, in order, each an RFC 6902 patch."""
    found = await blocking(STATUS_STORE, store.changes_since, build_id, after, limit)
    if found is None:
        raise unknown_build(build_id)
    await check_readable(auth_manager, user, found["pipeline_id"], f"build {build_id!r}")
    current, changes = found["sequence"], found["changes"]
    if after > current:
        raise problem(
            status.HTTP_409_CONFLICT,
            f"after={after} is beyond build {build_id!r}'s current sequence {current}: the "
            "client holds change sets this store never made (another store, or a build "
            f"reset); take a snapshot (GET /v1/builds/{build_id}) and go on from its sequence",
        )
    if after < current and (not changes or changes[0]["sequence"] != after + 1):
        raise problem(
            status.HTTP_410_GONE,
            f"the change sets of build {build_id!r} right after sequence {after} are no "
            "longer kept (delivered change sets are cleaned up after [bkci] retention); take "
            f"a snapshot (GET /v1/builds/{build_id}) and go on from its sequence",
        )
    for change in changes:
        change["created_at"] = change["created_at"].isoformat()
    last = changes[-1]["sequence"] if changes else after
    return {
        "build_id": build_id,
        "pipeline_id": found["pipeline_id"],
        "after": after,
        "sequence": current,
        "changes": changes,
        "next_after": last if last < current else None,
    }


@router.get(
    "/v1/builds/{build_id}/history",
    response_model=NodeHistory,
    summary="A node's transition history",
    responses={
        **_COMMON,
        404: {"model": ProblemAnswer, "description": "Unknown build or node"},
        422: {"description": "node too long"},
    },
)
async def get_history(
    build_id: BuildId,
    user: Caller,
    auth_manager: AuthManager,
    store: Store,
    node: Annotated[
        str,
        Query(
            max_length=300,
            description="'' (default) for the build itself, else task_id, or task_id[i] "
            "for a mapped task instance",
        ),
    ] = "",
) -> dict[str, Any]:
    """Every status the node entered, in event order, with who reported it and when."""
    key = await blocking(STATUS_STORE, store.build_key, build_id)
    if key is None:
        raise unknown_build(build_id)
    dag_id = key[0]
    await check_readable(auth_manager, user, dag_id, f"build {build_id!r}")
    if node and not await blocking(STATUS_STORE, store.node_known, build_id, node):
        raise problem(
            status.HTTP_404_NOT_FOUND,
            f"build {build_id!r} has no node {node!r}: name a task by task_id (a mapped "
            "instance as task_id[i], a task in a group as group.task_id), or leave node out "
            "for the build itself",
        )
    transitions = await blocking(STATUS_STORE, store.history, build_id, node)
    return {
        "build_id": build_id,
        "pipeline_id": dag_id,
        "node_id": node,
        "transitions": [transition_answer(t) for t in transitions],
    }


def transition_answer(t: Transition) -> dict[str, Any]:
    """One transition as the history routes answer it."""
    return {
        "from_status": t.from_status,
        "to_status": t.to_status,
        "airflow_state": t.airflow_state,
        "detail": t.detail,
        "clear_number": t.clear_number,
        "try_number": t.try_number,
        "at": t.at.isoformat(),
        "recorded_at": t.recorded_at.isoformat(),
        "source": t.source,
        "decision": t.decision.value,
        "stale": t.stale,
    }
