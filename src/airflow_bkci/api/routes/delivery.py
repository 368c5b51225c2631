"""``GET /v1/delivery``: delivery health per endpoint (webhook, message queue, …).

Endpoints are Airflow Connections and their errors name hosts and URLs, so
this answers only callers who may read connections (the auth manager's
``is_authorized_connection``, GET; Airflow's Op role and up with the simple
auth manager). The counts cover every DAG's builds: they say how delivery
goes, not what any build is.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, status

from airflow_bkci.api.query_schemas import DeliveryHealth, ForbiddenAnswer, ProblemAnswer
from airflow_bkci.api.query_support import (
    AIRFLOW_DB,
    STATUS_STORE,
    QueryStore,
    blocking,
    query_store,
)
from airflow_bkci.api.security import AuthManager, Caller

router = APIRouter(tags=["delivery"])


class HealthReader(Protocol):
    def health(self, *, include_idle: bool = False) -> list[dict[str, Any]]: ...


def _outbox(store: Any) -> HealthReader:
    from airflow_bkci.store.outbox import Outbox

    return Outbox(store, owner="bkci query API")


@router.get(
    "/v1/delivery",
    response_model=DeliveryHealth,
    summary="Delivery health per endpoint",
    responses={
        401: {"description": "No valid Airflow token"},
        403: {"model": ForbiddenAnswer, "description": "The caller may not read connections"},
        503: {"model": ProblemAnswer, "description": "Database unavailable; see Retry-After"},
    },
)
async def delivery_health(
    user: Caller,
    auth_manager: AuthManager,
    store: Annotated[QueryStore, Depends(query_store)],
) -> dict[str, Any]:
    """Per endpoint: pending builds, oldest pending age, dead letters, retries, circuit.

    Every endpoint with a lane or a recorded circuit is listed, healthy or not.
    The circuit is as the dispatcher that last changed it recorded it (they run
    in the scheduler, and in the API server when ``[bkci] dispatch_in`` says so).
    """
    allowed = await blocking(
        AIRFLOW_DB,
        lambda: auth_manager.is_authorized_connection(method="GET", user=user),
    )
    if not allowed:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail={
                "message": f"user {user.get_name()!r} may not read Airflow connections, and "
                "delivery endpoints are connections; ask for read access to connections "
                "(the Op role or above with the simple auth manager)",
                "dags": [],
            },
        )
    outbox = _outbox(store)
    return {"endpoints": await blocking(STATUS_STORE, lambda: outbox.health(include_idle=True))}
