"""Turns successive snapshots of Airflow's rows into status events.

The observer remembers, per run and per task instance, what it already
reported, and emits only changes. For a task it also backfills the states
that were too short to see by polling (scheduled and queued often last under
150 ms) from the times Airflow keeps on the row, and earlier tries from
``task_instance_history``.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow_bkci.listeners.rows import RunRow, TaskRow
from airflow_bkci.model.event import NodeRef, StatusEvent, utcnow
from airflow_bkci.model.layout import TaskPlace
from airflow_bkci.model.mapping import Mapped, canceled_task, map_run_state, map_task_state
from airflow_bkci.model.status import BuildStatus, Rank

HistoryLoader = Callable[[TaskRow, int], list[TaskRow]]
"""Returns the history rows (earlier tries) of a task instance below a try."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def default_source(role: str) -> str:
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


NEVER_RAN = frozenset({"upstream_failed", "skipped", "removed"})


def effective_try(row: TaskRow) -> int:
    """The try a row's state belongs to.

    Airflow raises try_number only when it schedules a task, so a task waiting
    with no state waits for try_number + 1, and so does a cleared task that
    ends without running (its old try is in task_instance_history already).
    A task that never ran in a fresh run has try_number 0: that is try 1.
    """
    if row.state is None or (row.state in NEVER_RAN and row.try_closed):
        return row.try_number + 1
    return max(row.try_number, 1)


def history_state(old: TaskRow) -> str | None:
    """The state an earlier try really ended in.

    task_instance_history stores ``failed`` for a try that ended up_for_retry
    (up_for_retry is not a "finished" state to Airflow); a failed try with
    tries left was a retry.
    """
    if old.state == "failed" and old.max_tries is not None and old.try_number <= old.max_tries:
        return "up_for_retry"
    return old.state


@dataclass(slots=True)
class _Seen:
    signature: tuple[Any, ...]
    try_number: int
    rank: int


class Observer:
    """Diffs snapshots against what was reported before and emits events."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._seq = itertools.count(1)
        self._runs: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._tasks: dict[tuple[str, str, str, int], _Seen] = {}
        self._last_at = utcnow()

    def forget(self) -> None:
        """Report everything again on the next snapshot (after a lost queue)."""
        self._runs.clear()
        self._tasks.clear()

    def forget_run(self, dag_id: str, run_id: str) -> None:
        self._runs.pop((dag_id, run_id), None)
        for key in [k for k in self._tasks if k[0] == dag_id and k[1] == run_id]:
            del self._tasks[key]

    def _now(self) -> datetime:
        # Observation times of this source never go backwards (EventKey's rule).
        self._last_at = max(self._last_at, utcnow())
        return self._last_at

    def _event(
        self,
        node: NodeRef,
        status: BuildStatus | None,
        rank: Rank,
        at: datetime,
        clear: int,
        try_number: int,
        state: str | None,
        detail: str | None,
        fields: dict[str, Any],
        removed: bool = False,
    ) -> StatusEvent:
        return StatusEvent(
            node=node,
            status=status,
            clear_number=clear,
            try_number=try_number,
            source=self.source,
            seq=next(self._seq),
            at=at,
            airflow_state=state,
            detail=detail,
            rank=rank,
            removed=removed,
            fields=fields,
        )

    # ----------------------------------------------------------------- runs
    def observe_run(self, run: RunRow) -> list[StatusEvent]:
        signature = (
            run.state,
            run.clear_number,
            run.start_date,
            run.end_date,
            run.note,
            run.canceled,
        )
        key = (run.dag_id, run.run_id)
        if self._runs.get(key) == signature or run.state is None:
            return []
        self._runs[key] = signature
        mapped = map_run_state(run.state)
        if run.canceled is not None:
            # CANCELED as soon as the cancel commits, teardowns still running or not
            mapped = Mapped(BuildStatus.CANCELED, Rank.CANCELED, "canceled")
        at = {
            Rank.SCHEDULED: run.queued_at,
            Rank.RUNNING: run.start_date,
            Rank.FINISHED: run.end_date,
            Rank.CANCELED: run.canceled.canceled_at if run.canceled else None,
        }.get(mapped.rank) or self._now()
        fields: dict[str, Any] = {
            "run_type": run.run_type,
            "trigger_type": run.triggered_by,
            "triggering_user": run.triggering_user,
            "logical_date": _iso(run.logical_date),
            "run_after": _iso(run.run_after),
            "queued_at": _iso(run.queued_at),
            "started_at": _iso(run.start_date),
            "ended_at": _iso(run.end_date),
            "note": run.note,
        }
        if run.conf is not None:
            # For the store's conf column only (never the document). Not in the
            # signature: a run's conf does not change, so it never makes an event.
            fields["conf"] = run.conf
        if run.canceled is not None:
            fields.update(
                cancel_reason=run.canceled.reason,
                canceled_by=run.canceled.canceled_by,
                cancel_id=run.canceled.cancel_id,
            )
        node = NodeRef(run.dag_id, run.run_id)
        return [
            self._event(
                node,
                mapped.status,
                mapped.rank,
                at,
                run.clear_number,
                0,
                run.state,
                mapped.detail,
                fields,
            )
        ]

    # ---------------------------------------------------------------- tasks
    def observe_task(
        self,
        row: TaskRow,
        clear_number: int,
        place: TaskPlace | None,
        history: HistoryLoader | None = None,
    ) -> list[StatusEvent]:
        signature = (
            row.state,
            row.try_number,
            row.resuming,
            row.hostname,
            row.start_date,
            row.end_date,
            row.queued_dttm,
            row.scheduled_dttm,
            row.canceled,
        )
        seen = self._tasks.get(row.ti_key)
        if seen is not None and seen.signature == signature:
            return []
        mapped = map_task_state(row.state, resuming=row.resuming)
        if row.canceled and mapped.rank is Rank.FINISHED:
            mapped = canceled_task(row.state)
        try_number = effective_try(row)
        events: list[StatusEvent] = []
        if history is not None and try_number > 1:
            events.extend(self._earlier_tries(row, try_number, clear_number, place, seen, history))
        floor = seen.rank if seen is not None and seen.try_number == try_number else -1
        events.extend(self._backfill(row, try_number, clear_number, mapped.rank, floor))
        at = self._state_time(row, mapped.rank, first=floor < int(Rank.RUNNING))
        node = NodeRef(row.dag_id, row.run_id, row.task_id, row.map_index)
        events.append(
            self._event(
                node,
                mapped.status,
                mapped.rank,
                at,
                clear_number,
                try_number,
                row.state,
                mapped.detail,
                self._fields(row, place),
                removed=mapped.removed,
            )
        )
        self._tasks[row.ti_key] = _Seen(signature, try_number, int(mapped.rank))
        return events

    def _state_time(self, row: TaskRow, rank: Rank, *, first: bool) -> datetime:
        if rank.is_final and row.end_date is not None:
            return row.end_date
        if rank is Rank.RUNNING and first and row.start_date is not None and not row.resuming:
            return row.start_date
        if rank is Rank.QUEUED and row.queued_dttm is not None:
            return row.queued_dttm
        if rank is Rank.SCHEDULED and row.scheduled_dttm is not None:
            return row.scheduled_dttm
        return self._now()  # sub-states of RUNNING carry no time of their own in the row

    def _fields(self, row: TaskRow, place: TaskPlace | None) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "task_id": row.task_id,
            "map_index": row.map_index,
            "host": row.hostname or None,
            "queue": row.queue,
            "pool": row.pool,
            "scheduled_at": _iso(row.scheduled_dttm),
            "queued_at": _iso(row.queued_dttm),
            "started_at": _iso(row.start_date),
            "ended_at": _iso(row.end_date),
            "max_tries": row.max_tries,
            "executor": row.executor,
        }
        if row.label:
            fields["label"] = row.label
        if place is not None:
            fields.update(
                stage=place.stage,
                stage_name=place.stage_name,
                order=place.order,
                operator=row.operator or place.operator,
            )
        elif row.operator:
            fields["operator"] = row.operator
        return fields

    def _backfill(
        self, row: TaskRow, try_number: int, clear: int, rank: Rank, floor: int
    ) -> Iterator[StatusEvent]:
        """Short states of the current try that polling may have missed."""
        if row.resuming or row.state is None:
            return
        node = NodeRef(row.dag_id, row.run_id, row.task_id, row.map_index)
        ran = bool(row.hostname)
        steps = (
            (Rank.SCHEDULED, BuildStatus.QUEUE, "scheduled", row.scheduled_dttm),
            (Rank.QUEUED, BuildStatus.PREPARE_ENV, "queued", row.queued_dttm),
            (Rank.RUNNING, BuildStatus.RUNNING, "running", row.start_date if ran else None),
        )
        for step_rank, status, state, at in steps:
            if floor < step_rank < rank and at is not None:
                yield self._event(
                    node,
                    status,
                    step_rank,
                    at,
                    clear,
                    try_number,
                    state,
                    None,
                    {"task_id": row.task_id, "map_index": row.map_index},
                )

    def _earlier_tries(
        self,
        row: TaskRow,
        try_number: int,
        clear: int,
        place: TaskPlace | None,
        seen: _Seen | None,
        history: HistoryLoader,
    ) -> Iterator[StatusEvent]:
        done_below = 1
        if seen is not None:
            done_below = seen.try_number + (1 if seen.rank >= Rank.FINISHED else 0)
        if done_below >= try_number:
            return
        for old in history(row, try_number):
            if not done_below <= old.try_number < try_number:
                continue
            mapped = map_task_state(history_state(old))
            rank = mapped.rank if mapped.rank is Rank.FINISHED else Rank.FINISHED
            status = mapped.status if mapped.rank is Rank.FINISHED else BuildStatus.FAILED
            node = NodeRef(row.dag_id, row.run_id, row.task_id, row.map_index)
            yield from self._backfill(old, old.try_number, clear, rank, -1)
            yield self._event(
                node,
                status,
                rank,
                old.end_date or old.start_date or self._now(),
                clear,
                old.try_number,
                old.state,
                mapped.detail,
                self._fields(old, place),
                removed=mapped.removed,
            )


def observe_all(
    observer: Observer,
    runs: Iterable[RunRow],
    tasks: Iterable[TaskRow],
    places: Callable[[RunRow], dict[str, TaskPlace]],
    history: HistoryLoader | None = None,
) -> list[StatusEvent]:
    """One reconcile pass: run events first, then their tasks'."""
    by_run = {(r.dag_id, r.run_id): r for r in runs}
    events: list[StatusEvent] = []
    for run in by_run.values():
        events.extend(observer.observe_run(run))
    for row in tasks:
        owner = by_run.get((row.dag_id, row.run_id))
        if owner is None:
            continue
        place = places(owner).get(row.task_id)
        events.extend(observer.observe_task(row, owner.clear_number, place, history))
    return events
