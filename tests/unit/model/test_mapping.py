"""Airflow states onto BK-CI statuses: exhaustive over Airflow's own enums."""

from __future__ import annotations

import pytest
from airflow.utils.state import DagRunState, TaskInstanceState

from airflow_bkci.model.mapping import (
    RESUMING,
    RUN_STATES,
    TASK_STATES,
    Mapped,
    map_run_state,
    map_task_state,
)
from airflow_bkci.model.status import STATUS_RANK, BuildStatus, Rank

S = BuildStatus
TI = TaskInstanceState

# What each Airflow task state means here; None is a task with no state yet.
# A new Airflow state fails test_every_task_state_maps until a row is added.
EXPECTED_TASK: dict[TaskInstanceState | None, tuple[BuildStatus | None, Rank, str | None]] = {
    None: (S.QUEUE, Rank.PENDING, "pending"),
    TI.SCHEDULED: (S.QUEUE, Rank.SCHEDULED, None),
    TI.QUEUED: (S.PREPARE_ENV, Rank.QUEUED, None),
    TI.RUNNING: (S.RUNNING, Rank.RUNNING, None),
    TI.RESTARTING: (S.RUNNING, Rank.RUNNING, "restarting"),
    TI.DEFERRED: (S.RUNNING, Rank.RUNNING, "deferred"),
    TI.UP_FOR_RESCHEDULE: (S.RUNNING, Rank.RUNNING, "up_for_reschedule"),
    TI.AWAITING_INPUT: (S.REVIEWING, Rank.RUNNING, None),
    TI.UP_FOR_RETRY: (S.RETRY, Rank.FINISHED, None),
    TI.SUCCESS: (S.SUCCEED, Rank.FINISHED, None),
    TI.FAILED: (S.FAILED, Rank.FINISHED, None),
    TI.SKIPPED: (S.SKIP, Rank.FINISHED, None),
    TI.UPSTREAM_FAILED: (S.UNEXEC, Rank.FINISHED, "upstream_failed"),
    TI.REMOVED: (None, Rank.FINISHED, "removed"),
}

EXPECTED_RUN = {
    DagRunState.QUEUED: (S.QUEUE, Rank.SCHEDULED),
    DagRunState.RUNNING: (S.RUNNING, Rank.RUNNING),
    DagRunState.SUCCESS: (S.SUCCEED, Rank.FINISHED),
    DagRunState.FAILED: (S.FAILED, Rank.FINISHED),
}

ALL_TASK_STATES: list[TaskInstanceState | None] = [None, *TaskInstanceState]


def _id(state: object) -> str:
    return "none" if state is None else str(getattr(state, "value", state))


def test_every_task_state_maps() -> None:
    missing = [s for s in ALL_TASK_STATES if s not in TASK_STATES]
    assert not missing, f"Airflow task states without a BK-CI mapping: {missing}"
    assert set(TASK_STATES) == set(ALL_TASK_STATES)
    assert set(EXPECTED_TASK) == set(ALL_TASK_STATES)


def test_every_run_state_maps() -> None:
    missing = [s for s in DagRunState if s not in RUN_STATES]
    assert not missing, f"Airflow DAG-run states without a BK-CI mapping: {missing}"
    assert set(EXPECTED_RUN) == set(DagRunState)


@pytest.mark.parametrize("state", ALL_TASK_STATES, ids=_id)
def test_task_state_meaning(state: TaskInstanceState | None) -> None:
    mapped = map_task_state(state)
    assert (mapped.status, mapped.rank, mapped.detail) == EXPECTED_TASK[state]
    assert mapped.removed is (state is TI.REMOVED)


@pytest.mark.parametrize("state", ALL_TASK_STATES, ids=_id)
def test_task_state_by_value(state: TaskInstanceState | None) -> None:
    raw = None if state is None else state.value
    assert map_task_state(raw) == map_task_state(state)


@pytest.mark.parametrize("state", ALL_TASK_STATES, ids=_id)
def test_explicit_rank_agrees_with_the_status(state: TaskInstanceState | None) -> None:
    mapped = map_task_state(state)
    if mapped.status is not None and state is not None:
        assert mapped.rank is STATUS_RANK[mapped.status]


@pytest.mark.parametrize("state", list(DagRunState), ids=_id)
def test_run_state_meaning(state: DagRunState) -> None:
    mapped = map_run_state(state)
    assert (mapped.status, mapped.rank) == EXPECTED_RUN[state]
    assert map_run_state(state.value) == mapped
    assert mapped.detail is None
    assert not mapped.removed


@pytest.mark.parametrize("state", [TI.SCHEDULED, TI.QUEUED, "scheduled", "queued"], ids=_id)
def test_resuming_after_deferral_stays_running(state: str) -> None:
    mapped = map_task_state(state, resuming=True)
    assert mapped == Mapped(S.RUNNING, Rank.RUNNING, "resuming")
    assert mapped is RESUMING


@pytest.mark.parametrize(
    "state", [s for s in ALL_TASK_STATES if s not in (TI.SCHEDULED, TI.QUEUED)], ids=_id
)
def test_resuming_changes_only_scheduled_and_queued(state: TaskInstanceState | None) -> None:
    assert map_task_state(state, resuming=True) == map_task_state(state)


def test_specific_meanings() -> None:
    assert map_task_state("awaiting_input").status is S.REVIEWING
    assert map_task_state("deferred") == Mapped(S.RUNNING, Rank.RUNNING, "deferred")
    assert map_task_state("up_for_reschedule") == Mapped(
        S.RUNNING, Rank.RUNNING, "up_for_reschedule"
    )
    assert map_task_state("upstream_failed").status is S.UNEXEC
    assert map_task_state("up_for_retry").status is S.RETRY
    assert map_task_state("removed") == Mapped(None, Rank.FINISHED, "removed", removed=True)


def test_unknown_state_is_rejected() -> None:
    with pytest.raises(ValueError, match="no_such_state"):
        map_task_state("no_such_state")
    with pytest.raises(ValueError, match="no_such_state"):
        map_run_state("no_such_state")
