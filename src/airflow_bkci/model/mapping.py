"""Airflow states onto BK-CI statuses: the one module of model/ that imports Airflow.

Both tables are exhaustive; ``tests/unit/model/test_mapping.py`` walks
Airflow's enums so that a state added by a new Airflow release fails loudly
instead of being reported as something it is not.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow.utils.state import DagRunState, TaskInstanceState

from airflow_bkci.model.status import BuildStatus, Rank

S = BuildStatus


@dataclass(frozen=True, slots=True)
class Mapped:
    """What one Airflow state means here."""

    status: BuildStatus | None
    rank: Rank
    detail: str | None = None
    removed: bool = False


TASK_STATES: dict[TaskInstanceState | None, Mapped] = {
    None: Mapped(S.QUEUE, Rank.PENDING, "pending"),
    TaskInstanceState.SCHEDULED: Mapped(S.QUEUE, Rank.SCHEDULED),
    TaskInstanceState.QUEUED: Mapped(S.PREPARE_ENV, Rank.QUEUED),
    TaskInstanceState.RUNNING: Mapped(S.RUNNING, Rank.RUNNING),
    TaskInstanceState.RESTARTING: Mapped(S.RUNNING, Rank.RUNNING, "restarting"),
    TaskInstanceState.DEFERRED: Mapped(S.RUNNING, Rank.RUNNING, "deferred"),
    TaskInstanceState.UP_FOR_RESCHEDULE: Mapped(S.RUNNING, Rank.RUNNING, "up_for_reschedule"),
    TaskInstanceState.AWAITING_INPUT: Mapped(S.REVIEWING, Rank.RUNNING),
    TaskInstanceState.UP_FOR_RETRY: Mapped(S.RETRY, Rank.FINISHED),
    TaskInstanceState.SUCCESS: Mapped(S.SUCCEED, Rank.FINISHED),
    TaskInstanceState.FAILED: Mapped(S.FAILED, Rank.FINISHED),
    TaskInstanceState.SKIPPED: Mapped(S.SKIP, Rank.FINISHED),
    TaskInstanceState.UPSTREAM_FAILED: Mapped(S.UNEXEC, Rank.FINISHED, "upstream_failed"),
    TaskInstanceState.REMOVED: Mapped(None, Rank.FINISHED, "removed", removed=True),
}

RESUMING = Mapped(S.RUNNING, Rank.RUNNING, "resuming")
"""A scheduled or queued task that already ran in this try (after deferral or
reschedule): a sub-state of RUNNING, so the loop never looks like a regression."""

RUN_STATES: dict[DagRunState, Mapped] = {
    DagRunState.QUEUED: Mapped(S.QUEUE, Rank.SCHEDULED),
    DagRunState.RUNNING: Mapped(S.RUNNING, Rank.RUNNING),
    DagRunState.SUCCESS: Mapped(S.SUCCEED, Rank.FINISHED),
    DagRunState.FAILED: Mapped(S.FAILED, Rank.FINISHED),
}


def map_task_state(state: str | None, *, resuming: bool = False) -> Mapped:
    """Map a task-instance state (enum, its value, or None).

    ``resuming`` says the task already ran in this try, so scheduled/queued
    are the way back from a deferral or reschedule.
    """
    ti_state = TaskInstanceState(state) if state is not None else None
    if resuming and ti_state in (TaskInstanceState.SCHEDULED, TaskInstanceState.QUEUED):
        return RESUMING
    return TASK_STATES[ti_state]


def map_run_state(state: str) -> Mapped:
    """Map a DAG-run state (enum or its value)."""
    return RUN_STATES[DagRunState(state)]


def canceled_task(state: str | None) -> Mapped:
    """What a task try ended by a cancel reports, whatever Airflow's row says.

    The cancel turns running-like tasks to failed and never-started ones to
    skipped, as Airflow's mark-failed does; both were canceled.
    """
    started = state == TaskInstanceState.FAILED.value
    return Mapped(S.CANCELED, Rank.CANCELED, "canceled" if started else "canceled before start")
