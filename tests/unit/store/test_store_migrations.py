"""Migrations: they build exactly the models' schema, from several processes at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from airflow_bkci.model import BuildStatus
from airflow_bkci.store import Store
from airflow_bkci.store.engine import normalize_url
from airflow_bkci.store.tables import VERSION_TABLE, metadata
from tests.unit.store.builders import event


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        yield request.getfixturevalue("pg_server")()


def test_migrations_build_the_models_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        assert compare_metadata(context, metadata) == []
        assert context.get_current_revision() == "0006"


def test_many_processes_may_migrate_at_once(fresh_url: str) -> None:
    stores = [Store(fresh_url) for _ in range(4)]
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def migrate(store: Store) -> None:
        try:
            start.wait()
            store.migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    result = stores[0].apply([event(BuildStatus.QUEUE)])
    assert result.rejected == [] and len(result.build_ids) == 1
    tables = set(inspect(stores[0].engine).get_table_names())
    assert {"bkci_build", "bkci_node", "bkci_transition", VERSION_TABLE} <= tables
    for store in stores:
        store.dispose()


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    assert normalize_url("postgresql://u@db/bkci").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@db/x").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:////tmp/x.db").drivername == "sqlite"


def test_a_batch_of_1000_events_over_20_builds_is_one_apply(store: Store) -> None:
    events: list[Any] = [
        event(status, f"t{t}", run=f"r{r}", at=n)
        for n, status in enumerate((BuildStatus.QUEUE,))
        for r in range(20)
        for t in range(50)
    ]
    result = store.apply(events)

    assert len(result.build_ids) == 20 and result.rejected == []
    assert all(len(store.build_tree(build)["stages"]) >= 1 for build in result.build_ids)
