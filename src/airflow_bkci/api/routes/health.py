"""``GET /health``: liveness of the BK-CI app (no authentication, no secrets)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from airflow_bkci.api.schemas import HealthResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
def health(request: Request) -> HealthResponse:
    provider = request.app.state.bkci_store
    return HealthResponse(store="ready" if provider.ready else "not_opened")
