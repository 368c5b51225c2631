"""A run's conf: read once at the edge, kept in the build's column, never in the document."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_bkci.listeners.observer import Observer, observe_all
from airflow_bkci.listeners.rows import MAX_CONF_BYTES, RunRow, TaskRow, kept_conf
from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store
from airflow_bkci.store.queries import BuildFilter
from airflow_bkci.store.tables import BuildRow, ChangeRow

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
MAIN = {"branch": "main", "retries": 3, "dry_run": True, "env": {"region": "eu"}}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(state: str = "running", conf: dict[str, Any] | None = None, **kw: Any) -> RunRow:
    return RunRow(
        "etl",
        kw.pop("run_id", "manual__1"),
        state,
        0,
        "manual",
        "rest_api",
        "alice",
        None,
        at(0),
        at(0),
        at(1),
        at(9) if state in ("success", "failed") else None,
        conf=conf,
        **kw,
    )


def task(state: str | None, run_id: str = "manual__1") -> TaskRow:
    ran = state not in (None, "scheduled", "queued")
    return TaskRow(
        "etl",
        run_id,
        "extract",
        -1,
        state,
        1 if state else 0,
        0,
        at(1) if state else None,
        at(1.1) if state else None,
        at(1.2) if ran else None,
        at(5) if state == "success" else None,
        "worker-1" if ran else None,
        "default",
        "default_pool",
        "PythonOperator",
    )


def big_conf(size: int) -> dict[str, str]:
    """A conf whose compact JSON is exactly ``size`` bytes."""
    return {"blob": "x" * (size - len('{"blob":""}'))}


def stored_conf(store: Store, run_id: str = "manual__1") -> Any:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(BuildRow.conf).where(BuildRow.build_id == build_id_for("etl", run_id))
        ).scalar_one()


def collect(store: Store, *snapshots: tuple[list[RunRow], list[TaskRow]]) -> Observer:
    """What the reconciler does: one observe_all and one apply per pass."""
    observer = Observer("db@test")
    for runs, tasks in snapshots:
        events = observe_all(observer, runs, tasks, lambda r: {})
        assert store.apply(events).rejected == []
    return observer


# ------------------------------------------------------------------ the edge
@pytest.mark.parametrize("empty", [None, {}])
def test_a_run_triggered_without_conf_keeps_none(empty: Any) -> None:
    assert kept_conf(empty, "etl", "r") is None


def test_a_conf_is_kept_as_a_plain_copy_up_to_16_kib() -> None:
    nested = {"branch": "main", "env": {"region": "eu"}, "tags": ("a", "b")}
    kept = kept_conf(nested, "etl", "r")
    assert kept == {"branch": "main", "env": {"region": "eu"}, "tags": ["a", "b"]}
    assert kept is not None and kept["env"] is not nested["env"]
    assert kept_conf(big_conf(MAX_CONF_BYTES), "etl", "r") == big_conf(MAX_CONF_BYTES)
    assert MAX_CONF_BYTES == 16 * 1024


@pytest.mark.parametrize(
    ("conf", "why"),
    [
        (big_conf(MAX_CONF_BYTES + 1), "is 16385 bytes of JSON, over 16384; not kept"),
        ({"blob": "é" * 8192}, "bytes of JSON, over 16384"),  # UTF-8 bytes, not characters
        ({"when": object()}, "is not JSON; not kept"),
        ({"ratio": float("nan")}, "is not JSON; not kept"),  # PostgreSQL's jsonb refuses NaN
        (["main"], "is not a JSON object; not kept"),
    ],
)
def test_a_conf_the_store_cannot_keep_is_left_out_with_a_debug_log(
    conf: Any, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="airflow_bkci.listeners.rows"):
        assert kept_conf(conf, "etl", "manual__1") is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert caplog.records[0].getMessage().startswith("bkci: conf of etl/manual__1 ")
    assert why in caplog.records[0].getMessage()


def test_a_hook_takes_the_conf_only_when_the_dag_run_has_it_loaded() -> None:
    from airflow_bkci.listeners.server import run_row

    loaded = SimpleNamespace(**_orm_columns(), conf={"branch": "main"})
    assert run_row(loaded).conf == {"branch": "main"}

    class Unloaded(SimpleNamespace):
        @property
        def conf(self) -> Any:  # a lazy load: a query in the scheduler's transaction
            raise AssertionError("run_row loaded the conf")

    assert run_row(Unloaded(**_orm_columns())).conf is None
    too_big = SimpleNamespace(**_orm_columns(), conf=big_conf(MAX_CONF_BYTES + 1))
    assert run_row(too_big).conf is None


def _orm_columns() -> dict[str, Any]:
    return {
        "dag_id": "etl",
        "run_id": "manual__1",
        "state": "running",
        "clear_number": 0,
        "run_type": "manual",
        "triggered_by": "rest_api",
        "triggering_user_name": "alice",
        "logical_date": None,
        "run_after": at(0),
        "queued_at": at(0),
        "start_date": at(1),
        "end_date": None,
    }


# ------------------------------------------------------------------ the observer
def test_the_run_event_carries_the_conf_but_the_conf_never_makes_an_event() -> None:
    observer = Observer("s")
    first = observer.observe_run(run(conf=MAIN))
    assert [e.fields["conf"] for e in first] == [MAIN]
    # the same run read again, with or without its conf: nothing changed for anyone
    assert observer.observe_run(run(conf=MAIN)) == []
    assert observer.observe_run(run(conf=None)) == []
    ended = observer.observe_run(run("success", conf=MAIN))
    assert [e.fields["conf"] for e in ended] == [MAIN]
    assert "conf" not in Observer("s").observe_run(run())[0].fields


# ------------------------------------------------------------------ into the store
def test_a_runs_conf_lands_in_the_build_column_and_never_in_the_document(store: Store) -> None:
    collect(store, ([run(conf=MAIN)], [task("running")]))
    assert stored_conf(store) == MAIN
    document = store.find_build("etl", "manual__1")
    assert document is not None and "conf" not in document
    assert "region" not in str(document) and "branch" not in str(document)
    with store.engine.connect() as conn:
        patches = conn.execute(sa.select(ChangeRow.patch)).scalars().all()
    assert patches and "branch" not in str(patches)
    node = store.node_states(build_id_for("etl", "manual__1"))[""]
    assert "conf" not in node.values()  # nor in the build node's state
    page = store.build_page("etl", BuildFilter(conf=(("branch", "main"),)), None, 10)
    assert [b["run_id"] for b in page] == ["manual__1"] and "conf" not in page[0]


def test_a_conf_changes_nothing_receivers_get(tmp_path: Path) -> None:
    """The same runs with and without conf: the same documents and change sets."""
    stores = [Store(f"sqlite:///{tmp_path / f'{name}.db'}") for name in ("with", "without")]
    for store, conf in zip(stores, (MAIN, None), strict=True):
        store.migrate()
        collect(
            store,
            ([run("queued", conf=conf)], [task(None)]),
            ([run(conf=conf)], [task("running")]),
            ([run("success", conf=conf)], [task("success")]),
        )
    build_id = build_id_for("etl", "manual__1")
    with_conf, without = ({**s.snapshot(build_id)} for s in stores)  # type: ignore[dict-item]
    assert with_conf["sequence"] == without["sequence"] >= 3
    assert with_conf["document"] == without["document"]
    assert [c["patch"] for c in stores[0].changes(build_id)] == [
        c["patch"] for c in stores[1].changes(build_id)
    ]
    assert (stored_conf(stores[0]), stored_conf(stores[1])) == (MAIN, None)
    for store in stores:
        store.dispose()


def test_only_run_events_write_the_conf_column(store: Store) -> None:
    observer = collect(store, ([run(conf=MAIN)], [task("queued")]))
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    try:
        # the next pass: only the task changed, so no run event and no conf
        events = observe_all(observer, [run(conf=MAIN)], [task("running")], lambda r: {})
        assert events and all(not e.node.is_build for e in events)
        assert store.apply(events).build_ids == {build_id_for("etl", "manual__1")}
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", seen)
    updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE BKCI_BUILD")]
    assert updates and not [s for s in updates if "conf" in s]
    assert stored_conf(store) == MAIN


def test_a_too_large_conf_is_not_kept_and_a_run_without_conf_has_null(store: Store) -> None:
    runs = [
        run(conf=kept_conf(big_conf(MAX_CONF_BYTES + 1), "etl", "big"), run_id="big"),
        run(conf=kept_conf({}, "etl", "none"), run_id="none"),
        run(conf=kept_conf({"branch": "main"}, "etl", "small"), run_id="small"),
    ]
    collect(store, (runs, []))
    assert [stored_conf(store, r) for r in ("big", "none", "small")] == [
        None,
        None,
        {"branch": "main"},
    ]
    with store.engine.connect() as conn:  # SQL NULL, not JSON null: filters see no conf
        nulls = conn.execute(sa.select(sa.func.count()).where(BuildRow.conf.is_(None))).scalar()
    assert nulls == 2


def test_a_conf_told_by_a_late_or_stale_run_event_is_still_kept(store: Store) -> None:
    collect(store, ([run("success")], [task("success")]))  # before the conf was read
    assert stored_conf(store) is None
    late = Observer("hook@api")
    events = late.observe_run(run("running", conf=MAIN))  # older than SUCCEED: stale
    result = store.apply(events)
    assert result.rejected == [] and stored_conf(store) == MAIN


# ------------------------------------------------------------------ the reconciler's read
@pytest.fixture
def airflow_db(tmp_path: Path) -> Iterator[sa.Engine]:
    """Airflow's dag_run and dag_run_note tables, on SQLite."""
    from airflow.models.dagrun import DagRun, DagRunNote

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'airflow.db'}")
    DagRun.__table__.create(engine)  # type: ignore[attr-defined]
    DagRunNote.__table__.create(engine)  # type: ignore[attr-defined]
    yield engine
    engine.dispose()


def add_runs(engine: sa.Engine, **confs: Any) -> None:
    from airflow.models.dagrun import DagRun

    rows = [
        {
            "dag_id": "etl",
            "run_id": run_id,
            "state": "running",
            "clear_number": 0,
            "run_type": "manual",
            "run_after": T0,
            "conf": conf,
            "log_template_id": None,  # else a subquery on a table these tests lack
        }
        for run_id, conf in confs.items()
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(DagRun.__table__), rows)  # type: ignore[attr-defined]


def test_the_reconciler_reads_each_runs_conf_once(airflow_db: sa.Engine) -> None:
    from airflow_bkci.listeners.reconciler import AirflowReader

    add_runs(airflow_db, r1={"branch": "main"}, r2={}, r3=big_conf(MAX_CONF_BYTES + 1), r5={"x": 1})
    with airflow_db.begin() as conn:  # one unreadable conf costs only its own
        conn.exec_driver_sql("UPDATE dag_run SET conf = '{\"x\": ' WHERE run_id = 'r5'")
    reader = AirflowReader(airflow_db)
    statements: list[str] = []
    sa.event.listen(airflow_db, "before_cursor_execute", lambda *a: statements.append(str(a[2])))
    first = {r.run_id: r.conf for r in reader.runs(T0)}
    assert first == {"r1": {"branch": "main"}, "r2": None, "r3": None, "r5": None}
    conf_reads = [s for s in statements if "dag_run.conf" in s]
    assert len(conf_reads) == 1  # one query for the runs it had not seen

    statements.clear()
    add_runs(airflow_db, r4={"branch": "dev"})
    second = {r.run_id: r.conf for r in reader.runs(T0)}
    assert second == {**first, "r4": {"branch": "dev"}}
    conf_reads = [s for s in statements if "dag_run.conf" in s]
    assert len(conf_reads) == 1 and conf_reads[0].count("?") == 1  # only r4's

    statements.clear()
    assert {r.run_id: r.conf for r in reader.runs(T0)} == second
    assert not [s for s in statements if "dag_run.conf" in s]  # nothing new: none read
