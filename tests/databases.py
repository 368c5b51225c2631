"""Fresh PostgreSQL databases for tests, one per call, dropped when the session ends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.services import require_postgres


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """Yields a function that creates a fresh database and returns its URL.

    Every database it made is dropped when the session ends.
    """
    admin_url = require_postgres()
    admin = sa.create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    made: list[str] = []

    def create() -> str:
        name = f"bkci_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made.append(name)
        return admin.url.set(database=name).render_as_string(hide_password=False)

    yield create
    with admin.connect() as conn:
        for name in made:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()
