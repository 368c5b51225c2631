"""The reference consumer ends at the sender's document whatever order events arrive in."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_bkci.channels.consumer import BuildMirror, Gap, Result, parse_body
from airflow_bkci.channels.envelope import (
    CONTENT_TYPE,
    CONTENT_TYPE_BATCH,
    change_event,
    encode_batch,
    encode_event,
    snapshot_event,
)
from airflow_bkci.exceptions import InvalidEvent

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
BUILD = "b-1f2e"
TASKS = ("pull", "load", "report")


def document(step: int) -> dict[str, Any]:
    """The build after ``step`` changes: tasks finish one by one, then the build."""
    statuses = {
        task: "SUCCEED" if i < step else "RUNNING" if i == step else "QUEUE"
        for i, task in enumerate(TASKS)
    }
    return {
        "id": BUILD,
        "pipeline_id": "etl",
        "status": "SUCCEED" if step >= len(TASKS) else "RUNNING",
        "stages": {
            "main": {
                "id": "main",
                "status": "RUNNING",
                "tasks": {t: {"id": t, "status": s} for t, s in statuses.items()},
            }
        },
    }


def history(count: int = len(TASKS) + 1) -> list[dict[str, Any]]:
    """Change sets 1..count: from the empty start to document(0), then step by step."""
    docs: list[dict[str, Any]] = [{}] + [document(step) for step in range(count)]
    return [
        change_event(
            source="/airflow-bkci/test",
            pipeline_id="etl",
            build_id=BUILD,
            sequence=n,
            patch=jsonpatch.make_patch(docs[n - 1], docs[n]).patch,
            time=NOW,
        )
        for n in range(1, count + 1)
    ]


def snapshot(sequence: int) -> dict[str, Any]:
    return snapshot_event(
        source="/airflow-bkci/test",
        pipeline_id="etl",
        build_id=BUILD,
        sequence=sequence,
        document=document(sequence - 1),
        time=NOW,
    )


def test_change_sets_in_order_build_the_document() -> None:
    mirror = BuildMirror()

    outcomes = mirror.receive_all(history())

    assert [o.result for o in outcomes] == [Result.APPLIED] * 4
    assert mirror.documents == {BUILD: document(3)}
    assert mirror.sequence(BUILD) == 4
    assert mirror.gaps() == []


def test_a_duplicate_is_ignored() -> None:
    mirror = BuildMirror()
    events = history()
    mirror.receive_all(events[:2])

    outcome = mirror.receive(copy.deepcopy(events[1]))

    assert outcome.result is Result.DUPLICATE
    assert not outcome.changed
    assert mirror.document(BUILD) == document(1)


def test_out_of_order_change_sets_are_held_then_applied_when_the_hole_fills() -> None:
    mirror = BuildMirror()
    one, two, three, four = history()
    mirror.receive(one)

    held = [mirror.receive(four), mirror.receive(three)]

    assert [o.result for o in held] == [Result.GAP, Result.GAP]
    assert mirror.document(BUILD) == document(0)
    assert mirror.gaps() == [Gap(BUILD, have=1, got=3)]

    filled = mirror.receive(two)

    assert filled.result is Result.APPLIED
    assert filled.applied == (2, 3, 4)
    assert mirror.document(BUILD) == document(3)
    assert mirror.gaps() == []


def test_a_gap_is_reported_with_what_the_mirror_has_and_what_came() -> None:
    mirror = BuildMirror()

    outcome = mirror.receive(history()[2])

    assert (outcome.result, outcome.sequence, outcome.event_sequence) == (Result.GAP, 0, 3)
    assert mirror.document(BUILD) == {}
    assert mirror.gaps() == [Gap(BUILD, have=0, got=3)]


def test_a_snapshot_resets_the_build_and_later_changes_apply_on_top() -> None:
    mirror = BuildMirror()
    events = history()
    mirror.receive(events[0])

    reset = mirror.receive(snapshot(3))

    assert reset.result is Result.RESET
    assert mirror.document(BUILD) == document(2)
    assert mirror.sequence(BUILD) == 3
    assert mirror.receive(events[1]).result is Result.STALE
    assert mirror.receive(events[3]).result is Result.APPLIED
    assert mirror.document(BUILD) == document(3)


def test_a_snapshot_drops_held_changes_it_covers_and_applies_the_next_ones() -> None:
    mirror = BuildMirror()
    events = history()
    mirror.receive_all([events[0], events[2], events[3]])

    reset = mirror.receive(snapshot(2))

    assert reset.applied == (3, 4)
    assert mirror.document(BUILD) == document(3)
    assert mirror.gaps() == []


def test_an_older_snapshot_is_stale_and_changes_nothing() -> None:
    mirror = BuildMirror()
    mirror.receive_all(history())

    assert mirror.receive(snapshot(2)).result is Result.STALE
    assert mirror.document(BUILD) == document(3)


def test_the_snapshot_and_the_change_set_at_one_sequence_are_both_taken() -> None:
    mirror = BuildMirror()
    events = history()
    mirror.receive_all(events[:2])

    assert mirror.receive(snapshot(2)).result is Result.RESET
    assert mirror.receive(events[2]).result is Result.APPLIED


def test_reset_from_a_fetched_snapshot_clears_the_gap() -> None:
    mirror = BuildMirror()
    mirror.receive(history()[3])

    outcome = mirror.reset(BUILD, document(2), 3)

    assert outcome.applied == (4,)
    assert mirror.document(BUILD) == document(3)
    assert mirror.gaps() == []


def test_the_mirror_keeps_its_own_copy_of_a_snapshot() -> None:
    mirror = BuildMirror()
    event = snapshot(2)
    mirror.receive(event)

    event["data"]["document"]["status"] = "CHANGED BY CALLER"

    assert mirror.document(BUILD) == document(1)


def test_a_patch_that_does_not_apply_is_refused_and_changes_nothing() -> None:
    mirror = BuildMirror()
    first = history()[0]
    mirror.receive(first)
    bad = history()[1]
    bad["data"]["patch"] = [{"op": "replace", "path": "/stages/nope/status", "value": "X"}]

    with pytest.raises(InvalidEvent, match=r"b-1f2e:2 does not apply .* resync"):
        mirror.receive(bad)

    assert mirror.sequence(BUILD) == 1
    assert mirror.document(BUILD) == document(0)


def test_a_held_change_that_does_not_apply_is_dropped_and_leaves_a_gap() -> None:
    mirror = BuildMirror()
    events = history()
    events[2]["data"]["patch"] = [{"op": "remove", "path": "/nope"}]
    mirror.receive_all([events[0], events[2], events[3]])

    outcome = mirror.receive(events[1])

    assert outcome.applied == (2,)
    assert mirror.gaps() == [Gap(BUILD, have=2, got=4)]


def test_an_invalid_event_is_refused() -> None:
    event = history()[0]
    event["data"]["sequence"] = "1"

    with pytest.raises(InvalidEvent, match=r"data\.sequence"):
        BuildMirror().receive(event)


def test_an_unknown_event_type_is_ignored() -> None:
    event = {**history()[0], "type": "dev.airflow-bkci.build.archived"}

    assert BuildMirror().receive(event).result is Result.IGNORED


@given(order=st.permutations(range(4)), repeats=st.lists(st.integers(0, 3), max_size=4))
def test_any_arrival_order_with_resends_ends_at_the_senders_document(
    order: list[int], repeats: list[int]
) -> None:
    events = history()
    mirror = BuildMirror()

    for index in [*order, *repeats]:
        mirror.receive(copy.deepcopy(events[index]))

    assert mirror.document(BUILD) == document(3)
    assert mirror.sequence(BUILD) == 4
    assert mirror.gaps() == []


def test_parse_a_single_event() -> None:
    event = history()[0]

    parsed = parse_body(encode_event(event), f"{CONTENT_TYPE}; charset=utf-8")

    assert parsed == [event]


def test_parse_a_batch() -> None:
    events = history()

    assert parse_body(encode_batch(events), CONTENT_TYPE_BATCH) == events


def with_id_removed(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "id"}


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"{}", "application/json", "unsupported content type 'application/json'"),
        (b"\xff\xfe", CONTENT_TYPE, "not UTF-8 JSON"),
        (b"{not json", CONTENT_TYPE, "not UTF-8 JSON"),
        (encode_event(history()[0]), CONTENT_TYPE_BATCH, "must be a JSON array"),
        (b"[1]", CONTENT_TYPE_BATCH, r"batch\[0\] is not a JSON object"),
        (
            json.dumps([history()[0], with_id_removed(history()[1])]).encode(),
            CONTENT_TYPE_BATCH,
            r"batch\[1\] is not a CloudEvent 1.0: missing required attribute\(s\) id",
        ),
        (
            json.dumps({**history()[0], "specversion": "0.3"}).encode(),
            CONTENT_TYPE,
            "specversion",
        ),
        (json.dumps({**history()[0], "source": ""}).encode(), CONTENT_TYPE, "source"),
        (
            json.dumps({**history()[0], "time": "yesterday"}).encode(),
            CONTENT_TYPE,
            "not a CloudEvent",
        ),
        (
            json.dumps({**history()[0], "Bad-Ext": "x"}).encode(),
            CONTENT_TYPE,
            "lowercase letters and numbers",
        ),
    ],
)
def test_a_body_that_is_not_our_cloudevents_is_refused(
    body: bytes, content_type: str, reason: str
) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse_body(body, content_type)
