"""The Airflow plugin: registers our listeners and the FastAPI app in the API server."""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_bkci.dashboard import MOUNT_PREFIX
from airflow_bkci.listeners.server import ServerListener
from airflow_bkci.listeners.task_start import TaskStartMiddleware
from airflow_bkci.listeners.worker import WorkerListener


class _FastApiApps:
    """``fastapi_apps``, built when first read.

    Only the API server reads it (and ``airflow plugins``): every other process
    that loads plugins (each task runner too) would otherwise import FastAPI and
    build routes it never serves. A real FastAPI app, not a wrapper, so that the
    API server enters its lifespan (the dispatcher starts there).
    """

    def __init__(self) -> None:
        self._apps: list[dict[str, Any]] | None = None

    def __get__(self, obj: object, objtype: type | None = None) -> list[dict[str, Any]]:
        if self._apps is None:
            from airflow_bkci.api.app import create_app

            self._apps = [
                {"app": create_app(), "url_prefix": MOUNT_PREFIX, "name": "BK-CI build status"}
            ]
        return self._apps


class BkciPlugin(AirflowPlugin):
    """BK-CI build status for Airflow: collectors, ingest route and queries."""

    name = "bkci"
    listeners = [ServerListener(), WorkerListener()]
    fastapi_apps = _FastApiApps()
    # Sees the execution API's task-run calls: a start is recorded when Airflow records it.
    fastapi_root_middlewares = [
        {"middleware": TaskStartMiddleware, "args": [], "kwargs": {}, "name": "bkci task starts"}
    ]
    # The dashboard in Airflow's navigation; Airflow shows the page in an iframe.
    external_views = [
        {
            "name": "BK-CI",
            "href": f"{MOUNT_PREFIX}/ui/wall",
            "url_route": "bkci",
            "nav_top_level": True,
            "icon": f"{MOUNT_PREFIX}/ui/static/bkci.svg",
        }
    ]
