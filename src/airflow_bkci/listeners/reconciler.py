"""Scheduler-side reconciler: reads Airflow's database and reports every change.

Airflow's database is the only place that sees every state on every executor,
including the ones no hook reports (scheduled, queued, up_for_retry,
upstream_failed, trigger-rule skips). This thread reads it on a session of its
own engine (never the scheduler's), turns rows into events with
:class:`~airflow_bkci.listeners.observer.Observer` and hands them to the sink.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, Text, and_, cast, create_engine, or_, select
from sqlalchemy.orm import Session
from tenacity import wait_exponential_jitter

from airflow_bkci.forksafe import sqlite_section
from airflow_bkci.listeners.background import BackgroundLoop
from airflow_bkci.listeners.observer import NEVER_RAN, Observer, observe_all
from airflow_bkci.listeners.rows import CancelMark, RunRow, TaskRow, kept_conf
from airflow_bkci.listeners.sink import EventSink
from airflow_bkci.model.event import utcnow
from airflow_bkci.model.layout import TaskPlace, dag_layout
from airflow_bkci.spool.forwarder import backoff_delay

log = logging.getLogger(__name__)

_CATCH_UP_BACKOFF = wait_exponential_jitter(multiplier=0.5, max=5.0, jitter=0.5)


@dataclass(frozen=True)
class CatchUp:
    """Where the store left off: builds it has as unfinished, and its last change."""

    unfinished: Sequence[tuple[str, str]]
    last_update: datetime | None


CatchUpReader = Callable[[], CatchUp]


class AirflowReader:
    """The queries the reconciler needs, on an engine of its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._layouts: dict[str, dict[str, TaskPlace]] = {}
        # kept_conf() of the runs of the last pass, by dag_run.id: a conf never
        # changes (a clear keeps it), so each run's is read once, not every pass.
        self._confs: dict[int, dict[str, Any] | None] = {}

    @classmethod
    def from_airflow(cls) -> AirflowReader:
        from airflow import settings

        assert settings.engine is not None, "Airflow's ORM is not configured in this process"
        return cls(
            create_engine(settings.engine.url, pool_size=1, max_overflow=1, pool_pre_ping=True)
        )

    def runs(self, since: datetime, extra: Sequence[tuple[str, str]] = ()) -> list[RunRow]:
        from airflow.models.dagrun import DagRun, DagRunNote

        from airflow_bkci.cancel.marks import cancel_table, ensure_tables

        ensure_tables(self.engine)
        mark = cancel_table.c

        wanted = or_(DagRun.state.in_(("queued", "running")), DagRun.end_date >= since)
        if extra:
            wanted = or_(
                wanted, *(and_(DagRun.dag_id == d, DagRun.run_id == r) for d, r in extra[:500])
            )
        stmt = (
            select(
                DagRun.dag_id,
                DagRun.run_id,
                DagRun.state,
                DagRun.clear_number,
                DagRun.run_type,
                DagRun.triggered_by,
                DagRun.triggering_user_name,
                DagRun.logical_date,
                DagRun.run_after,
                DagRun.queued_at,
                DagRun.start_date,
                DagRun.end_date,
                DagRunNote.content,
                DagRun.created_dag_version_id,
                mark.cancel_id,
                mark.reason,
                mark.canceled_by,
                mark.canceled_at,
                DagRun.id,
            )
            .outerjoin(DagRunNote, DagRunNote.dag_run_id == DagRun.id)
            .outerjoin(
                cancel_table,
                and_(mark.dag_run_id == DagRun.id, mark.clear_number == DagRun.clear_number),
            )
            .where(wanted)
        )
        with sqlite_section(self.engine.url), Session(self.engine) as session:
            found = list(session.execute(stmt))
            confs = self._run_confs(session, [r[18] for r in found])
            return [
                RunRow(
                    r[0],
                    r[1],
                    _str(r[2]),
                    r[3] or 0,
                    _str(r[4]),
                    _str(r[5]),
                    r[6],
                    r[7],
                    r[8],
                    r[9],
                    r[10],
                    r[11],
                    r[12],
                    r[13],
                    CancelMark(r[14], r[15], r[16], r[17]) if r[14] is not None else None,
                    conf=confs.get(r[18]),
                )
                for r in found
            ]

    def _run_confs(self, session: Session, ids: Sequence[int]) -> dict[int, dict[str, Any] | None]:
        """kept_conf() of each run, read only for runs the last pass did not have."""
        from airflow.models.dagrun import DagRun

        known = {i: self._confs[i] for i in ids if i in self._confs}
        new = sorted(set(ids) - known.keys())
        for start in range(0, len(new), 500):
            # As text, parsed here: one unreadable conf must not fail the whole pass.
            stmt = select(DagRun.id, DagRun.dag_id, DagRun.run_id, cast(DagRun.conf, Text)).where(
                DagRun.id.in_(new[start : start + 500])
            )
            for run_pk, dag_id, run_id, text in session.execute(stmt):
                try:
                    conf = json.loads(text) if text else None
                except ValueError:
                    log.debug("bkci: conf of %s/%s is not JSON; not kept", dag_id, run_id)
                    conf = None
                known[run_pk] = kept_conf(conf, dag_id, run_id)
        self._confs = known  # runs that left the passes leave the cache
        return known

    def tasks(self, runs: Sequence[RunRow]) -> list[TaskRow]:
        from airflow.models.taskinstance import TaskInstance as TI
        from airflow.models.taskreschedule import TaskReschedule

        from airflow_bkci.cancel.marks import canceled_tasks

        by_dag: dict[str, list[str]] = {}
        for run in runs:
            by_dag.setdefault(run.dag_id, []).append(run.run_id)
        rows: list[TaskRow] = []
        with sqlite_section(self.engine.url), Session(self.engine) as session:
            # Which task tries a cancel ended: only read for runs that carry a marker.
            killed = canceled_tasks(
                session, [r.canceled.cancel_id for r in runs if r.canceled is not None]
            )
            for dag_id, run_ids in by_dag.items():
                for start in range(0, len(run_ids), 500):
                    chunk = run_ids[start : start + 500]
                    stmt = select(*_TI_COLUMNS(TI), TI.next_method, TI.id).where(
                        TI.dag_id == dag_id, TI.run_id.in_(chunk)
                    )
                    found = list(session.execute(stmt))
                    waiting = [
                        r[-1]
                        for r in found
                        if _str(r[4]) in ("scheduled", "queued") and r[-2] is None
                    ]
                    rescheduled: set[Any] = set()
                    if waiting:
                        rescheduled = set(
                            session.scalars(
                                select(TaskReschedule.ti_id).where(
                                    TaskReschedule.ti_id.in_(waiting)
                                )
                            )
                        )
                    closed = self._closed_tries(session, dag_id, found)
                    for r in found:
                        resuming = _str(r[4]) in ("scheduled", "queued") and (
                            r[-2] is not None or r[-1] in rescheduled
                        )
                        row = _task_row(r, resuming)
                        if (row.run_id, row.task_id, row.map_index, row.try_number) in closed:
                            row = replace(row, try_closed=True)
                        if killed and (*row.ti_key, row.try_number) in killed:
                            row = replace(row, canceled=True)
                        rows.append(row)
        return rows

    @staticmethod
    def _closed_tries(session: Session, dag_id: str, found: list[Any]) -> set[tuple[Any, ...]]:
        """(run, task, map_index, try) of never-ran rows whose try is already history."""
        from airflow.models.taskinstancehistory import TaskInstanceHistory as TIH

        runs = {r[1] for r in found if (r[4] is None or _str(r[4]) in NEVER_RAN) and r[5]}
        if not runs:
            return set()
        stmt = select(TIH.run_id, TIH.task_id, TIH.map_index, TIH.try_number).where(
            TIH.dag_id == dag_id, TIH.run_id.in_(sorted(runs))
        )
        return {tuple(r) for r in session.execute(stmt)}

    def history(self, row: TaskRow, below: int) -> list[TaskRow]:
        from airflow.models.taskinstancehistory import TaskInstanceHistory as TIH

        stmt = (
            select(*_TI_COLUMNS(TIH))
            .where(
                TIH.dag_id == row.dag_id,
                TIH.run_id == row.run_id,
                TIH.task_id == row.task_id,
                TIH.map_index == row.map_index,
                TIH.try_number < below,
            )
            .order_by(TIH.try_number)
        )
        with sqlite_section(self.engine.url), Session(self.engine) as session:
            return [_task_row(r, False) for r in session.execute(stmt)]

    def layout(self, run: RunRow) -> dict[str, TaskPlace]:
        from airflow.models.serialized_dag import SerializedDagModel as SDM

        key = str(run.dag_version_id or f"latest:{run.dag_id}")
        cached = self._layouts.get(key)
        if cached is not None:
            return cached
        with sqlite_section(self.engine.url), Session(self.engine) as session:
            if run.dag_version_id:
                model = session.scalar(select(SDM).where(SDM.dag_version_id == run.dag_version_id))
            else:
                model = session.scalar(
                    select(SDM)
                    .where(SDM.dag_id == run.dag_id)
                    .order_by(SDM.created_at.desc())
                    .limit(1)
                )
            data = model.data if model is not None else None
        layout = dag_layout(data) if isinstance(data, dict) else {}
        if len(self._layouts) > 1000:
            self._layouts.clear()
        self._layouts[key] = layout
        return layout


def _TI_COLUMNS(model: Any) -> tuple[Any, ...]:
    return (
        model.dag_id,
        model.run_id,
        model.task_id,
        model.map_index,
        model.state,
        model.try_number,
        model.max_tries,
        model.scheduled_dttm,
        model.queued_dttm,
        model.start_date,
        model.end_date,
        model.hostname,
        model.queue,
        model.pool,
        model.custom_operator_name,
        model.operator,
        model.executor,
        model.task_display_name,
    )


def _task_row(r: Any, resuming: bool) -> TaskRow:
    return TaskRow(
        dag_id=r[0],
        run_id=r[1],
        task_id=r[2],
        map_index=r[3],
        state=_str(r[4]),
        try_number=r[5] or 0,
        max_tries=r[6],
        scheduled_dttm=r[7],
        queued_dttm=r[8],
        start_date=r[9],
        end_date=r[10],
        hostname=r[11],
        queue=r[12],
        pool=r[13],
        operator=r[14] or r[15],
        executor=r[16],
        label=r[17] if r[17] and r[17] != r[2] else None,
        resuming=resuming,
    )


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


class Reconciler(BackgroundLoop):
    """Polls Airflow's database every ``interval`` seconds on its own thread."""

    thread_name = "bkci-reconciler"

    def __init__(
        self,
        reader: AirflowReader,
        sink: EventSink,
        *,
        interval: float,
        window: float,
        source: str,
        catch_up: CatchUpReader | None = None,
    ) -> None:
        super().__init__()
        self.reader = reader
        self.sink = sink
        self.interval = interval
        self.window = timedelta(seconds=window)
        self.observer = Observer(source)
        self.catch_up = catch_up
        self._last_ok: datetime | None = None
        self._resync = threading.Event()
        self.passes = 0

    def request_resync(self) -> None:
        self._resync.set()

    def _run(self) -> None:
        # Until the store has told where it left off, every pass asks again:
        # runs that ended while it was away (and before a restart of ours)
        # would otherwise fall out of the recent window unseen.
        pending_catch_up = self.catch_up is not None
        extra: Sequence[tuple[str, str]] = ()
        # Asked again with a backoff, not on every pass: each try may wait for a
        # connection, and the passes go on meanwhile (the sink keeps their events).
        failures, next_ask = 0, 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            if pending_catch_up and started >= next_ask:
                extra, pending_catch_up = self._read_catch_up(failures + 1)
                failures = failures + 1 if pending_catch_up else 0
                next_ask = started + backoff_delay(_CATCH_UP_BACKOFF, failures)
            try:
                self.poll_once(extra)
                extra = ()
            except Exception:
                log.warning("bkci: reconcile pass failed; retrying", exc_info=True)
            self._stop.wait(max(0.05, self.interval - (time.monotonic() - started)))

    def _read_catch_up(self, attempt: int) -> tuple[Sequence[tuple[str, str]], bool]:
        assert self.catch_up is not None
        try:
            known = self.catch_up()
        except Exception as exc:
            if attempt == 1 or attempt % 20 == 0:  # an outage says so once, then now and then
                log.warning(
                    "bkci: status store not reachable to catch up (%s); asking again (try %d)",
                    exc,
                    attempt,
                )
            return (), True
        if known.last_update is not None:
            # The next pass reads every run that ended since the store last
            # changed, however long ago (a window from our own passes would
            # not reach back across an outage that spanned our restart).
            since = known.last_update
            self._last_ok = since if self._last_ok is None else min(self._last_ok, since)
        log.info(
            "bkci: catching up since %s with %d unfinished builds",
            self._last_ok,
            len(known.unfinished),
        )
        return known.unfinished, False

    def poll_once(self, extra: Sequence[tuple[str, str]] = ()) -> int:
        """One pass; returns the number of events handed to the sink."""
        if self._resync.is_set():
            self._resync.clear()
            self.observer.forget()
            # what the sink dropped may belong to runs that ended meanwhile
            if self.sink.last_success is not None:
                self._last_ok = datetime.fromtimestamp(self.sink.last_success, tz=timezone.utc)
        now = utcnow()
        since = (self._last_ok or now) - self.window
        runs = self.reader.runs(since, extra)
        tasks = self.reader.tasks(runs)
        events = observe_all(self.observer, runs, tasks, self.reader.layout, self.reader.history)
        self.sink.put(events)
        self._last_ok = now
        self.passes += 1
        return len(events)
