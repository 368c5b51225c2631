"""``GET /v1/dashboard/wall``: a tile per pipeline, with its newest build, numbers and trend."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from airflow_bkci import conf
from airflow_bkci.api.errors import AIRFLOW_DB, STATUS_STORE, blocking
from airflow_bkci.api.query_schemas import ProblemAnswer
from airflow_bkci.api.query_support import readable_among
from airflow_bkci.api.security import Caller
from airflow_bkci.dashboard.access import (
    AuthManager,
    Catalog,
    DashboardStore,
    Store,
    describe,
    editable_among,
)
from airflow_bkci.dashboard.catalog import DagCatalog, DagFacts, split_owners
from airflow_bkci.dashboard.params import named_pipelines, window_seconds
from airflow_bkci.dashboard.schemas import Wall
from airflow_bkci.dashboard.selection import Selection, choose
from airflow_bkci.model.event import utcnow
from airflow_bkci.store.dashboard import Tile

router = APIRouter(tags=["dashboard"])


@router.get(
    "/v1/dashboard/wall",
    response_model=Wall,
    summary="The wall: a tile per pipeline with its newest build, numbers and trend",
    responses={
        401: {"description": "No valid Airflow token"},
        422: {"description": "A bad window, trend, limit, tag or pipelines list"},
        503: {"model": ProblemAnswer, "description": "Database unavailable; see Retry-After"},
    },
)
async def wall(
    user: Caller,
    auth_manager: AuthManager,
    store: Store,
    catalog: Catalog,
    pipelines: Annotated[
        list[str] | None,
        Query(description="DAG ids, in the wall's order (repeat the key or separate by commas)"),
    ] = None,
    tag: Annotated[
        str | None, Query(min_length=1, max_length=100, description="The DAGs with this tag")
    ] = None,
    window: Annotated[
        str | None,
        Query(
            max_length=20,
            description="Seconds of builds the numbers cover (or 7d, 12h); default "
            "[bkci] dashboard_window",
        ),
    ] = None,
    trend: Annotated[int, Query(ge=1, le=100, description="Finished builds in a trend")] = 20,
    limit: Annotated[
        int, Query(ge=1, le=200, description="Most tiles of a tag's or all pipelines")
    ] = 60,
) -> dict[str, Any]:
    """Pipelines from ``pipelines``, else ``tag``, else ``[bkci] dashboard_pipelines``, else
    ``[bkci] dashboard_tag``, else every pipeline the caller may read.

    A named pipeline that is unknown or that the caller may not read is listed in
    ``missing`` with reason ``unknown`` either way; a tag's DAGs the caller may not
    read are left out.
    """
    named = named_pipelines(pipelines)
    seconds = window_seconds(window) or conf.dashboard_window()
    selection = choose(named, tag, conf.dashboard_pipelines, conf.dashboard_tag)
    until = utcnow()
    since = until - timedelta(seconds=seconds)
    candidates = await _candidates(selection, store, catalog)
    readable = await readable_among(auth_manager, user, candidates)
    shown = [d for d in candidates if d in readable]
    if not selection.source.named:
        shown = shown[:limit]
    tiles = await blocking(STATUS_STORE, store.wall_tiles, shown, since, until, trend)
    failing = [d for d, t in tiles.items() if t.last_failure and t.last_failure.task_ids]
    facts = await describe(catalog, shown, failing)
    shown = [d for d in shown if d in tiles or d in facts]
    editable = await editable_among(auth_manager, user, shown)
    return {
        "source": selection.source.value,
        "window": {"since": since.isoformat(), "until": until.isoformat()},
        "tiles": [
            _tile(d, tiles.get(d) or Tile(d), facts.get(d) or DagFacts(d), d in editable)
            for d in shown
        ],
        "missing": [
            {"dag_id": d, "reason": "unknown"}
            for d in (selection.dag_ids if selection.source.named else ())
            if d not in shown
        ],
    }


async def _candidates(
    selection: Selection, store: DashboardStore, catalog: DagCatalog
) -> list[str]:
    """The pipelines the selection names, before permissions: named ones in order, else sorted."""
    if selection.source.named:
        return list(selection.dag_ids)
    if selection.tag is not None:
        return sorted(await blocking(AIRFLOW_DB, catalog.tagged, selection.tag))
    return sorted(await blocking(STATUS_STORE, store.pipeline_ids))


def _tile(dag_id: str, tile: Tile, facts: DagFacts, editable: bool) -> dict[str, Any]:
    failure = tile.last_failure
    last_failure = None
    if failure is not None:
        owners = [
            name
            for task_id in failure.task_ids
            for name in split_owners(facts.task_owners.get(task_id))
        ]
        last_failure = {
            "build_id": failure.build_id,
            "build_num": failure.build_num,
            "ended_at": failure.ended_at,
            "owners": list(dict.fromkeys(owners)) or list(facts.owners),
            "triggering_user": failure.triggering_user,
            "task": failure.node,
        }
    return {
        "dag_id": dag_id,
        "owners": list(facts.owners),
        "tags": list(facts.tags),
        "editable": editable,
        "latest": tile.latest,
        "latest_document": tile.latest_document,
        "stats": tile.stats or _NO_BUILDS,
        "trend": tile.trend,
        "last_failure": last_failure,
    }


_NO_BUILDS: dict[str, Any] = {
    "builds": 0,
    "finished": 0,
    "succeeded": 0,
    "failed": 0,
    "canceled": 0,
    "success_rate": None,
    "duration_p50_ms": None,
    "duration_p95_ms": None,
}
