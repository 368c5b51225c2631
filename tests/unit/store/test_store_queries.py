"""Reads: build summaries, lookups, node states and quarantine."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from airflow_bkci.model import BuildStatus
from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store
from airflow_bkci.store.tables import QuarantineRow
from tests.unit.store.builders import T0, build_event, event, iso

S = BuildStatus


def seed(store: Store) -> None:
    store.apply(
        [
            build_event(S.SUCCEED, run="r1", run_after=iso(0)),
            build_event(S.FAILED, run="r2", run_after=iso(10)),
            build_event(S.RUNNING, run="r3", run_after=iso(20), started_at=iso(21)),
            build_event(S.RUNNING, run="r4", run_after=iso(20)),
            build_event(S.SUCCEED, run="o1", dag="other", run_after=iso(15)),
        ]
    )


def runs(summaries: list[dict[str, object]]) -> list[object]:
    return [s["run_id"] for s in summaries]


def test_builds_are_listed_newest_first(store: Store) -> None:
    seed(store)

    assert runs(store.builds("etl")) == ["r4", "r3", "r2", "r1"]  # same run_after: number
    assert runs(store.builds()) == ["r4", "r3", "o1", "r2", "r1"]
    summary = store.builds("etl", limit=2, offset=1)[0]
    assert summary == {
        "id": build_id_for("etl", "r3"),
        "pipeline_id": "etl",
        "run_id": "r3",
        "build_num": 3,
        "status": "RUNNING",
        "run_after": iso(20),
        "started_at": iso(21),
        "ended_at": None,
        "updated_at": summary["updated_at"],
    }
    assert runs(store.builds("etl", limit=2, offset=1)) == ["r3", "r2"]


def test_builds_filter_by_status_and_time_window(store: Store) -> None:
    seed(store)

    assert runs(store.builds("etl", status=[S.SUCCEED, S.FAILED])) == ["r2", "r1"]
    assert runs(store.builds(status=[S.SUCCEED])) == ["o1", "r1"]
    window = store.builds(since=T0 + timedelta(seconds=10), until=T0 + timedelta(seconds=20))
    assert runs(window) == ["o1", "r2"]
    assert store.builds("nope") == []


def test_lookups_and_node_states(store: Store) -> None:
    store.apply([build_event(S.RUNNING, run="r1"), event(S.FAILED, run="r1", error="boom")])
    build_id = build_id_for("etl", "r1")

    doc = store.find_build("etl", "r1")
    assert doc == store.build_tree(build_id)
    assert doc is not None and doc["status"] == "RUNNING"
    assert store.find_build("etl", "missing") is None
    assert store.build_tree("b-missing") is None
    states = store.node_states(build_id)
    assert set(states) == {"", "extract"}
    assert states["extract"].values()["error"] == "boom"
    assert store.node_states("b-missing") == {}


def test_quarantine_keeps_the_record(store: Store) -> None:
    store.quarantine('{"broken": ', "not JSON: Expecting value", "ingest:10.0.0.7")

    with store.engine.connect() as conn:
        row = conn.execute(select(QuarantineRow)).one()
    assert (row.payload, row.reason, row.source) == (
        '{"broken": ',
        "not JSON: Expecting value",
        "ingest:10.0.0.7",
    )
    assert row.received_at.tzinfo is not None
