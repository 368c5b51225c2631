"""The build tree document: stages, progress, ungrouped and removed tasks."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from airflow_bkci.model.event import EventKey
from airflow_bkci.model.fsm import NodeState
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.model.tree import (
    UNGROUPED_STAGE,
    build_document,
    duration_ms,
    progress,
    stage_status,
)

S = BuildStatus
_seq = itertools.count(1)


def node(
    status: BuildStatus, try_number: int = 1, removed: bool = False, **values: Any
) -> NodeState:
    key = EventKey(0, try_number, 4, 0.0, "worker", next(_seq))
    return NodeState(status, key, removed=removed, fields={n: (v, key) for n, v in values.items()})


def doc(tasks: dict[str, NodeState], build: NodeState | None = None) -> dict[str, Any]:
    return build_document("b-1", "dag", "run", 3, build or node(S.RUNNING), tasks)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], S.QUEUE),
        ([S.QUEUE, S.QUEUE], S.QUEUE),
        ([S.QUEUE, S.SUCCEED], S.RUNNING),
        ([S.QUEUE, S.PREPARE_ENV], S.RUNNING),
        ([S.RETRY], S.RUNNING),
        ([S.RETRY, S.SUCCEED], S.RUNNING),
        ([S.FAILED, S.QUEUE], S.RUNNING),
        ([S.REVIEWING, S.FAILED], S.REVIEWING),
        ([S.REVIEWING, S.RUNNING], S.REVIEWING),
        ([S.SUCCEED, S.SUCCEED], S.SUCCEED),
        ([S.SUCCEED, S.SKIP], S.SUCCEED),
        ([S.SKIP, S.SKIP], S.SKIP),
        ([S.SUCCEED, S.FAILED, S.CANCELED, S.UNEXEC], S.FAILED),
        ([S.SUCCEED, S.CANCELED, S.UNEXEC], S.CANCELED),
        ([S.SUCCEED, S.UNEXEC, S.SKIP], S.UNEXEC),
    ],
)
def test_stage_status(statuses: list[BuildStatus], expected: BuildStatus) -> None:
    assert stage_status(statuses) is expected
    assert stage_status(reversed(statuses)) is expected


def test_progress_counts() -> None:
    finished = [S.SUCCEED, S.SUCCEED, S.FAILED, S.SKIP, S.UNEXEC, S.CANCELED]
    counts = progress([*finished, S.RUNNING, S.PREPARE_ENV, S.REVIEWING, S.QUEUE, S.RETRY])
    assert counts == {
        "total": 11,
        "finished": 6,
        "succeeded": 2,
        "failed": 1,
        "skipped": 1,
        "unexec": 1,
        "canceled": 1,
        "running": 3,
        "waiting": 2,
    }


@pytest.mark.parametrize("status", list(BuildStatus), ids=lambda s: s.value)
def test_progress_puts_every_status_in_one_bucket(status: BuildStatus) -> None:
    counts = progress([status])
    assert counts["finished"] + counts["running"] + counts["waiting"] == 1


def test_stages_in_dag_order_with_ungrouped_placed_by_its_first_task() -> None:
    tasks = {
        "start": node(S.SUCCEED, order=0),
        "extract.a": node(S.SUCCEED, order=1, stage="extract"),
        "extract.b": node(S.RUNNING, order=2, stage="extract"),
        "middle": node(S.QUEUE, order=3),
        "load.x": node(S.QUEUE, order=4, stage="load"),
    }
    d = doc(tasks)
    assert list(d["stages"]) == [UNGROUPED_STAGE, "extract", "load"]
    assert [s["order"] for s in d["stages"].values()] == [0, 1, 2]
    ungrouped = d["stages"][UNGROUPED_STAGE]
    assert ungrouped["name"] == "(ungrouped)"
    assert list(ungrouped["tasks"]) == ["start", "middle"]
    assert ungrouped["status"] == "RUNNING"
    assert d["stages"]["extract"]["status"] == "RUNNING"
    assert d["stages"]["load"]["status"] == "QUEUE"
    assert d["stages"]["extract"]["progress"]["finished"] == 1
    assert d["progress"]["total"] == 5


def test_ungrouped_stage_after_groups_when_its_first_task_comes_later() -> None:
    tasks = {"g.a": node(S.SUCCEED, order=0, stage="g"), "end": node(S.QUEUE, order=1)}
    assert list(doc(tasks)["stages"]) == ["g", UNGROUPED_STAGE]


def test_removed_tasks_leave_the_tree() -> None:
    tasks = {
        "kept": node(S.SUCCEED, order=0),
        "gone": node(S.UNEXEC, order=1, removed=True),
        "g.gone": node(S.FAILED, order=2, stage="g", removed=True),
    }
    d = doc(tasks)
    assert list(d["stages"]) == [UNGROUPED_STAGE]
    assert list(d["stages"][UNGROUPED_STAGE]["tasks"]) == ["kept"]
    assert d["progress"]["total"] == 1
    assert d["progress"]["failed"] == 0


def test_task_document() -> None:
    state = node(
        S.FAILED,
        try_number=2,
        operator="BashOperator",
        host="h1",
        started_at="2025-01-01T00:00:00+00:00",
        ended_at="2025-01-01T00:00:01.250000+00:00",
        error="boom",
        clear_number=1,
    )
    task = doc({"t": state})["stages"][UNGROUPED_STAGE]["tasks"]["t"]
    assert task["status"] == "FAILED"
    assert (task["task_id"], task["map_index"]) == ("t", -1)
    assert (task["try_number"], task["execute_count"]) == (2, 2)
    assert (task["operator"], task["host"], task["error"]) == ("BashOperator", "h1", "boom")
    assert task["duration_ms"] == 1250


def test_mapped_task_ids() -> None:
    tasks = {"m[2]": node(S.RUNNING, order=0), "m[10]": node(S.SUCCEED, order=0)}
    rendered = doc(tasks)["stages"][UNGROUPED_STAGE]["tasks"]
    assert (rendered["m[2]"]["task_id"], rendered["m[2]"]["map_index"]) == ("m", 2)
    assert (rendered["m[10]"]["task_id"], rendered["m[10]"]["map_index"]) == ("m", 10)


@pytest.mark.parametrize(
    ("started", "ended", "expected"),
    [
        ("2025-01-01T00:00:00+00:00", "2025-01-01T00:01:00+00:00", 60_000),
        ("2025-01-01T00:00:00+00:00", "2025-01-01T01:00:00+01:00", 0),  # same instant
        ("2025-01-01T00:00:05+00:00", "2025-01-01T00:00:00+00:00", 0),  # clocks disagree
        (None, "2025-01-01T00:00:00+00:00", None),
        ("2025-01-01T00:00:00+00:00", None, None),
    ],
)
def test_duration_ms(started: str | None, ended: str | None, expected: int | None) -> None:
    assert duration_ms(started, ended) == expected


def test_build_document() -> None:
    build = node(
        S.SUCCEED,
        run_type="manual",
        triggering_user="alice",
        started_at="2025-01-01T00:00:00+00:00",
        ended_at="2025-01-01T00:00:02+00:00",
    )
    d = doc({"t": node(S.SUCCEED)}, build)
    assert (d["id"], d["pipeline_id"], d["run_id"], d["build_num"]) == ("b-1", "dag", "run", 3)
    assert (d["status"], d["run_type"], d["triggering_user"]) == ("SUCCEED", "manual", "alice")
    assert d["duration_ms"] == 2000
    assert d["execute_count"] == 1
    assert d["progress"]["succeeded"] == 1


def test_mapped_placeholder_leaves_the_tree_once_expanded():
    from datetime import datetime, timezone

    from airflow_bkci.model.event import NodeRef, StatusEvent
    from airflow_bkci.model.fsm import apply as fold_one

    def state(map_index: int) -> object:
        event = StatusEvent(
            node=NodeRef("d", "r", "package", map_index),
            status=BuildStatus.QUEUE,
            clear_number=0,
            try_number=1,
            source="s",
            seq=1,
            at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        )
        return fold_one(None, event)[0]

    tasks = {"package": state(-1), "package[0]": state(0), "package[1]": state(1)}
    doc = build_document("b", "d", "r", 1, state(-1), tasks)
    shown = {tid for st in doc["stages"].values() for tid in st["tasks"]}
    assert shown == {"package[0]", "package[1]"}
    assert doc["progress"]["total"] == 2
