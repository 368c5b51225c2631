"""``GET /v1/pipelines``: the pipelines (DAGs) the caller may read, each with its newest build."""

from __future__ import annotations

import bisect
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from airflow_bkci.api.query_schemas import PipelinePage, ProblemAnswer
from airflow_bkci.api.query_support import (
    STATUS_STORE,
    QueryStore,
    blocking,
    decode_cursor,
    encode_cursor,
    problem,
    query_store,
    readable_among,
)
from airflow_bkci.api.security import AuthManager, Caller

router = APIRouter(tags=["pipelines"])

_SCOPE = "pipelines"


@router.get(
    "/v1/pipelines",
    response_model=PipelinePage,
    summary="List pipelines with their latest build",
    responses={
        400: {"model": ProblemAnswer, "description": "A cursor this list did not give out"},
        401: {"description": "No valid Airflow token"},
        422: {"description": "limit out of range"},
        503: {"model": ProblemAnswer, "description": "Database unavailable; see Retry-After"},
    },
)
async def list_pipelines(
    user: Caller,
    auth_manager: AuthManager,
    store: Annotated[QueryStore, Depends(query_store)],
    limit: Annotated[int, Query(ge=1, le=500, description="Pipelines per page")] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """Pipelines the status store has builds of and the caller may read, by DAG id.

    DAGs the caller may not read are left out, as if they did not exist.
    """
    after = None
    if cursor is not None:
        after = decode_cursor(cursor, _SCOPE)
        if not isinstance(after, str):
            raise problem(status.HTTP_400_BAD_REQUEST, "this cursor is not a pipelines cursor")
    known = await blocking(STATUS_STORE, store.pipeline_ids)
    readable = sorted(await readable_among(auth_manager, user, known))
    start = bisect.bisect_right(readable, after) if after is not None else 0
    page = readable[start : start + limit]
    rows = await blocking(STATUS_STORE, store.pipelines, page)
    more = start + limit < len(readable)
    return {
        "pipelines": rows,
        "next_cursor": encode_cursor(_SCOPE, page[-1]) if more and page else None,
    }
