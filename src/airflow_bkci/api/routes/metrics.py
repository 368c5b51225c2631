"""``GET /v1/pipelines/{dag_id}/metrics``: a pipeline's outcomes and timings over a window."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, status
from pydantic import AwareDatetime

from airflow_bkci.api.query_schemas import ForbiddenAnswer, PipelineMetrics, ProblemAnswer
from airflow_bkci.api.query_support import (
    STATUS_STORE,
    QueryStore,
    blocking,
    check_readable,
    problem,
    query_store,
)
from airflow_bkci.api.routes.builds import check_window, unknown_pipeline
from airflow_bkci.api.security import AuthManager, Caller
from airflow_bkci.model.event import utcnow

router = APIRouter(tags=["metrics"])

DEFAULT_WINDOW = timedelta(days=7)
MAX_WINDOW = timedelta(days=366)


@router.get(
    "/v1/pipelines/{dag_id}/metrics",
    response_model=PipelineMetrics,
    summary="Pipeline metrics over a time window",
    responses={
        401: {"description": "No valid Airflow token"},
        403: {"model": ForbiddenAnswer, "description": "The caller may not read the DAG"},
        404: {"model": ProblemAnswer, "description": "Unknown pipeline"},
        422: {"description": "A bad time window or top"},
        503: {"model": ProblemAnswer, "description": "Database unavailable; see Retry-After"},
    },
)
async def pipeline_metrics(
    dag_id: Annotated[str, Path(min_length=1, max_length=250, description="The DAG id")],
    user: Caller,
    auth_manager: AuthManager,
    store: Annotated[QueryStore, Depends(query_store)],
    since: Annotated[
        AwareDatetime | None,
        Query(description="Builds due (run_after) at or after; default until - 7 days"),
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="Builds due (run_after) before; default now")
    ] = None,
    top: Annotated[int, Query(ge=1, le=100, description="Failing tasks to list")] = 10,
) -> dict[str, Any]:
    """Success rate, final statuses, duration and queue time p50/p95, most failing tasks.

    Over the builds due (run_after) in [since, until); a window is at most 366 days.
    """
    end: datetime = until or utcnow()
    start: datetime = since or end - DEFAULT_WINDOW
    check_window(start, end)
    if end - start > MAX_WINDOW:
        raise problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the window {start.isoformat()} to {end.isoformat()} is longer than "
            f"{MAX_WINDOW.days} days; ask for several shorter windows",
        )
    await check_readable(auth_manager, user, dag_id, "its metrics")
    if dag_id not in await blocking(STATUS_STORE, store.pipeline_ids):
        raise unknown_pipeline(dag_id)
    return await blocking(STATUS_STORE, store.pipeline_metrics, dag_id, start, end, top)
