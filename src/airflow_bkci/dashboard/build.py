"""``GET /v1/dashboard/builds/{build_id}`` and its ``/transitions``: the build view's data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from airflow_bkci.api.errors import STATUS_STORE, blocking
from airflow_bkci.api.query_schemas import ForbiddenAnswer, ProblemAnswer
from airflow_bkci.api.query_support import check_readable
from airflow_bkci.api.routes.builds import transition_answer, unknown_build
from airflow_bkci.api.security import Caller
from airflow_bkci.dashboard.access import AuthManager, Store, editable_among
from airflow_bkci.dashboard.pipeline import pipeline_links
from airflow_bkci.dashboard.schemas import BuildView, Transitions
from airflow_bkci.notify.root_cause import iter_tasks
from airflow_bkci.store.results import Transition
from airflow_bkci.ui_links import run_url, task_url

router = APIRouter(tags=["dashboard"])

BuildId = Annotated[str, Path(min_length=1, max_length=64, description="The build id (b-…)")]

_COMMON: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid Airflow token"},
    403: {"model": ForbiddenAnswer, "description": "The caller may not read the DAG"},
    404: {"model": ProblemAnswer, "description": "Unknown build"},
    503: {"model": ProblemAnswer, "description": "Database unavailable; see Retry-After"},
}


@router.get(
    "/v1/dashboard/builds/{build_id}",
    response_model=BuildView,
    summary="A build's document and sequence, whether the caller may cancel it, Airflow links",
    responses=_COMMON,
)
async def build(
    build_id: BuildId, user: Caller, auth_manager: AuthManager, store: Store
) -> dict[str, Any]:
    """The document and sequence read together: apply live change sets after ``sequence``."""
    snapshot = await blocking(STATUS_STORE, store.snapshot, build_id)
    if snapshot is None:
        raise unknown_build(build_id)
    dag_id = snapshot["pipeline_id"]
    await check_readable(auth_manager, user, dag_id, f"build {build_id!r}")
    document = snapshot["document"]
    return {
        "document": document,
        "sequence": snapshot["sequence"],
        "editable": dag_id in await editable_among(auth_manager, user, [dag_id]),
        "links": build_links(dag_id, str(document.get("run_id", "")), document),
    }


def build_links(dag_id: str, run_id: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """Airflow UI paths (relative to Airflow's root) of the run and each task's current try."""
    tasks: dict[str, dict[str, str]] = {}
    for _, task in iter_tasks(document):
        node_id = str(task["id"])
        task_id = str(task.get("task_id") or node_id.split("[", 1)[0])
        map_index = int(task.get("map_index", -1))
        tasks[node_id] = {
            "task": task_url(None, dag_id, run_id, task_id, map_index),
            "log": task_url(None, dag_id, run_id, task_id, map_index, task.get("try_number")),
        }
    return {
        "grid": pipeline_links(dag_id)["grid"],
        "run": run_url(None, dag_id, run_id),
        "tasks": tasks,
    }


@router.get(
    "/v1/dashboard/builds/{build_id}/transitions",
    response_model=Transitions,
    summary="Every node's status transitions of a build, newest first",
    responses={**_COMMON, 422: {"description": "limit out of range"}},
)
async def transitions(
    build_id: BuildId,
    user: Caller,
    auth_manager: AuthManager,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=5000, description="Most transitions")] = 500,
) -> dict[str, Any]:
    """Fields as ``GET /v1/builds/{id}/history`` gives them, plus ``node``, ``from`` and ``to``."""
    key = await blocking(STATUS_STORE, store.build_key, build_id)
    if key is None:
        raise unknown_build(build_id)
    await check_readable(auth_manager, user, key[0], f"build {build_id!r}")
    found = await blocking(STATUS_STORE, store.build_transitions, build_id, limit)
    return {"transitions": [_row(t) for t in found]}


def _row(t: Transition) -> dict[str, Any]:
    return {"node": t.node_id, "from": t.from_status, "to": t.to_status, **transition_answer(t)}
