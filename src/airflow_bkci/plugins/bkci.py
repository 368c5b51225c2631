"""The Airflow plugin: registers our listeners and the FastAPI app in the API server."""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_bkci.listeners.server import ServerListener
from airflow_bkci.listeners.worker import WorkerListener


class LazyApp:
    """An ASGI app that builds our FastAPI app on its first request.

    Every process that loads plugins (each task runner too) would otherwise
    import FastAPI and build routes it never serves.
    """

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_bkci.api.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


def _fastapi_apps() -> list[dict[str, Any]]:
    return [{"app": LazyApp(), "url_prefix": "/bkci", "name": "BK-CI build status"}]


class BkciPlugin(AirflowPlugin):
    """BK-CI build status for Airflow: collectors, ingest route and queries."""

    name = "bkci"
    listeners = [ServerListener(), WorkerListener()]
    fastapi_apps = _fastapi_apps()
