"""Store fixtures, one store per test over SQLite and PostgreSQL.

Event builders live in builders.py (imported as tests.unit.store.builders):
a module named conftest cannot be imported from tests reliably.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_bkci.store import Store

STORE_TABLES = (
    "bkci_transition, bkci_node, bkci_change, bkci_lane, bkci_endpoint, bkci_dead_letter, "
    "bkci_build, bkci_pipeline, bkci_quarantine, bkci_notice_window, bkci_notice_held"
)


@pytest.fixture(scope="session")
def pg_url(pg_server: Any) -> str:
    """One migrated database for the session; tests empty its tables."""
    url: str = pg_server()
    store = Store(url)
    store.migrate()
    store.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'status.db'}"
    url: str = request.getfixturevalue("pg_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {STORE_TABLES} RESTART IDENTITY CASCADE")
    engine.dispose()
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    store.migrate()
    yield store
    store.dispose()
