"""Every stored change is a numbered JSON Patch a consumer can rebuild the build from."""

from __future__ import annotations

import threading
from typing import Any

import jsonpatch

from airflow_bkci.model import BuildStatus, StatusEvent
from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store
from tests.unit.store.builders import DAG, build_event, event, iso

S = BuildStatus
BUILD = build_id_for(DAG, "run-1")


def replay(store: Store, build_id: str = BUILD) -> tuple[dict[str, Any], list[int]]:
    """What a consumer holds after applying every change set from the start."""
    doc: dict[str, Any] = {}
    sequences = []
    for change in store.changes(build_id):
        doc = jsonpatch.apply_patch(doc, change["patch"])
        sequences.append(change["sequence"])
    return doc, sequences


def stream() -> list[StatusEvent]:
    return [
        build_event(S.RUNNING, at=0, run_after=iso(-5), started_at=iso(0)),
        event(S.QUEUE, "extract", at=1),
        event(S.QUEUE, "load", at=1),
        event(S.RUNNING, "extract", at=2, hostname="w1"),
        event(S.SUCCEED, "extract", at=5),
        event(S.RUNNING, "load", at=6),
        event(S.FAILED, "load", at=9, error="KeyError: 'x'"),
        build_event(S.FAILED, at=10, ended_at=iso(10)),
    ]


def test_each_batch_that_changes_the_tree_takes_the_next_sequence(store: Store) -> None:
    for e in stream():
        store.apply([e])
    doc, sequences = replay(store)
    snap = store.snapshot(BUILD)
    assert snap is not None
    assert sequences == list(range(1, snap["sequence"] + 1)) and snap["sequence"] == 8
    assert doc == snap["document"] == store.build_tree(BUILD)


def test_a_batch_that_changes_nothing_takes_no_number(store: Store) -> None:
    events = stream()
    store.apply(events)
    before = store.snapshot(BUILD)
    store.apply(events)  # the same events again: idempotent
    store.apply([event(S.QUEUE, "extract", at=1)])  # stale: history only
    after = store.snapshot(BUILD)
    assert before is not None and after is not None
    assert after["sequence"] == before["sequence"] == 1
    assert [c["sequence"] for c in store.changes(BUILD)] == [1]


def test_one_task_change_patches_only_that_task_and_what_derives_from_it(store: Store) -> None:
    store.apply(stream()[:4])
    store.apply([event(S.SUCCEED, "extract", at=5)])
    (last,) = store.changes(BUILD, after=1)
    paths = {op["path"] for op in last["patch"]}
    task = "/stages/__ungrouped__/tasks/extract"
    assert {op["op"] for op in last["patch"]} <= {"replace", "add"}
    assert f"{task}/status" in paths
    assert all(
        p.startswith((task, "/stages/__ungrouped__/", "/progress", "/updated")) or p in {"/status"}
        for p in paths
    ), paths
    assert not any("/tasks/load" in p for p in paths)


def test_changes_after_a_sequence_are_what_a_lagging_consumer_needs(store: Store) -> None:
    for e in stream():
        store.apply([e])
    head = {}
    for change in store.changes(BUILD)[:3]:
        head = jsonpatch.apply_patch(head, change["patch"])
    for change in store.changes(BUILD, after=3):
        head = jsonpatch.apply_patch(head, change["patch"])
    assert head == store.build_tree(BUILD)
    assert [c["sequence"] for c in store.changes(BUILD, after=3, limit=2)] == [4, 5]


def test_concurrent_writers_never_share_or_skip_a_sequence(store: Store) -> None:
    tasks = [f"t{i}" for i in range(12)]
    store.apply([build_event(S.RUNNING, at=0)])
    errors: list[BaseException] = []

    def write(names: list[str]) -> None:
        try:
            for n in names:
                store.apply([event(S.QUEUE, n, at=1)])
                store.apply([event(S.RUNNING, n, at=2)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(tasks[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    doc, sequences = replay(store)
    assert sequences == list(range(1, len(sequences) + 1))
    assert doc == store.build_tree(BUILD)
    assert len(doc["stages"]["__ungrouped__"]["tasks"]) == 12
