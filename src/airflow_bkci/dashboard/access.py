"""What every dashboard data route shares: the store, Airflow's DAG catalog, who may do what."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Protocol, cast

from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from fastapi import Depends, Request

from airflow_bkci.api.errors import AIRFLOW_DB, STATUS_STORE, blocking, opened
from airflow_bkci.api.routes.builds import unknown_pipeline
from airflow_bkci.api.security import airflow_auth_manager, denied_dags
from airflow_bkci.dashboard.catalog import DagCatalog, DagFacts
from airflow_bkci.store.dashboard import Bucket, Tile
from airflow_bkci.store.results import Transition

__all__ = [
    "AuthManager",
    "Catalog",
    "DashboardStore",
    "Store",
    "dag_catalog",
    "dashboard_store",
    "describe",
    "editable_among",
    "known_pipeline",
]


class DashboardStore(Protocol):
    """What the dashboard routes need from :class:`airflow_bkci.store.Store`."""

    def pipeline_ids(self) -> list[str]: ...

    def snapshot(self, build_id: str) -> dict[str, Any] | None: ...

    def build_key(self, build_id: str) -> tuple[str, Any] | None: ...

    def wall_tiles(
        self, dag_ids: Sequence[str], since: datetime, until: datetime, trend: int
    ) -> dict[str, Tile]: ...

    def pipeline_series(
        self, dag_id: str, since: datetime, until: datetime, bucket: Bucket
    ) -> list[dict[str, Any]]: ...

    def build_transitions(self, build_id: str, limit: int) -> list[Transition]: ...


async def dashboard_store(request: Request) -> DashboardStore:
    """The app's status store, opened (and migrated) on first use; 503 while it cannot be."""
    return cast(DashboardStore, await opened(request.app.state.bkci_store, STATUS_STORE))


def dag_catalog(request: Request) -> DagCatalog:
    """Airflow's DAG metadata, as the app was given it (tests override this dependency)."""
    return cast(DagCatalog, request.app.state.bkci_dag_catalog.get())


Store = Annotated[DashboardStore, Depends(dashboard_store)]
Catalog = Annotated[DagCatalog, Depends(dag_catalog)]
AuthManager = Annotated[BaseAuthManager[Any], Depends(airflow_auth_manager)]
"""Airflow's auth manager (:data:`airflow_bkci.api.security.AuthManager`, typed fully)."""


async def editable_among(
    auth_manager: BaseAuthManager[Any], user: BaseUser, dag_ids: Sequence[str]
) -> set[str]:
    """The DAGs the user may change (PUT, as a batch cancel asks), among ``dag_ids``."""
    if not dag_ids:
        return set()
    denied = await blocking(AIRFLOW_DB, denied_dags, auth_manager, user, dag_ids, "PUT")
    return set(dag_ids) - set(denied)


async def describe(
    catalog: DagCatalog, dag_ids: Sequence[str], with_tasks: Sequence[str] = ()
) -> dict[str, DagFacts]:
    """Owners and tags of the DAGs Airflow knows among ``dag_ids``, read in one go."""
    if not dag_ids:
        return {}
    return await blocking(AIRFLOW_DB, catalog.describe, list(dag_ids), list(with_tasks))


async def known_pipeline(store: DashboardStore, catalog: DagCatalog, dag_id: str) -> DagFacts:
    """Airflow's facts of a pipeline the store or Airflow knows; 404 when neither does."""
    facts = (await describe(catalog, [dag_id])).get(dag_id)
    if facts is not None:
        return facts
    if dag_id in await blocking(STATUS_STORE, store.pipeline_ids):
        return DagFacts(dag_id)  # Airflow forgot the DAG; its builds are still here
    raise unknown_pipeline(dag_id)
