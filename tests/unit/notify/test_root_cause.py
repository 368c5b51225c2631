"""Root causes: the tasks that failed on their own, the first to fail first."""

from __future__ import annotations

import pytest

from airflow_bkci.notify.root_cause import root_causes, upstream_failed
from tests.unit.notify.builds import RUN_STATES, TASK_STATES, at, document, task


def ids(doc: dict[str, object]) -> list[str]:
    return [t.node_id for t in root_causes(doc)]


def test_upstream_failed_tasks_are_not_root_causes() -> None:
    doc = document(
        task("extract", "success", ended=1, order=0),
        task("load", "failed", ended=2, error="KeyError: 'id'", order=1),
        task("report", "upstream_failed", ended=2, order=2),
        task("publish", "upstream_failed", ended=2, order=3),
    )
    assert ids(doc) == ["load"]
    assert upstream_failed(doc) == ["report", "publish"]


def test_several_root_causes_come_in_the_order_they_failed() -> None:
    doc = document(
        task("a_first_in_dag", "failed", ended=9, order=0),
        task("b", "failed", ended=3, order=1),
        task("c", "failed", ended=6, order=2),
    )
    assert ids(doc) == ["b", "c", "a_first_in_dag"]


def test_ties_and_unknown_end_times_keep_dag_order() -> None:
    doc = document(
        task("no_end", "failed", ended=None, order=0),
        task("x", "failed", ended=4, order=1),
        task("y", "failed", ended=4, order=2),
    )
    assert ids(doc) == ["x", "y", "no_end"]


def test_retries_canceled_and_skipped_tasks_are_not_root_causes() -> None:
    doc = document(
        task("retrying", "up_for_retry", try_number=1, max_tries=2),
        task("skipped", "skipped"),
        task("ok", "success"),
        task("canceled", "failed"),
        state="running",
    )
    canceled = doc["stages"]["__ungrouped__"]["tasks"]["canceled"]
    canceled.update(status="CANCELED", detail="canceled")  # as the cancel marker reports it
    assert ids(doc) == []


def test_a_task_that_failed_after_retries_carries_its_last_try() -> None:
    doc = document(
        task(
            "load",
            "failed",
            try_number=3,
            max_tries=2,
            error="TimeoutError: db",
            stage="ingest",
            stage_name="Ingest data",
            started=4,
            ended=7,
        )
    )
    [load] = root_causes(doc)
    assert (load.try_number, load.tries_allowed) == (3, 3)
    assert load.error == "TimeoutError: db"
    assert (load.stage_id, load.stage_name) == ("ingest", "Ingest data")
    assert (load.started_at, load.ended_at) == (at(4), at(7))


def test_failed_mapped_instances_are_root_causes_one_by_one() -> None:
    doc = document(
        task("shard", "success", map_index=0, ended=1),
        task("shard", "failed", map_index=1, ended=3, error="OSError: disk", label="eu-west"),
        task("shard", "failed", map_index=2, ended=2),
        task("merge", "upstream_failed", ended=3),
    )
    causes = root_causes(doc)
    assert [(t.node_id, t.task_id, t.map_index) for t in causes] == [
        ("shard[2]", "shard", 2),
        ("shard[1]", "shard", 1),
    ]
    assert causes[1].label == "eu-west"
    assert upstream_failed(doc) == ["merge"]


def test_a_failure_known_only_from_an_enrichment_source_counts() -> None:
    doc = document(task("load", "failed"))
    node = doc["stages"]["__ungrouped__"]["tasks"]["load"]
    node["airflow_state"] = None  # a source that sent the status without Airflow's state
    assert ids(doc) == ["load"]


def test_a_build_that_failed_with_no_failed_task_has_no_root_cause() -> None:
    # dagrun_timeout or a run marked failed by hand: tasks skipped, none failed
    doc = document(task("load", "skipped"), task("report", "skipped"))
    assert root_causes(doc) == []
    assert upstream_failed(doc) == []


def test_the_fixture_maps_airflow_states_as_the_model_does() -> None:
    from airflow_bkci.model.mapping import map_run_state, map_task_state

    for state, (status, rank, detail) in TASK_STATES.items():
        mapped = map_task_state(state)
        assert (mapped.status, mapped.rank, mapped.detail) == (status, rank, detail), state
    for state, (status, rank, _) in RUN_STATES.items():
        if state != "canceled":
            assert (map_run_state(state).status, map_run_state(state).rank) == (status, rank)


@pytest.mark.parametrize("state", ["running", "queued", "up_for_retry"])
def test_unfinished_tasks_never_count(state: str) -> None:
    doc = document(task("load", state), task("x", "failed", ended=1), state="running")
    assert ids(doc) == ["x"]
