"""Session-wide Airflow stacks (SQLite and PostgreSQL) and one run of every example DAG on each."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_bkci.devstack import AirflowStack
from airflow_bkci.example_dags import EXPECTED_STATES, FOLDER

PG_URL = os.environ.get("BKCI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RUN_TIMEOUT = 240.0

ExampleRuns = dict[str, tuple[str, str]]


def _stack(home: Path, backend: str) -> Iterator[AirflowStack]:
    with AirflowStack(home=home, dags_folder=FOLDER, backend=backend) as stack:
        yield stack


def _require_postgres(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        psycopg.connect(libpq, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        message = (
            f"PostgreSQL at {make_url(url)!r} is unreachable ({exc}). Start one, or point "
            "BKCI_TEST_PG_URL at a server where this user may CREATE DATABASE, "
            "or deselect these tests with -m 'not postgres'."
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def run_examples(stack: AirflowStack) -> ExampleRuns:
    """Trigger every example DAG at once and wait for all: {dag_id: (run_id, final state)}."""
    runs = {dag_id: stack.trigger(dag_id) for dag_id in EXPECTED_STATES}
    return {d: (r, stack.wait_run(d, r, timeout=RUN_TIMEOUT)) for d, r in runs.items()}


@pytest.fixture(scope="session")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    yield from _stack(tmp_path_factory.mktemp("airflow-sqlite"), "sqlite")


@pytest.fixture(scope="session")
def pg_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    _require_postgres(PG_URL)
    yield from _stack(tmp_path_factory.mktemp("airflow-pg"), PG_URL)


@pytest.fixture(scope="session")
def example_runs_sqlite(sqlite_stack: AirflowStack) -> ExampleRuns:
    return run_examples(sqlite_stack)


@pytest.fixture(scope="session")
def example_runs_pg(pg_stack: AirflowStack) -> ExampleRuns:
    return run_examples(pg_stack)


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.integration),
        pytest.param("pg", marks=[pytest.mark.integration, pytest.mark.postgres]),
    ]
)
def examples(request: pytest.FixtureRequest) -> tuple[AirflowStack, ExampleRuns]:
    """(stack, example runs) on each backend; PostgreSQL cases carry the ``postgres`` mark."""
    stack = request.getfixturevalue(f"{request.param}_stack")
    return stack, request.getfixturevalue(f"example_runs_{request.param}")
