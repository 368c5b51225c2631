"""Airflow's authentication and DAG permissions for the routes of our plugin app.

Airflow does not protect a plugin's FastAPI app: every route that acts for a
user depends on :data:`Caller` and checks DAG access with :func:`denied_dags`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated

from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import bearer_scheme, get_user, oauth2_scheme
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import ResourceMethod

__all__ = [
    "AuthManager",
    "Caller",
    "airflow_auth_manager",
    "authenticated_user",
    "denied_dags",
    "readable_dags",
]


async def authenticated_user(
    request: Request,
    oauth_token: Annotated[str | None, Depends(oauth2_scheme)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> BaseUser:
    """The caller, as Airflow's ``GetUserDep`` authenticates it; 401 when there is no usable token.

    Airflow answers 403 to a token it cannot verify; here that is 401 too, so a
    403 always means a missing permission and carries the DAGs it is about.
    """
    try:
        return await get_user(request, oauth_token, bearer)
    except HTTPException as exc:
        if exc.status_code != status.HTTP_403_FORBIDDEN:
            raise
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"{exc.detail}: send a valid Airflow token as 'Authorization: Bearer <jwt>' "
            "(POST /auth/token gives one)",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None


Caller = Annotated[BaseUser, Depends(authenticated_user)]


def airflow_auth_manager() -> BaseAuthManager:
    """The API server's auth manager (a plugin app has none on its own ``app.state``)."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


AuthManager = Annotated[BaseAuthManager, Depends(airflow_auth_manager)]


def denied_dags(
    auth_manager: BaseAuthManager,
    user: BaseUser,
    dag_ids: Iterable[str],
    method: ResourceMethod,
) -> list[str]:
    """The DAGs among ``dag_ids`` the user may not access with ``method``, sorted.

    One ``filter_authorized_dag_ids`` call per team (an auth manager may answer
    it in one query); blocking, so call it from a worker thread.
    """
    wanted = set(dag_ids)
    if not wanted:
        return []
    allowed: set[str] = set()
    for team, ids in _by_team(wanted).items():
        allowed |= auth_manager.filter_authorized_dag_ids(
            dag_ids=ids, user=user, method=method, team_name=team
        )
    return sorted(wanted - allowed)


def readable_dags(
    auth_manager: BaseAuthManager, user: BaseUser, dag_ids: Iterable[str] | None = None
) -> set[str]:
    """The DAGs the user may read: among ``dag_ids``, or of all Airflow knows when None.

    A pipeline the store still has but Airflow no longer knows is readable by
    nobody: permissions live on Airflow's DAGs. Blocking; call it from a
    worker thread.
    """
    if dag_ids is None:
        return set(auth_manager.get_authorized_dag_ids(user=user, method="GET"))
    wanted = set(dag_ids)
    return wanted - set(denied_dags(auth_manager, user, wanted, "GET"))


def _by_team(dag_ids: set[str]) -> dict[str | None, set[str]]:
    from airflow.configuration import conf

    if not conf.getboolean("core", "multi_team", fallback=False):
        return {None: dag_ids}
    from airflow.models.dag import DagModel

    team_of = DagModel.get_dag_id_to_team_name_mapping(sorted(dag_ids))
    groups: dict[str | None, set[str]] = defaultdict(set)
    for dag_id in dag_ids:
        groups[team_of.get(dag_id)].add(dag_id)
    return groups
