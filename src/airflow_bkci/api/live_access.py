"""Who a WebSocket client is and which DAGs it may read, the way Airflow decides it.

Airflow's request dependencies (``GetUserDep``, ``requires_access_dag``) take
a ``Request`` and raise TypeError on a WebSocket route, so the live route
asks through this small interface instead: the token goes through the same
``resolve_user_from_token`` the REST API uses, permissions through the auth
manager's batch filter. Unit tests put a fake in its place.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool

__all__ = ["AirflowLiveAccess", "Authenticated", "LiveAccess", "NotAuthenticated"]


class NotAuthenticated(Exception):
    """No token, or one Airflow does not accept; the message says which and what to do."""


@dataclass(frozen=True)
class Authenticated:
    user: Any
    expires_at: float | None
    """When the token expires, in ``time.time()`` seconds (None: it does not say)."""

    @property
    def name(self) -> str:
        getter = getattr(self.user, "get_name", None)
        return str(getter()) if callable(getter) else str(self.user)


class LiveAccess(Protocol):
    async def authenticate(self, token: str | None) -> Authenticated: ...

    async def denied(self, who: Authenticated, dag_ids: Collection[str]) -> list[str]: ...

    async def existing(self, dag_ids: Collection[str]) -> set[str]: ...


class AirflowLiveAccess:
    """The API server's own authentication and auth manager."""

    async def authenticate(self, token: str | None) -> Authenticated:
        from airflow.api_fastapi.core_api.security import resolve_user_from_token
        from fastapi import HTTPException

        if not token:
            raise NotAuthenticated(
                "no token: offer the subprotocols 'bkci.v1' and 'bearer.<jwt>', or send the "
                "Airflow UI's '_token' cookie (POST /auth/token gives a JWT)"
            )
        try:
            user = await resolve_user_from_token(token)
        except HTTPException as exc:
            raise NotAuthenticated(f"{exc.detail}: get a fresh token (POST /auth/token)") from None
        return Authenticated(user, _expiry(token))

    async def denied(self, who: Authenticated, dag_ids: Collection[str]) -> list[str]:
        from airflow_bkci.api.security import airflow_auth_manager, denied_dags

        return await run_in_threadpool(
            denied_dags, airflow_auth_manager(), who.user, set(dag_ids), "GET"
        )

    async def existing(self, dag_ids: Collection[str]) -> set[str]:
        return await run_in_threadpool(_airflow_dags, set(dag_ids))


def _airflow_dags(dag_ids: set[str]) -> set[str]:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    if not dag_ids:
        return set()
    with create_session() as session:
        found = session.scalars(select(DagModel.dag_id).where(DagModel.dag_id.in_(sorted(dag_ids))))
        return set(found)


def _expiry(token: str) -> float | None:
    """The ``exp`` claim of a token Airflow has just verified (so no second verification)."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def seconds_left(expires_at: float | None) -> float | None:
    return None if expires_at is None else expires_at - time.time()
