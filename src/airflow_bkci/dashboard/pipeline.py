"""``GET /v1/dashboard/pipelines/{dag_id}`` and its ``/series``: a pipeline's header and charts."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime

from airflow_bkci import conf
from airflow_bkci.api.errors import STATUS_STORE, blocking
from airflow_bkci.api.query_schemas import ForbiddenAnswer, ProblemAnswer
from airflow_bkci.api.query_support import check_readable
from airflow_bkci.api.security import Caller
from airflow_bkci.dashboard.access import (
    AuthManager,
    Catalog,
    Store,
    editable_among,
    known_pipeline,
)
from airflow_bkci.dashboard.params import check_buckets
from airflow_bkci.dashboard.schemas import Pipeline, Series
from airflow_bkci.model.event import utcnow
from airflow_bkci.store.dashboard import BUCKETS
from airflow_bkci.ui_links import runs_url

router = APIRouter(tags=["dashboard"])

DagId = Annotated[str, Path(min_length=1, max_length=250, description="The DAG id")]

_COMMON: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid Airflow token"},
    403: {"model": ForbiddenAnswer, "description": "The caller may not read the DAG"},
    404: {"model": ProblemAnswer, "description": "Neither Airflow nor the store knows the DAG"},
    503: {"model": ProblemAnswer, "description": "Database unavailable; see Retry-After"},
}


def pipeline_links(dag_id: str) -> dict[str, str]:
    """Airflow UI paths of a DAG, relative to Airflow's root."""
    return {"grid": f"/dags/{quote(dag_id, safe='')}", "runs": runs_url(None, dag_id)}


@router.get(
    "/v1/dashboard/pipelines/{dag_id}",
    response_model=Pipeline,
    summary="A pipeline's owners, tags, whether the caller may cancel, and Airflow links",
    responses=_COMMON,
)
async def pipeline(
    dag_id: DagId, user: Caller, auth_manager: AuthManager, store: Store, catalog: Catalog
) -> dict[str, Any]:
    """The history view's header: who owns the DAG and whether its builds may be canceled."""
    await check_readable(auth_manager, user, dag_id, "its pipeline")
    facts = await known_pipeline(store, catalog, dag_id)
    return {
        "dag_id": dag_id,
        "owners": list(facts.owners),
        "tags": list(facts.tags),
        "editable": dag_id in await editable_among(auth_manager, user, [dag_id]),
        "links": pipeline_links(dag_id),
    }


@router.get(
    "/v1/dashboard/pipelines/{dag_id}/series",
    response_model=Series,
    summary="A pipeline's outcomes and durations per hour or day, for charts",
    responses={**_COMMON, 422: {"description": "A bad window, or more than 1000 buckets"}},
)
async def series(
    dag_id: DagId,
    user: Caller,
    auth_manager: AuthManager,
    store: Store,
    catalog: Catalog,
    since: Annotated[
        AwareDatetime | None,
        Query(
            description="Builds due (run_after) at or after; default until - [bkci] "
            "dashboard_window"
        ),
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="Builds due (run_after) before; default now")
    ] = None,
    bucket: Annotated[
        Literal["hour", "day"], Query(description="Bucket width, aligned on UTC")
    ] = "day",
) -> dict[str, Any]:
    """Every bucket from the one holding ``since`` up to ``until``; empty ones have zeros."""
    end = until or utcnow()
    start = since or end - timedelta(seconds=conf.dashboard_window())
    width = BUCKETS[bucket]
    check_buckets(width, start, end)
    await check_readable(auth_manager, user, dag_id, "its builds")
    await known_pipeline(store, catalog, dag_id)
    points = await blocking(STATUS_STORE, store.pipeline_series, dag_id, start, end, width)
    return {"bucket": bucket, "points": points}
