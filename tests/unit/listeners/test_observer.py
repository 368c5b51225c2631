"""The observer turns snapshots of Airflow rows into the events a user expects."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from airflow_bkci.listeners.observer import Observer, observe_all
from airflow_bkci.listeners.rows import RunRow, TaskRow
from airflow_bkci.model.fsm import apply
from airflow_bkci.model.layout import TaskPlace
from airflow_bkci.model.status import BuildStatus

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


RUN = RunRow(
    "etl", "manual__1", "running", 0, "manual", "rest_api", "alice", None, at(0), at(0), at(1), None
)
TASK = TaskRow(
    "etl",
    "manual__1",
    "extract",
    -1,
    None,
    0,
    1,
    None,
    None,
    None,
    None,
    None,
    "default",
    "default_pool",
    "PythonOperator",
)


def fold(events):
    state = None
    for event in events:
        state, _ = apply(state, event)
    return state


def test_new_task_is_queued_for_its_first_try():
    events = Observer("s").observe_task(TASK, 0, None)
    assert [(e.status, e.try_number, e.detail) for e in events] == [
        (BuildStatus.QUEUE, 1, "pending")
    ]


def test_missed_short_states_are_backfilled_with_airflow_times():
    row = replace(
        TASK,
        state="running",
        try_number=1,
        scheduled_dttm=at(2),
        queued_dttm=at(2.1),
        start_date=at(2.3),
        hostname="worker-1",
    )
    events = Observer("s").observe_task(row, 0, None)
    assert [(e.status, e.at) for e in events] == [
        (BuildStatus.QUEUE, at(2)),
        (BuildStatus.PREPARE_ENV, at(2.1)),
        (BuildStatus.RUNNING, at(2.3)),
    ]


def test_unchanged_row_emits_nothing_and_changes_emit_once():
    observer = Observer("s")
    row = replace(TASK, state="queued", try_number=1, scheduled_dttm=at(2), queued_dttm=at(3))
    assert len(observer.observe_task(row, 0, None)) == 2
    assert observer.observe_task(row, 0, None) == []
    running = replace(row, state="running", start_date=at(4), hostname="w")
    assert [e.status for e in observer.observe_task(running, 0, None)] == [BuildStatus.RUNNING]


def test_earlier_tries_come_from_history_when_missed():
    old = replace(
        TASK,
        state="failed",  # what task_instance_history keeps for a try that was retried
        try_number=1,
        scheduled_dttm=at(1),
        queued_dttm=at(1.1),
        start_date=at(1.2),
        end_date=at(2),
        hostname="w",
    )
    now = replace(
        TASK,
        state="success",
        try_number=2,
        scheduled_dttm=at(4),
        queued_dttm=at(4.1),
        start_date=at(4.2),
        end_date=at(5),
        hostname="w",
    )
    events = Observer("s").observe_task(now, 0, None, history=lambda row, below: [old])
    assert [(e.try_number, e.status) for e in events] == [
        (1, BuildStatus.QUEUE),
        (1, BuildStatus.PREPARE_ENV),
        (1, BuildStatus.RUNNING),
        (1, BuildStatus.RETRY),
        (2, BuildStatus.QUEUE),
        (2, BuildStatus.PREPARE_ENV),
        (2, BuildStatus.RUNNING),
        (2, BuildStatus.SUCCEED),
    ]
    state = fold(events)
    assert state.status is BuildStatus.SUCCEED and state.key.try_number == 2


def test_deferral_loop_stays_running_and_ends_succeeded():
    observer = Observer("s")
    running = replace(TASK, state="running", try_number=1, start_date=at(1), hostname="w")
    deferred = replace(running, state="deferred")
    resumed = replace(running, state="scheduled", resuming=True, scheduled_dttm=at(9))
    running_again = replace(running, hostname="w2")
    done = replace(running_again, state="success", end_date=at(12))
    statuses = []
    state = None
    for row in (running, deferred, resumed, running_again, done):
        for event in observer.observe_task(row, 0, None):
            state, _ = apply(state, event)
            statuses.append((state.status, state.detail))
    assert statuses == [
        (BuildStatus.RUNNING, None),
        (BuildStatus.RUNNING, "deferred"),
        (BuildStatus.RUNNING, "resuming"),
        (BuildStatus.RUNNING, None),
        (BuildStatus.SUCCEED, None),
    ]


def test_branch_skip_without_host_has_no_running_step():
    row = replace(TASK, state="skipped", try_number=1, start_date=at(3), end_date=at(3))
    events = Observer("s").observe_task(row, 0, None)
    assert [e.status for e in events] == [BuildStatus.SKIP]


def test_run_events_and_stage_placement():
    observer = Observer("s")
    place = TaskPlace(stage="build", stage_name="Build", order=3, operator="BashOperator")
    row = replace(TASK, state="running", try_number=1, start_date=at(2), hostname="w")
    events = observe_all(observer, [RUN], [row], lambda run: {"extract": place})
    assert events[0].node.is_build and events[0].status is BuildStatus.RUNNING
    assert events[0].fields["triggering_user"] == "alice"
    assert events[-1].fields["stage"] == "build" and events[-1].fields["order"] == 3
    assert observe_all(observer, [RUN], [row], lambda run: {}) == []


def test_cleared_task_waits_for_a_new_try_and_reopens():
    done = replace(
        TASK, state="failed", try_number=1, start_date=at(1), end_date=at(2), hostname="w"
    )
    observer = Observer("s")
    events = observer.observe_task(done, 0, None)
    assert fold(events).status is BuildStatus.FAILED
    # a clear sets the state to None and keeps try_number until it is scheduled
    events += observer.observe_task(replace(done, state=None, end_date=None), 1, None)
    state = fold(events)
    assert state.status is BuildStatus.QUEUE and state.detail == "pending"
    assert state.key.try_number == 2


def test_task_that_never_ran_ends_unexec_after_pending():
    observer = Observer("s")
    events = observer.observe_task(TASK, 0, None)
    events += observer.observe_task(replace(TASK, state="upstream_failed"), 0, None)
    state = fold(events)
    assert state.status is BuildStatus.UNEXEC and state.key.try_number == 1


def test_cleared_task_that_ends_without_running_takes_the_new_try():
    observer = Observer("s")
    done = replace(
        TASK, state="success", try_number=1, start_date=at(1), end_date=at(2), hostname="w"
    )
    events = observer.observe_task(done, 0, None)
    events += observer.observe_task(replace(done, state=None, end_date=None), 1, None)
    events += observer.observe_task(
        replace(done, state="upstream_failed", try_closed=True), 1, None
    )
    state = fold(events)
    assert state.status is BuildStatus.UNEXEC and state.key.try_number == 2


def test_history_keeps_a_real_failure_that_was_cleared():
    failed = replace(
        TASK,
        state="failed",
        try_number=1,
        max_tries=0,
        start_date=at(1),
        end_date=at(2),
        hostname="w",
    )
    now = replace(TASK, state="running", try_number=2, max_tries=1, start_date=at(5), hostname="w")
    events = Observer("s").observe_task(now, 1, None, history=lambda row, below: [failed])
    assert [(e.try_number, e.status) for e in events if e.try_number == 1][-1] == (
        1,
        BuildStatus.FAILED,
    )
