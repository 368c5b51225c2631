"""API server: a task that starts is recorded RUNNING when Airflow records it, not later.

Airflow marks a task instance running when its task runner calls the
execution API (``PATCH /execution/task-instances/{id}/run``), before the
runner parses the DAG file and fires ``on_task_instance_running``; the
reconciler sees it only at its next pass. A root middleware of the API
server notes the id of every such call that succeeded; a thread of ours reads
those task instances from Airflow's database and hands their events to this
process's collector, which writes them to the store. The request itself
only pays a queue append: nothing here can slow or fail a task's start.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
from collections.abc import Callable, Iterable
from typing import Any

from airflow_bkci.listeners.background import BackgroundLoop
from airflow_bkci.listeners.observer import Observer, default_source
from airflow_bkci.listeners.rows import TaskRow
from airflow_bkci.model.event import AUTHORITATIVE_SOURCE, StatusEvent

__all__ = ["TaskStartMiddleware", "TaskStartRecorder", "recorder"]

log = logging.getLogger(__name__)

_RUN_PATH = re.compile(r"^/execution/task-instances/(?P<id>[0-9a-fA-F-]{32,36})/run/?$")
_MAX_PENDING = 10_000
_BATCH = 200

RowReader = Callable[[list[str]], list[tuple[TaskRow, int]]]
"""Task instance ids to (row, the run's clear number)."""


class TaskStartRecorder(BackgroundLoop):
    """Turns started task-instance ids into events for a sink, on its own thread."""

    thread_name = "bkci-task-start"

    def __init__(
        self,
        read: RowReader,
        put: Callable[[Iterable[StatusEvent]], None],
        source: str,
    ) -> None:
        super().__init__()
        self._read = read
        self._put = put
        # Read from Airflow's database, like the reconciler's: Airflow's own times.
        self.observer = Observer(source)
        self._ids: queue.Queue[str] = queue.Queue(_MAX_PENDING)
        self.recorded = 0

    def started(self, ti_id: str) -> None:
        """Called on the request's path: never blocks, never raises."""
        # When full, the reconciler reports the start anyway, a moment later.
        with contextlib.suppress(queue.Full):
            self._ids.put_nowait(ti_id)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._ids.get(timeout=0.5)
            except queue.Empty:
                continue
            ids = [first]
            while len(ids) < _BATCH:
                try:
                    ids.append(self._ids.get_nowait())
                except queue.Empty:
                    break
            self.record(ids)

    def record(self, ids: list[str]) -> int:
        """Read these task instances and put their events; the count of events put."""
        try:
            rows = self._read(ids)
            events = [
                e for row, clear in rows for e in self.observer.observe_task(row, clear, None)
            ]
            self._put(events)
        except Exception:
            log.warning("bkci: could not record %d task starts", len(ids), exc_info=True)
            return 0
        finally:
            # Each start is seen once: keeping them would only grow.
            self.observer.forget()
        self.recorded += len(events)
        return len(events)


def read_started(ti_ids: list[str]) -> list[tuple[TaskRow, int]]:
    """The task instances with these ids, as the reconciler reads them, and their run's clear."""
    import uuid

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session
    from sqlalchemy import and_, select

    from airflow_bkci.listeners.reconciler import _TI_COLUMNS, _task_row

    ids = [uuid.UUID(i) for i in ti_ids]
    stmt = (
        select(*_TI_COLUMNS(TI), DagRun.clear_number)
        .join(DagRun, and_(DagRun.dag_id == TI.dag_id, DagRun.run_id == TI.run_id))
        .where(TI.id.in_(ids))
    )
    with create_session() as session:
        return [(_task_row(r, resuming=False), r[-1] or 0) for r in session.execute(stmt)]


class _Holder:
    recorder: TaskStartRecorder | None = None


def recorder() -> TaskStartRecorder | None:
    """This API server process's recorder, started on first use (None when collection is off)."""
    if _Holder.recorder is None:
        from airflow_bkci import conf
        from airflow_bkci.listeners.server import collector

        if not conf.enabled():
            return None
        _Holder.recorder = TaskStartRecorder(
            read_started, collector().sink.put, default_source(AUTHORITATIVE_SOURCE.rstrip("@"))
        )
        _Holder.recorder.start()
    return _Holder.recorder


class TaskStartMiddleware:
    """Pure ASGI: after a 2xx answer to the execution API's task-run call, note the id."""

    def __init__(self, app: Any, started: Callable[[str], None] | None = None) -> None:
        self.app = app
        self._started = started

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        match = None
        if scope.get("type") == "http" and scope.get("method") == "PATCH":
            match = _RUN_PATH.match(scope.get("path", ""))
        if match is None:
            await self.app(scope, receive, send)
            return
        answered: list[int] = []

        async def watch(message: Any) -> None:
            if message.get("type") == "http.response.start":
                answered.append(int(message.get("status", 0)))
            await send(message)

        await self.app(scope, receive, watch)
        if answered and 200 <= answered[0] < 300:
            self._note(match.group("id"))

    def _note(self, ti_id: str) -> None:
        try:
            started = self._started
            if started is None:
                running = recorder()
                started = running.started if running is not None else None
            if started is not None:
                started(ti_id)
        except Exception:
            log.warning("bkci: could not note a task start", exc_info=True)
