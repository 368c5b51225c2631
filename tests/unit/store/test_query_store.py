"""The store's reads for the query API, on SQLite and PostgreSQL, and migration 0003."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from airflow_bkci.model import BuildStatus
from airflow_bkci.model.event import build_id_for, utcnow
from airflow_bkci.stats import percentile
from airflow_bkci.store import Store
from airflow_bkci.store.migrate import upgrade
from airflow_bkci.store.outbox import Outbox
from airflow_bkci.store.queries import BuildFilter
from airflow_bkci.store.tables import BuildRow
from tests.unit.store.builders import T0, build_event, event, iso

S = BuildStatus


def runs(rows: list[dict[str, Any]]) -> list[str]:
    return [r["run_id"] for r in rows]


def seed(store: Store, n: int = 7) -> None:
    # r0..r6; r2 and r3 due at the same time, so build_num breaks the tie
    due = [0, 10, 20, 20, 30, 40, 50][:n]
    store.apply(
        [
            build_event(
                S.SUCCEED if i % 2 else S.FAILED,
                run=f"r{i}",
                run_after=iso(t),
                trigger_type="ui" if i % 3 == 0 else "timetable",
                triggering_user="ann" if i % 3 == 0 else None,
            )
            for i, t in enumerate(due)
        ]
    )


def walk(store: Store, flt: BuildFilter, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    after = None
    while True:
        rows = store.build_page("etl", flt, after, limit)
        if not rows:
            return pages
        pages.append(runs(rows))
        last = rows[-1]
        after = (datetime.fromisoformat(last["run_after"]), last["build_num"])


def test_keyset_pages_cover_every_build_once_newest_first(store: Store) -> None:
    seed(store)
    assert walk(store, BuildFilter(), 2) == [["r6", "r5"], ["r4", "r3"], ["r2", "r1"], ["r0"]]
    assert walk(store, BuildFilter(), 1) == [
        [r] for r in ("r6", "r5", "r4", "r3", "r2", "r1", "r0")
    ]


def test_filters_combine(store: Store) -> None:
    seed(store)
    ui = BuildFilter(trigger_types=("ui",))
    assert walk(store, ui, 10) == [["r6", "r3", "r0"]]
    assert walk(store, BuildFilter(triggering_user="ann", statuses=(S.FAILED,)), 10) == [
        ["r6", "r0"]
    ]
    window = BuildFilter(since=T0 + timedelta(seconds=20), until=T0 + timedelta(seconds=40))
    assert walk(store, window, 1) == [["r4"], ["r3"], ["r2"]]


def test_columns_follow_the_build_as_it_changes(store: Store) -> None:
    store.apply([build_event(S.QUEUE, run="r1", run_after=iso(0))])
    (row,) = store.build_page("etl", BuildFilter(), None, 10)
    assert (row["trigger_type"], row["triggering_user"], row["queued_at"]) == (None, None, None)
    store.apply(
        [
            build_event(
                S.RUNNING,
                run="r1",
                at=5,
                trigger_type="rest_api",
                triggering_user="x" * 600,
                queued_at=iso(1),
                started_at=iso(4),
            )
        ]
    )
    (row,) = store.build_page("etl", BuildFilter(), None, 10)
    assert row["trigger_type"] == "rest_api"
    assert row["triggering_user"] == "x" * 512  # cut to the column
    assert (row["queued_at"], row["started_at"]) == (iso(1), iso(4))


def test_pipelines_carry_their_newest_build(store: Store) -> None:
    seed(store)
    store.apply([build_event(S.RUNNING, run="o1", dag="other", run_after=iso(5))])
    assert store.pipeline_ids() == ["etl", "other"]
    etl, other = store.pipelines(["etl", "other", "unknown"])
    assert (etl["pipeline_id"], etl["builds"], etl["latest_build"]["run_id"]) == ("etl", 7, "r6")
    assert other["latest_build"]["id"] == build_id_for("other", "o1")
    assert store.pipelines([]) == []


def test_changes_since_stop_at_the_sequence_read_first(store: Store) -> None:
    for at in range(3):
        store.apply([event(S.RUNNING if at < 2 else S.SUCCEED, f"t{at}", at=at)])
    build = build_id_for("etl", "run-1")
    found = store.changes_since(build, 1, 10)
    assert found is not None
    assert found["sequence"] == 3
    assert [c["sequence"] for c in found["changes"]] == [2, 3]
    assert store.changes_since(build_id_for("etl", "nope"), 0, 10) is None
    assert store.node_known(build, "t1") and not store.node_known(build, "t9")


def test_metrics_on_each_database(store: Store) -> None:
    store.apply(
        [
            build_event(
                S.SUCCEED,
                run="a",
                run_after=iso(0),
                queued_at=iso(0),
                started_at=iso(2),
                ended_at=iso(12),
            ),
            build_event(
                S.FAILED,
                run="b",
                run_after=iso(5),
                queued_at=iso(5),
                started_at=iso(9),
                ended_at=iso(10),
            ),
            event(S.FAILED, "t", run="b"),
        ]
    )
    m = store.pipeline_metrics("etl", T0, T0 + timedelta(hours=1), top=5)
    assert (m["builds"], m["finished"], m["success_rate"]) == (2, 2, 0.5)
    assert m["duration_ms"] == {"count": 2, "p50": 1000.0, "p95": 10_000.0}
    assert m["queue_ms"] == {"count": 2, "p50": 2000.0, "p95": 4000.0}
    assert m["failing_tasks"] == [{"task_id": "t", "failed_builds": 1, "last_failed_build_num": 2}]


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (
        10.0,
        19.0,
        20.0,
    )


def test_circuit_rows_leave_gone_alone_and_the_reverse(store: Store) -> None:
    outbox = Outbox(store, owner="me")
    outbox.set_gone("hook", "410 Gone: moved")
    outbox.save_circuit("hook", "open", 3, utcnow() + timedelta(minutes=5))
    (health,) = outbox.health()
    assert health["gone"] == "410 Gone: moved"
    assert (health["circuit"]["state"], health["circuit"]["failures"]) == ("open", 3)
    outbox.set_gone("hook", None)
    (health,) = outbox.health(include_idle=True)
    assert health["gone"] is None and health["circuit"]["state"] == "open"
    assert outbox.health() == []  # nothing to report unless idle endpoints are asked for


# ------------------------------------------------------------------ migration 0003
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        yield request.getfixturevalue("pg_server")()


def test_migration_0003_fills_the_new_columns_from_existing_documents(fresh_url: str) -> None:
    store = Store(fresh_url)
    upgrade(store.engine, "0002")
    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    stamp = now.replace(tzinfo=None) if store.engine.dialect.name == "sqlite" else now
    documents = {
        "b-1": {
            "trigger_type": "ui",
            "triggering_user": "ann",
            "queued_at": "2026-03-01T13:00:00+01:00",
        },
        "b-2": {"trigger_type": "timetable", "triggering_user": None, "queued_at": "not a time"},
        "b-3": {},
    }
    build = sa.table(
        "bkci_build",
        *(sa.column(c) for c in ("build_id", "dag_id", "run_id", "build_num", "status")),
        *(sa.column(c, sa.DateTime()) for c in ("run_after", "created_at", "updated_at")),
        sa.column("document", sa.JSON().with_variant(JSONB(), "postgresql")),
        sa.column("sequence"),
    )
    pipeline = sa.table(
        "bkci_pipeline",
        sa.column("dag_id"),
        sa.column("last_build_num"),
        sa.column("created_at", sa.DateTime()),
    )
    with store.engine.begin() as conn:
        conn.execute(sa.insert(pipeline).values(dag_id="etl", last_build_num=3, created_at=stamp))
        conn.execute(
            sa.insert(build),
            [
                {
                    "build_id": b,
                    "dag_id": "etl",
                    "run_id": b,
                    "build_num": i + 1,
                    "status": "SUCCEED",
                    "run_after": stamp - timedelta(seconds=i),
                    "created_at": stamp,
                    "updated_at": stamp,
                    "document": document,
                    "sequence": 1,
                }
                for i, (b, document) in enumerate(documents.items())
            ],
        )
    store.migrate()
    rows = {r["id"]: r for r in store.build_page("etl", BuildFilter(), None, 10)}
    assert (rows["b-1"]["trigger_type"], rows["b-1"]["triggering_user"]) == ("ui", "ann")
    assert rows["b-1"]["queued_at"] == now.isoformat()  # 13:00+01:00 is 12:00 UTC
    assert (rows["b-2"]["trigger_type"], rows["b-2"]["queued_at"]) == ("timetable", None)
    assert (rows["b-3"]["trigger_type"], rows["b-3"]["triggering_user"]) == (None, None)
    assert [
        r["id"] for r in store.build_page("etl", BuildFilter(trigger_types=("ui",)), None, 10)
    ] == ["b-1"]
    store.dispose()


# ------------------------------------------------------------------ run conf
def stored_confs(store: Store) -> dict[str, tuple[Any, bool]]:
    """run_id: (conf, whether it is SQL NULL) of every build."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(BuildRow.run_id, BuildRow.conf, BuildRow.conf.is_(None)))
        return {run_id: (conf, bool(is_null)) for run_id, conf, is_null in rows}


def test_the_conf_column_holds_what_run_events_told_on_both_databases(store: Store) -> None:
    conf = {"branch": "main", "retries": 3, "env": {"region": "eu"}}
    store.apply(
        [
            build_event(S.RUNNING, run="r1", conf=conf),
            build_event(S.RUNNING, run="r2"),  # no conf told
            build_event(S.RUNNING, run="r3", conf=None),  # told: none
            event(S.RUNNING, "extract", run="r4", conf={"branch": "x"}),  # a task's: ignored
        ]
    )
    assert stored_confs(store) == {
        "r1": (conf, False),
        "r2": (None, True),
        "r3": (None, True),  # SQL NULL, not JSON null
        "r4": (None, True),
    }
    document = store.find_build("etl", "r1")
    assert document is not None and "conf" not in document
    # a later batch without a run event leaves the column alone
    store.apply([event(S.SUCCEED, "extract", run="r1")])
    assert stored_confs(store)["r1"] == (conf, False)
    page = store.build_page("etl", BuildFilter(conf=(("retries", "3"),)), None, 10)
    assert [b["run_id"] for b in page] == ["r1"]
