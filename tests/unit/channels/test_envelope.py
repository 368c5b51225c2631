"""Envelopes are CloudEvents the SDK reads back, with stable ids and schema-checked data."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import OPTIONAL_ATTRIBUTES, REQUIRED_ATTRIBUTES, CloudEvent
from jsonschema import Draft202012Validator

from airflow_bkci.channels.envelope import (
    CONTENT_TYPE,
    EVENT_CHANGED,
    EVENT_SNAPSHOT,
    batch_id,
    change_event,
    encode_batch,
    encode_event,
    event_id,
    plain,
    schema,
    snapshot_event,
    validate_data,
    validate_event,
)
from airflow_bkci.exceptions import InvalidEvent

NOW = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
PATCH = [{"op": "replace", "path": "/stages/extract/tasks/pull/status", "value": "RUNNING"}]
DOCUMENT = {
    "id": "b-1f2e",
    "pipeline_id": "etl",
    "status": "RUNNING",
    "stages": {"extract": {"id": "extract", "status": "RUNNING", "tasks": {}}},
}


def changed(sequence: int = 3, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "source": "/airflow-bkci/prod",
        "pipeline_id": "etl",
        "build_id": "b-1f2e",
        "sequence": sequence,
        "patch": PATCH,
        "time": NOW,
    }
    return change_event(**{**args, **overrides})


def snapshot(sequence: int = 3) -> dict[str, Any]:
    return snapshot_event(
        source="/airflow-bkci/prod",
        pipeline_id="etl",
        build_id="b-1f2e",
        sequence=sequence,
        document=DOCUMENT,
        time=NOW,
    )


def sdk_read(event: dict[str, Any]) -> Any:
    message = HTTPMessage({"content-type": CONTENT_TYPE}, encode_event(event))
    return from_structured(message, JSONFormat(), CloudEvent)


def test_change_event_reads_back_through_the_sdk() -> None:
    parsed = sdk_read(changed())

    assert parsed.get_specversion() == "1.0"
    assert parsed.get_id() == "b-1f2e:3:changed"
    assert parsed.get_type() == EVENT_CHANGED
    assert parsed.get_source() == "/airflow-bkci/prod"
    assert parsed.get_subject() == "b-1f2e"
    assert parsed.get_time() == NOW.replace(microsecond=123000)
    assert parsed.get_datacontenttype() == "application/json"
    assert parsed.get_dataschema() == schema(EVENT_CHANGED)["$id"]
    assert parsed.get_extension("pipelineid") == "etl"
    assert parsed.get_data() == {
        "pipeline_id": "etl",
        "build_id": "b-1f2e",
        "sequence": 3,
        "patch": PATCH,
    }


def test_snapshot_event_reads_back_through_the_sdk() -> None:
    parsed = sdk_read(snapshot(7))

    assert parsed.get_type() == EVENT_SNAPSHOT
    assert parsed.get_dataschema() == schema(EVENT_SNAPSHOT)["$id"]
    assert parsed.get_data()["document"] == DOCUMENT
    assert parsed.get_data()["sequence"] == 7


def test_sequence_is_a_string_whose_string_order_is_the_number_order() -> None:
    values = [changed(n)["sequence"] for n in (1, 2, 9, 10, 11, 100, 12345)]

    assert all(isinstance(v, str) for v in values)
    assert sorted(values) == values
    assert [int(v) for v in values] == [1, 2, 9, 10, 11, 100, 12345]


def test_extension_names_are_lowercase_alphanumeric() -> None:
    core = set(REQUIRED_ATTRIBUTES) | set(OPTIONAL_ATTRIBUTES) | {"data"}
    extensions = set(changed()) - core

    assert extensions == {"sequence", "pipelineid"}
    assert all(re.fullmatch(r"[a-z0-9]+", name) for name in extensions)


def test_time_is_utc_rfc3339_whatever_zone_it_came_in() -> None:
    shanghai = NOW.astimezone(timezone(timedelta(hours=8)))

    assert changed(time=shanghai)["time"] == "2026-03-01T12:30:15.123Z"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="no time zone"):
        changed(time=datetime(2026, 3, 1, 12, 0))


def test_ids_are_stable_and_differ_by_kind_sequence_and_build() -> None:
    assert changed()["id"] == changed()["id"] == event_id("b-1f2e", 3, EVENT_CHANGED)
    ids = {
        event_id("b-1f2e", 3, EVENT_CHANGED),
        event_id("b-1f2e", 3, EVENT_SNAPSHOT),
        event_id("b-1f2e", 4, EVENT_CHANGED),
        event_id("b-9a9a", 3, EVENT_CHANGED),
    }
    assert len(ids) == 4
    assert snapshot(3)["id"] != changed(3)["id"]


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="EVENT_CHANGED or EVENT_SNAPSHOT"):
        event_id("b-1f2e", 3, "changed")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"patch": []}, "empty patch"),
        ({"sequence": 0}, "integer >= 1"),
        ({"sequence": True}, "integer >= 1"),
        ({"source": ""}, "source"),
        ({"build_id": ""}, "build and pipeline ids must not be empty"),
        ({"patch": msgspec.Raw(b"[]")}, "empty patch"),
    ],
)
def test_a_change_event_with_bad_arguments_is_refused(
    overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        changed(**overrides)


def test_a_stored_patch_goes_on_the_wire_as_it_is() -> None:
    patch = [{"op": "replace", "path": "/status", "value": "SUCCEED"}]
    raw = changed(patch=msgspec.Raw(json.dumps(patch).encode()))
    assert json.loads(encode_batch([raw])) == json.loads(encode_batch([changed(patch=patch)]))
    assert plain(raw) == changed(patch=patch)  # decoded where a Python value is needed


def test_a_snapshot_at_sequence_zero_is_the_empty_start() -> None:
    event = snapshot_event(
        source="/s", pipeline_id="etl", build_id="b-1", sequence=0, document={}, time=NOW
    )

    validate_event(event)
    assert event["sequence"] == "0000000000"


def test_batch_is_a_compact_utf8_json_array() -> None:
    events = [changed(1, patch=[{"op": "add", "path": "/note", "value": "débogage ✓"}]), changed(2)]
    body = encode_batch(events)

    assert body.startswith(b'[{"specversion":"1.0",')
    assert b", " not in body and b": " not in body
    assert "débogage ✓".encode() in body
    assert json.loads(body) == events


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="at least one event"):
        encode_batch([])


def test_batch_id_is_stable_and_depends_on_the_events_in_order() -> None:
    one, two = changed(1), changed(2)

    assert batch_id([one, two]) == batch_id([changed(1), changed(2)])
    assert batch_id([one, two]) != batch_id([two, one])
    assert batch_id([one]).startswith("batch-")


def test_schemas_are_valid_draft_2020_12_named_by_their_dataschema() -> None:
    for kind, event in ((EVENT_CHANGED, changed()), (EVENT_SNAPSHOT, snapshot())):
        Draft202012Validator.check_schema(schema(kind))
        assert schema(kind)["$id"] == event["dataschema"]


def test_good_events_validate() -> None:
    validate_event(changed())
    validate_event(snapshot())


def with_data(event: dict[str, Any], **data: Any) -> dict[str, Any]:
    return {**event, "data": {**event["data"], **data}}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({**changed(), "data": {"build_id": "b-1f2e"}}, "data: 'pipeline_id' is a required"),
        (with_data(changed(), sequence="3"), "data.sequence: '3' is not of type 'integer'"),
        (with_data(changed(), patch=[]), r"data.patch: \[\] should be non-empty"),
        (
            with_data(changed(), patch=[{"op": "frobnicate", "path": "/a"}]),
            r"data.patch\[0\].op: 'frobnicate' is not one of",
        ),
        (
            with_data(changed(), patch=[{"op": "add", "path": "/a"}]),
            r"data.patch\[0\]: 'value' is a required property",
        ),
        (
            with_data(changed(), patch=[{"op": "move", "path": "/a"}]),
            r"data.patch\[0\]: 'from' is a required property",
        ),
        (
            with_data(changed(), patch=[{"op": "remove", "path": "no-slash"}]),
            r"data.patch\[0\].path: 'no-slash' does not match",
        ),
        (with_data(snapshot(), document=[]), "data.document: .* is not of type 'object'"),
        (
            with_data(snapshot(), document={"stages": {"s": {"tasks": {"t": "RUNNING"}}}}),
            r"data.document.stages.s.tasks.t: 'RUNNING' is not of type 'object'",
        ),
        ({**changed(), "type": "com.example.other"}, "unknown type 'com.example.other'"),
        ({k: v for k, v in changed().items() if k != "data"}, "has no data"),
    ],
)
def test_bad_data_is_refused_with_the_place_and_the_problem(
    event: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidEvent, match=reason) as caught:
        validate_data(event)
    assert caught.value.record is event


def test_a_long_value_is_cut_short_in_the_reason() -> None:
    event = with_data(snapshot(), document=["x" * 5000])

    with pytest.raises(InvalidEvent) as caught:
        validate_data(event)
    assert len(caught.value.reason) < 500


@pytest.mark.parametrize(
    ("attribute", "value", "reason"),
    [
        ("subject", "b-other", "subject 'b-other' is not data.build_id"),
        ("sequence", "0000000004", "sequence attribute '0000000004' is not data.sequence 3"),
        ("sequence", 3, "sequence attribute 3 is not"),
        ("pipelineid", "other", "pipelineid 'other' is not data.pipeline_id"),
        ("specversion", "0.3", "specversion '0.3' is not 1.0"),
    ],
)
def test_attributes_that_disagree_with_the_data_are_refused(
    attribute: str, value: Any, reason: str
) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        validate_event({**changed(), attribute: value})
