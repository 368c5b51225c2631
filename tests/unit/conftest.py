"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_bkci.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A migrated SQLite status store of the test's own (a folder may define another)."""
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    store.migrate()
    yield store
    store.dispose()
