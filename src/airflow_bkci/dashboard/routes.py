"""Adds the dashboard to the plugin app: data routes, assets and pages, in matching order."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from airflow_bkci.api.app import Lazy
from airflow_bkci.dashboard import STATIC_DIR, build, pipeline, session, shell, wall
from airflow_bkci.dashboard.assets import DashboardAssets
from airflow_bkci.dashboard.catalog import AirflowDagCatalog, DagCatalog

__all__ = ["install"]


def install(app: FastAPI, static_dir: Path | None = None) -> None:
    """Add the dashboard's routes; assets come from ``static_dir`` (the package's by default)."""
    folder = static_dir or STATIC_DIR
    app.state.bkci_static_dir = folder
    app.state.bkci_dag_catalog = Lazy[DagCatalog](AirflowDagCatalog)
    for module in (wall, pipeline, build, session):
        app.include_router(module.router)
    # Before the pages: /ui/{page:path} would answer every asset with the shell.
    app.mount("/ui/static", DashboardAssets(folder), name="bkci-dashboard-static")
    app.include_router(shell.router)
