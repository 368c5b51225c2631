"""Dashboard fixtures: a status store on SQLite and PostgreSQL, fake Airflow auth and DAG catalog.

Helpers the tests import live in helpers.py: a conftest cannot be imported reliably.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

with warnings.catch_warnings():
    # Starlette 1.x warns when its TestClient falls back to httpx (it wants httpx2); first,
    # before anything imports Airflow's API server (svcs imports the TestClient too).
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from airflow_bkci.api.app import create_app
from airflow_bkci.dashboard.access import dag_catalog
from airflow_bkci.store import Store
from tests.unit.dashboard.helpers import FakeAuthManager, FakeCatalog

_TABLES = "bkci_transition, bkci_node, bkci_change, bkci_lane, bkci_build, bkci_pipeline"


@pytest.fixture(scope="session")
def dashboard_pg_url(pg_server: Any) -> str:
    url: str = pg_server()
    store = Store(url)
    store.migrate()
    store.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'status.db'}"
    else:
        url = request.getfixturevalue("dashboard_pg_url")
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE")
        engine.dispose()
    store = Store(url)
    store.migrate()
    yield store
    store.dispose()


@pytest.fixture
def auth(monkeypatch: pytest.MonkeyPatch) -> FakeAuthManager:
    from airflow.api_fastapi.app import _AuthManagerState

    manager = FakeAuthManager()
    monkeypatch.setattr(_AuthManagerState, "instance", manager)
    return manager


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog()


@pytest.fixture
def static_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A static folder of the test's own: the frontend's files are not the backend's to test."""
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "index.html").write_text(
        "<!doctype html><html><head><title>BK-CI</title><!--BKCI_CONFIG--></head>"
        '<body><div id="app"></div><script src="static/app.js"></script></body></html>',
        encoding="utf-8",
    )
    (folder / "app.js").write_text("console.log('bkci');\n", encoding="utf-8")
    (folder / "app.0123abcd.js").write_text("// versioned\n", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("outside the static folder", encoding="utf-8")
    monkeypatch.setattr("airflow_bkci.dashboard.routes.STATIC_DIR", folder)
    return folder


@pytest.fixture
def app(auth: FakeAuthManager, catalog: FakeCatalog, store: Store, static_dir: Path) -> Any:
    app = create_app(store_factory=lambda: store, dispatcher_factory=lambda: None)
    app.dependency_overrides[dag_catalog] = lambda: catalog
    return app


@pytest.fixture
def client(app: Any) -> TestClient:
    return TestClient(app)


@pytest.fixture(autouse=True)
def _no_dashboard_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wall's [bkci] options unset unless a test sets them."""
    for option in ("DASHBOARD_PIPELINES", "DASHBOARD_TAG", "DASHBOARD_WINDOW"):
        monkeypatch.delenv(f"AIRFLOW__BKCI__{option}", raising=False)
