"""record_to_event accepts what task runners send and names the field of anything else."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_bkci.exceptions import InvalidEvent
from airflow_bkci.model.status import BuildStatus, Rank
from airflow_bkci.spool.records import record_to_event


def good(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "v": 1,
        "dag_id": "etl",
        "run_id": "manual__2026-01-01T00:00:00+00:00",
        "task_id": "load",
        "map_index": -1,
        "try_number": 2,
        "clear_number": 1,
        "state": "running",
        "source": "worker@host-a:123",
        "seq": 4,
        "at": "2026-01-01T00:00:05+00:00",
        "start_date": "2026-01-01T01:00:01+01:00",
        "end_date": None,
        "hostname": "host-a",
        "queue": "default",
        "pool": "default_pool",
        "operator": "PythonOperator",
        "max_tries": 3,
        "label": None,
        "error": None,
    }
    record.update(overrides)
    return record


def test_running_record_becomes_a_running_event_with_context() -> None:
    event = record_to_event(good())
    assert (event.node.dag_id, event.node.task_id, event.node.map_index) == ("etl", "load", -1)
    assert event.status is BuildStatus.RUNNING and event.rank is Rank.RUNNING
    assert (event.clear_number, event.try_number, event.source, event.seq) == (
        1,
        2,
        "worker@host-a:123",
        4,
    )
    assert event.airflow_state == "running"
    assert dict(event.fields) == {
        "runner_started_at": "2026-01-01T00:00:01+00:00",  # normalised to UTC
        "host": "host-a",
        "queue": "default",
        "pool": "default_pool",
        "operator": "PythonOperator",
        "max_tries": 3,
    }


@pytest.mark.parametrize(
    ("state", "status", "detail"),
    [
        ("success", BuildStatus.SUCCEED, None),
        ("failed", BuildStatus.FAILED, None),
        ("up_for_retry", BuildStatus.RETRY, None),
        ("skipped", BuildStatus.SKIP, None),
        ("deferred", BuildStatus.RUNNING, "deferred"),
    ],
)
def test_states_map_through_the_mapping_table(
    state: str, status: BuildStatus, detail: str | None
) -> None:
    event = record_to_event(good(state=state, end_date="2026-01-01T00:00:09Z", error="E: x"))
    assert (event.status, event.detail) == (status, detail)
    assert event.fields["runner_ended_at"] == "2026-01-01T00:00:09+00:00"
    assert event.fields["error"] == "E: x"


def test_mapped_task_keeps_its_index() -> None:
    assert record_to_event(good(map_index=3)).node.node_id == "load[3]"


def test_unknown_keys_are_ignored_for_newer_workers() -> None:
    assert record_to_event(good(new_thing=1)).status is BuildStatus.RUNNING


def _without(name: str) -> dict[str, Any]:
    record = good()
    del record[name]
    return record


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("not a dict", "must be a JSON object, got str"),
        ([good()], "must be a JSON object, got list"),
        (_without("dag_id"), "field 'dag_id' is missing"),
        (_without("run_id"), "field 'run_id' is missing"),
        (_without("try_number"), "field 'try_number' is missing"),
        (_without("clear_number"), "field 'clear_number' is missing"),
        (_without("at"), "field 'at' is missing"),
        (_without("state"), "field 'state' is missing"),
        (_without("source"), "field 'source' is missing"),
        (good(dag_id=""), "field 'dag_id' must not be empty"),
        (good(task_id=7), "field 'task_id' must be a string, got int"),
        (good(dag_id="x" * 251), "field 'dag_id' is 251 characters long; the limit is 250"),
        (good(try_number="1"), "field 'try_number' must be an integer, got str"),
        (good(try_number=True), "field 'try_number' must be an integer, got bool"),
        (good(try_number=1.0), "field 'try_number' must be an integer, got float"),
        (good(try_number=-1), "field 'try_number' must be >= 0, got -1"),
        (good(clear_number=-2), "field 'clear_number' must be >= 0, got -2"),
        (good(map_index=-2), "field 'map_index' must be >= -1, got -2"),
        (good(seq=-1), "field 'seq' must be >= 0, got -1"),
        (good(state="exploded"), "field 'state' is not an Airflow task state: 'exploded'"),
        (good(state=None), "field 'state' must be a string, got NoneType"),
        (good(at="2026-01-01T00:00:05"), "field 'at' has no time zone"),
        (good(start_date="2026-01-01 00:00"), "field 'start_date' has no time zone"),
        (good(at="yesterday"), "field 'at' is not an ISO 8601 time: 'yesterday'"),
        (good(end_date=1767225600), "field 'end_date' must be an ISO 8601 string, got int"),
        (good(error=["x"]), "field 'error' must be a string or null, got list"),
        (good(error="x" * 4001), "field 'error' is 4001 characters long; the limit is 4000"),
        (good(max_tries="3"), "field 'max_tries' must be an integer, got str"),
        (good(v=2), "field 'v' is 2; this server reads version 1"),
    ],
)
def test_bad_records_are_rejected_with_a_reason_naming_the_field(
    record: object, message: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        record_to_event(record)
    assert message in info.value.reason
    assert info.value.record is record
