"""``GET /v1/dashboard/me``: who the Airflow session belongs to; 401 once it expired."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from airflow_bkci.api.security import Caller
from airflow_bkci.dashboard.schemas import Me

router = APIRouter(tags=["dashboard"])


@router.get(
    "/v1/dashboard/me",
    response_model=Me,
    summary="The signed-in user (the pages' session check)",
    responses={401: {"description": "No valid Airflow token: sign in again"}},
)
async def me(user: Caller) -> dict[str, Any]:
    """The name Airflow knows the caller by."""
    return {"user": user.get_name()}
