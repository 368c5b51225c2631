"""Hooks of the Airflow-side processes: scheduler and API server.

In the scheduler, DagRun hooks fire inside the scheduler's transaction,
before it commits: we keep their events on the session and hand them to the
sink only from its ``after_commit`` event (a rollback drops them). The
scheduler also runs the reconciler, the authority for states. In the API
server, TI and DagRun hooks report manual changes (mark success/failed,
clear) the same way. Task-runner hooks are the worker listener's business;
task instances that are not ORM objects are ignored here.
"""

from __future__ import annotations

import _thread
import logging
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow.listeners import hookimpl
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, object_session

from airflow_bkci import conf
from airflow_bkci.exceptions import ConfigError
from airflow_bkci.forksafe import sqlite_section
from airflow_bkci.listeners.observer import Observer, default_source
from airflow_bkci.listeners.reconciler import AirflowReader, CatchUp, Reconciler
from airflow_bkci.listeners.rows import CancelMark, RunRow, TaskRow, kept_conf
from airflow_bkci.listeners.sink import EventSink
from airflow_bkci.model.event import AUTHORITATIVE_SOURCE, StatusEvent

if TYPE_CHECKING:
    from airflow_bkci.channels.dispatcher import Dispatcher
    from airflow_bkci.listeners.cancel_previous import CancelPrevious
    from airflow_bkci.listeners.spool_reader import SpoolReader

log = logging.getLogger(__name__)

_PENDING = "bkci_pending_events"
CANCEL_MARK_ATTR = "bkci_cancel_mark"
"""Set by the cancel service on the objects it hands Airflow's listeners after its commit."""
_UNFINISHED = ("QUEUE", "PREPARE_ENV", "RUNNING", "REVIEWING")


def open_store() -> Any:
    from airflow_bkci.store import Store

    store = Store.from_conf()
    store.migrate()
    return store


def _catch_up() -> CatchUp:
    """What the store knew last: its unfinished builds and when it last changed."""
    from airflow_bkci.model.status import BuildStatus

    with sqlite_section("sqlite"):  # the store's kind is not known before opening it
        store = open_store()
    try:
        builds = store.builds(status=[BuildStatus(s) for s in _UNFINISHED], limit=500)
        return CatchUp([(b["pipeline_id"], b["run_id"]) for b in builds], store.last_update())
    finally:
        store.dispose()


def _enum_value(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def run_row(dag_run: Any) -> RunRow:
    """Snapshot of an ORM DagRun; reads only loaded columns (no lazy loads)."""
    return RunRow(
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        state=_enum_value(dag_run.state),
        clear_number=dag_run.clear_number or 0,
        run_type=_enum_value(dag_run.run_type),
        triggered_by=_enum_value(dag_run.triggered_by),
        triggering_user=dag_run.triggering_user_name,
        logical_date=dag_run.logical_date,
        run_after=dag_run.run_after,
        queued_at=dag_run.queued_at,
        start_date=dag_run.start_date,
        end_date=dag_run.end_date,
        # Only when already loaded: a lazy load would query inside the scheduler's
        # transaction. The reconciler reads every run's conf anyway.
        conf=kept_conf(
            getattr(dag_run, "__dict__", {}).get("conf"), dag_run.dag_id, dag_run.run_id
        ),
    )


def task_row(ti: Any) -> TaskRow:
    """Snapshot of an ORM TaskInstance."""
    return TaskRow(
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        map_index=ti.map_index,
        state=_enum_value(ti.state),
        try_number=ti.try_number or 0,
        max_tries=ti.max_tries,
        scheduled_dttm=ti.scheduled_dttm,
        queued_dttm=ti.queued_dttm,
        start_date=ti.start_date,
        end_date=ti.end_date,
        hostname=ti.hostname,
        queue=ti.queue,
        pool=ti.pool,
        operator=ti.custom_operator_name or ti.operator,
        executor=ti.executor,
    )


class ServerCollector:
    """Process-wide state of the Airflow-side collector (one per process)."""

    def __init__(self) -> None:
        self.sink = EventSink(open_store, on_overflow=self._overflow, on_applied=self._applied)
        self.observer = Observer(default_source("hook"))
        self.reconciler: Reconciler | None = None
        self.dispatcher: Dispatcher | None = None
        self.spool_reader: SpoolReader | None = None
        self.cancel_previous: CancelPrevious | None = None
        self._lock = threading.Lock()

    def _applied(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.notify()  # new change sets: no need to wait for the next poll

    def _overflow(self) -> None:
        self.observer.forget()
        if self.reconciler is not None:
            self.reconciler.request_resync()

    # --------------------------------------------------------- after commit
    def defer_until_commit(self, session: Session | None, events: list[StatusEvent]) -> None:
        if session is None:
            self.sink.put(events)
            return
        pending = session.info.get(_PENDING)
        if pending is None:
            pending = session.info[_PENDING] = []
            sa_event.listen(session, "after_commit", self._committed)
            sa_event.listen(session, "after_rollback", self._rolled_back)
        pending.extend(events)

    def _committed(self, session: Session) -> None:
        events = session.info.pop(_PENDING, None) or []
        session.info[_PENDING] = []
        self.sink.put(events)

    def _rolled_back(self, session: Session) -> None:
        session.info[_PENDING] = []

    # ------------------------------------------------------------ reconciler
    def start_reconciler_when_scheduler(self, component: Any) -> None:
        # on_starting runs inside Job.__init__, before job_type is set.
        def wait_for_role() -> None:
            for _ in range(600):
                job_type = getattr(component, "job_type", None)
                if job_type == "SchedulerJob":
                    self.start_reconciler()
                    return
                if job_type is not None:
                    log.debug("bkci: %s is not the scheduler; no reconciler", job_type)
                    return
                threading.Event().wait(0.1)

        # threading.Thread.start() waits until the new thread runs, which takes
        # milliseconds on a busy host, inside Airflow's start-up; the low-level
        # call returns at once. The thread only starts our real (named) ones.
        _thread.start_new_thread(wait_for_role, ())

    def start_reconciler(self) -> None:
        with self._lock:
            if self.reconciler is not None:
                return
            self.reconciler = Reconciler(
                AirflowReader.from_airflow(),
                self.sink,
                interval=conf.reconcile_interval(),
                window=conf.recent_window(),
                source=default_source(AUTHORITATIVE_SOURCE.rstrip("@")),
                catch_up=_catch_up,
            )
            self.reconciler.start()
            log.info("bkci: reconciler started (every %.1fs)", self.reconciler.interval)
        self.start_spool_reader()
        self.start_dispatcher()
        self.start_cancel_previous()

    def start_cancel_previous(self) -> None:
        """Cancel the earlier runs of a concurrency group when a newer one appears."""
        from airflow_bkci.cancel.groups import parse_config
        from airflow_bkci.cancel.service import CancelService
        from airflow_bkci.listeners.cancel_previous import CancelPrevious

        with self._lock:
            if self.cancel_previous is not None:
                return
            try:
                interval = conf.cancel_previous_interval()
                config = parse_config(conf.cancel_previous())
                if interval <= 0:
                    log.info("bkci: [bkci] cancel_previous_interval is 0; no cancel-previous")
                    return
                service = CancelService.from_airflow()
            except Exception as exc:
                log.error("bkci: cancel-previous not started: %s", exc)
                return
            self.cancel_previous = CancelPrevious(
                service.engine, service.cancel, config, interval=interval
            )
            self.cancel_previous.start()
            log.info("bkci: cancel-previous groups checked every %.1fs", interval)

    def start_spool_reader(self) -> None:
        """Read the records this host's task runners spool, while their tasks run."""
        from airflow_bkci.listeners.spool_reader import SpoolReader
        from airflow_bkci.spool.spool import Spool

        with self._lock:
            if self.spool_reader is not None:
                return
            interval = conf.spool_poll_interval()
            if interval <= 0:
                log.info("bkci: [bkci] spool_poll_interval is 0; task runners send their spool")
                return
            path = conf.spool_path()
            # A short busy timeout: a fork of the scheduler waits while we are in SQLite.
            self.spool_reader = SpoolReader(
                lambda: Spool(path, busy_timeout=1.0), self.sink, interval=interval
            )
            self.spool_reader.start()
            log.info("bkci: reading the spool %s every %.2fs", path, interval)

    def start_dispatcher(self) -> None:
        """Deliver the outbox from this process too (several dispatchers share lanes safely)."""
        from airflow_bkci.hooks.webhook import dispatcher_from_conf

        with self._lock:
            if self.dispatcher is not None:
                return
            try:
                if "scheduler" not in conf.dispatch_in():
                    log.info("bkci: [bkci] dispatch_in leaves the scheduler out; no dispatcher")
                    return
            except ConfigError as exc:
                log.error("bkci: dispatcher not started: %s", exc)
                return
            try:
                # Not open_store(): no migration here, the sink does that; a store that
                # is down only delays the dispatcher's first pass.
                from airflow_bkci.store import Store

                # Reading the endpoints' connections may query Airflow's database,
                # which is SQLite on a laptop: keep forks out (airflow_bkci.forksafe).
                with sqlite_section("sqlite"):
                    self.dispatcher = dispatcher_from_conf(Store.from_conf())
            except Exception:
                log.warning("bkci: dispatcher not started", exc_info=True)
                return
            if self.dispatcher is None:
                log.debug("bkci: no [bkci] webhook_conn_ids; no dispatcher")
                return
            self.dispatcher.start()
            log.info(
                "bkci: dispatcher started for %s",
                ", ".join(c.name for c in self.dispatcher.channels),
            )

    def stop(self, timeout: float = 5.0) -> None:
        if self.reconciler is not None:
            self.reconciler.stop(timeout)
        if self.spool_reader is not None:
            self.spool_reader.stop(timeout)
        if self.cancel_previous is not None:
            self.cancel_previous.stop(timeout)
        self.sink.stop(timeout)
        if self.dispatcher is not None:
            self.dispatcher.stop(timeout)


class _Holder:
    """The process's one collector, made on first use."""

    collector: ServerCollector | None = None
    lock = threading.Lock()


def collector() -> ServerCollector:
    with _Holder.lock:
        if _Holder.collector is None:
            _Holder.collector = ServerCollector()
        return _Holder.collector


def flush_collector(timeout: float) -> bool:
    """Wait until this process's collector applied what it was given (True if none exists)."""
    running = _Holder.collector
    return running.sink.flush(timeout) if running is not None else True


def is_orm(obj: Any) -> bool:
    return hasattr(obj, "_sa_instance_state")


class ServerListener:
    """Hook implementations for scheduler, dag-processor, triggerer and API server."""

    @hookimpl
    def on_starting(self, component: Any) -> None:
        try:
            # The class check first: task runners call this too, and reading
            # Airflow's config there costs milliseconds.
            if type(component).__name__ == "Job" and conf.enabled():
                collector().start_reconciler_when_scheduler(component)
        except Exception:
            log.warning("bkci: on_starting failed", exc_info=True)

    @hookimpl
    def before_stopping(self, component: Any) -> None:
        try:
            running = _Holder.collector
            if running is not None and type(component).__name__ == "Job":
                running.stop(timeout=conf.forward_timeout())
        except Exception:
            log.warning("bkci: before_stopping failed", exc_info=True)

    def _run_changed(self, dag_run: Any) -> None:
        try:
            if not conf.enabled():
                return
            c = collector()
            c.observer.forget_run(dag_run.dag_id, dag_run.run_id)
            row = run_row(dag_run)
            mark = getattr(dag_run, CANCEL_MARK_ATTR, None)
            if isinstance(mark, CancelMark):  # told by the cancel service after its commit
                row = replace(row, canceled=mark)
            events = c.observer.observe_run(row)
            c.defer_until_commit(object_session(dag_run), events)
        except Exception:
            log.warning("bkci: could not record a DAG-run change", exc_info=True)

    @hookimpl
    def on_dag_run_running(self, dag_run: Any, msg: str) -> None:
        self._run_changed(dag_run)

    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        self._run_changed(dag_run)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        self._run_changed(dag_run)

    def _task_changed(self, task_instance: Any, error: Any = None) -> None:
        if not is_orm(task_instance):
            return  # a task runner's RuntimeTaskInstance: the worker listener's
        try:
            if not conf.enabled():
                return
            c = collector()
            row = task_row(task_instance)
            if isinstance(getattr(task_instance, CANCEL_MARK_ATTR, None), CancelMark):
                row = replace(row, canceled=True)
            dag_run = task_instance.__dict__.get("dag_run")  # only if already loaded
            clear = dag_run.clear_number if dag_run is not None else 0
            c.observer.forget_run(row.dag_id, row.run_id)
            events = c.observer.observe_task(row, clear, None)
            if error is not None and events:
                last = events[-1]
                fields = {**last.fields, "error": _error_summary(error)}
                events[-1] = StatusEvent(**{**_as_kwargs(last), "fields": fields})
            c.defer_until_commit(object_session(task_instance), events)
        except Exception:
            log.warning("bkci: could not record a task change", exc_info=True)

    @hookimpl
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        self._task_changed(task_instance)

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        self._task_changed(task_instance)

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        self._task_changed(task_instance, error)

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        self._task_changed(task_instance)


def _error_summary(error: Any, limit: int = 1000) -> str:
    if isinstance(error, BaseException):
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    else:
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text[:limit]


def _as_kwargs(event: StatusEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in StatusEvent.__dataclass_fields__}
