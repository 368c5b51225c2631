"""Store.apply: what users see in documents and history after event streams."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta
from typing import Any

from airflow_bkci.model import BuildStatus, Decision, Rank, StatusEvent
from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store
from tests.unit.store.builders import DAG, T0, build_event, event, iso

S = BuildStatus
BUILD = build_id_for(DAG, "run-1")


def retry_stream(run: str = "run-1") -> list[StatusEvent]:
    """extract: try 1 fails and is retried, try 2 succeeds; 8 status changes."""
    steps = [
        (1, S.QUEUE, 0),
        (1, S.PREPARE_ENV, 1),
        (1, S.RUNNING, 2),
        (1, S.RETRY, 10),
        (2, S.QUEUE, 15),
        (2, S.PREPARE_ENV, 16),
        (2, S.RUNNING, 17),
        (2, S.SUCCEED, 30),
    ]
    return [
        build_event(S.RUNNING, run=run, at=0, run_after=iso(-5), started_at=iso(0)),
        *(event(status, run=run, try_number=t, at=at) for t, status, at in steps),
    ]


def task_doc(store: Store, task: str = "extract", build_id: str = BUILD) -> dict[str, Any]:
    doc = store.build_tree(build_id)
    assert doc is not None
    tasks: dict[str, Any] = {}
    for stage in doc["stages"].values():
        tasks.update(stage["tasks"])
    return tasks[task]


def timeline(
    store: Store, node_id: str = "extract", build_id: str = BUILD
) -> list[tuple[Any, ...]]:
    """History without what depends on arrival (decision, stale, source, when recorded)."""
    return [
        (t.from_status, t.to_status, t.detail, t.clear_number, t.try_number, t.rank, t.at)
        for t in store.history(build_id, node_id)
    ]


def test_retry_stream_ends_succeeded_in_try_two_with_full_history(store: Store) -> None:
    result = store.apply(retry_stream())

    assert result.rejected == []
    assert result.build_ids == {BUILD}
    assert result.counts[Decision.REOPEN] == 1
    task = task_doc(store)
    assert (task["status"], task["try_number"]) == ("SUCCEED", 2)
    history = store.history(BUILD, "extract")
    assert [(t.try_number, t.to_status.value) for t in history] == [
        (1, "QUEUE"),
        (1, "PREPARE_ENV"),
        (1, "RUNNING"),
        (1, "RETRY"),
        (2, "QUEUE"),
        (2, "PREPARE_ENV"),
        (2, "RUNNING"),
        (2, "SUCCEED"),
    ]
    assert [t.at for t in history] == [
        T0 + timedelta(seconds=s) for s in (0, 1, 2, 10, 15, 16, 17, 30)
    ]
    assert history[0].from_status is None
    assert history[4].from_status is S.RETRY
    assert all(t.at.tzinfo is not None and t.recorded_at.tzinfo is not None for t in history)
    assert not any(t.stale for t in history)


def test_out_of_order_and_duplicated_batches_give_the_same_result(store: Store) -> None:
    store.apply(retry_stream("in-order"))
    events = retry_stream("scrambled")
    # The worker reports the same facts again, and everything comes in scrambled.
    copies = [replace(e, source="worker", seq=e.seq + 1000) for e in events]
    scrambled = events + copies + events[:3]
    random.Random(7).shuffle(scrambled)
    for start in range(0, len(scrambled), 4):
        store.apply(scrambled[start : start + 4])

    in_order, shuffled = build_id_for(DAG, "in-order"), build_id_for(DAG, "scrambled")
    assert comparable(store.build_tree(shuffled)) == comparable(store.build_tree(in_order))
    assert timeline(store, build_id=shuffled) == timeline(store, build_id=in_order)
    assert len(timeline(store, build_id=shuffled)) == 8


def comparable(doc: dict[str, Any] | None) -> dict[str, Any]:
    assert doc is not None
    return {k: v for k, v in doc.items() if k not in ("id", "run_id", "build_num")}


def test_a_late_event_goes_to_history_as_stale_and_leaves_the_node_alone(store: Store) -> None:
    store.apply([event(S.RUNNING, at=5)])
    result = store.apply([event(S.QUEUE, at=1)])

    assert result.counts[Decision.STALE] == 1
    assert task_doc(store)["status"] == "RUNNING"
    history = store.history(BUILD, "extract")
    assert [(t.to_status, t.stale) for t in history] == [(S.QUEUE, True), (S.RUNNING, False)]
    assert history[1].from_status is S.QUEUE  # the timeline, not the arrival order
    assert store.node_states(BUILD)["extract"].status is S.RUNNING


def test_a_bad_event_is_rejected_and_the_rest_of_the_batch_applied(store: Store) -> None:
    store.apply([event(S.RUNNING, at=2)])
    bad = event(S.QUEUE, at=3, rank=Rank.FINISHED)
    result = store.apply([bad, event(S.QUEUE, "load", at=3), event(S.SUCCEED, "transform", at=4)])

    assert [e for e, _ in result.rejected] == [bad]
    assert "RUNNING -> QUEUE is not allowed" in result.rejected[0][1]
    assert task_doc(store)["status"] == "RUNNING"
    assert task_doc(store, "load")["status"] == "QUEUE"
    assert task_doc(store, "transform")["status"] == "SUCCEED"
    assert [t.to_status for t in store.history(BUILD, "extract")] == [S.RUNNING]


def test_an_event_that_cannot_be_stored_is_rejected_alone(store: Store) -> None:
    bad = event(S.RUNNING, "x" * 300)
    result = store.apply([bad, event(S.RUNNING, at=1)])

    assert [e for e, _ in result.rejected] == [bad]
    assert task_doc(store)["status"] == "RUNNING"


def test_a_removed_task_leaves_the_tree_but_keeps_its_history(store: Store) -> None:
    store.apply([event(S.QUEUE, "extract"), event(S.QUEUE, "old_task")])
    result = store.apply([event(None, "old_task", at=5, removed=True)])

    assert result.counts[Decision.REMOVE] == 1
    doc = store.build_tree(BUILD)
    assert doc is not None
    tasks = [t for stage in doc["stages"].values() for t in stage["tasks"]]
    assert tasks == ["extract"]
    assert doc["progress"]["total"] == 1
    assert store.node_states(BUILD)["old_task"].removed
    history = store.history(BUILD, "old_task")
    assert [(t.to_status, t.detail) for t in history] == [(S.QUEUE, None), (S.UNEXEC, "removed")]


def test_enrichment_before_the_run_event_renders_a_queued_build(store: Store) -> None:
    result = store.apply([build_event(None, source="worker", note="from the worker")])

    assert result.build_ids == {BUILD}
    doc = store.build_tree(BUILD)
    assert doc is not None
    assert (doc["status"], doc["build_num"], doc["stages"]) == ("QUEUE", 1, {})
    assert store.history(BUILD) == []

    store.apply([build_event(S.RUNNING, at=1, run_after=iso(0))])
    doc = store.find_build(DAG, "run-1")
    assert doc is not None
    assert (doc["status"], doc["build_num"], doc["run_after"]) == ("RUNNING", 1, iso(0))


def test_context_fields_reach_the_document_as_json(store: Store) -> None:
    started = T0 + timedelta(seconds=2)
    store.apply(
        [
            event(S.RUNNING, at=2, started_at=started, host="worker-1", stage="ingest"),
            event(S.SUCCEED, at=9, ended_at=iso(9)),
        ]
    )

    doc = store.build_tree(BUILD)
    assert doc is not None
    task = doc["stages"]["ingest"]["tasks"]["extract"]
    assert (task["started_at"], task["host"], task["duration_ms"]) == (iso(2), "worker-1", 7000)


def test_a_replayed_batch_changes_nothing_and_touches_no_build(store: Store) -> None:
    events = retry_stream()
    store.apply(events)
    result = store.apply(events)

    # The newest event of each node is a duplicate, the older ones are stale.
    assert result.counts == {Decision.DUPLICATE: 2, Decision.STALE: len(events) - 2}
    assert not result.changed
    assert result.build_ids == set()
    assert len(store.history(BUILD, "extract")) == 8


def test_mapped_tasks_are_separate_nodes(store: Store) -> None:
    store.apply([event(S.SUCCEED, "fan", map_index=0), event(S.FAILED, "fan", map_index=1)])

    states = store.node_states(BUILD)
    assert states["fan[0]"].status is S.SUCCEED
    assert states["fan[1]"].status is S.FAILED
    assert task_doc(store, "fan[1]")["status"] == "FAILED"


def test_one_try_seen_with_different_clear_counts_is_one_step(store: Store) -> None:
    """A worker and the scheduler may disagree on the run's clear count for a try."""
    store.apply([event(S.RUNNING, clear=0, source="worker", at=2)])
    store.apply([event(S.RUNNING, clear=1, at=2), event(S.SUCCEED, clear=1, at=5)])

    assert [t.to_status for t in store.history(BUILD, "extract")] == [S.RUNNING, S.SUCCEED]
    assert task_doc(store)["execute_count"] == 2
