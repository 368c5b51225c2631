"""SQLite: a canceled run a stale scheduler pass ended ``success`` is set back to ``failed``."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from airflow.models.dagrun import DagRun
from sqlalchemy import Engine, create_engine, insert, select, update

from airflow_bkci.cancel.guard import guard_in_background, restore_failed

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'airflow.db'}")
    DagRun.__table__.create(engine)
    rows = [
        {
            "dag_id": "etl",
            "run_id": run,
            "state": state,
            "run_type": "manual",
            "clear_number": 0,
            "run_after": NOW,
            "log_template_id": None,
        }
        for run, state in (("canceled", "failed"), ("other", "success"))
    ]
    with engine.begin() as conn:
        conn.execute(insert(DagRun.__table__), rows)
    yield engine
    engine.dispose()


def states(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(DagRun.run_id, DagRun.state)).all())


def overwrite(engine: Engine, run_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(DagRun).where(DagRun.run_id == run_id).values(state="success"))


def test_only_the_canceled_runs_that_became_success_are_restored(engine: Engine) -> None:
    assert restore_failed(engine, [("etl", "canceled")]) == 0  # still failed: nothing to do
    overwrite(engine, "canceled")
    assert restore_failed(engine, [("etl", "canceled")]) == 1
    assert states(engine) == {"canceled": "failed", "other": "success"}


def test_the_guard_undoes_a_late_overwrite_and_says_so(
    engine,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    with caplog.at_level(logging.WARNING, logger="airflow_bkci"):
        thread = guard_in_background(engine, [("etl", "canceled")], "c-1", seconds=3.0)
        assert thread is not None
        time.sleep(0.3)
        overwrite(engine, "canceled")  # the stale scheduler pass commits now
        deadline = time.monotonic() + 2.5
        while states(engine)["canceled"] != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        thread.join(5)
    assert states(engine) == {"canceled": "failed", "other": "success"}
    assert "cancel c-1: a scheduler pass that began before the cancel ended 1 run(s)" in caplog.text


def test_no_guard_where_the_database_locks_rows() -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert guard_in_background(engine, [("etl", "r")], "c-1") is None
