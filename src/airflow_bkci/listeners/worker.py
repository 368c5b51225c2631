"""Task-runner hooks: one enrichment record per task-instance hook, into the local spool.

The hooks run on the task's own thread, so they only build a dict and do one
local SQLite insert; the forwarder thread does the network I/O and is flushed
with a bounded wait at ``before_stopping``. Nothing here raises into Airflow.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from airflow.listeners import hookimpl

from airflow_bkci.spool.forwarder import Forwarder
from airflow_bkci.spool.records import RECORD_VERSION
from airflow_bkci.spool.spool import Spool

__all__ = ["WorkerListener", "error_summary", "task_record"]

log = logging.getLogger(__name__)

MAX_ERROR_LEN = 1000
TASK_RUNNER_COMPONENT = "TaskRunnerMarker"
RUNTIME_TI = "RuntimeTaskInstance"


def _iso(raw: Any) -> str | None:
    if not isinstance(raw, datetime):
        return None
    value: datetime = raw
    if value.tzinfo is None:  # Airflow keeps UTC; a naive value here is UTC too
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


def error_summary(error: object) -> str | None:
    """``Type: first line of the message``, at most :data:`MAX_ERROR_LEN` characters."""
    if error is None:
        return None
    if isinstance(error, BaseException):
        message = str(error).strip().splitlines()
        text = type(error).__name__ + (f": {message[0]}" if message else "")
    else:
        lines = str(error).strip().splitlines()
        text = lines[0] if lines else ""
    if not text:
        return None
    return text if len(text) <= MAX_ERROR_LEN else text[: MAX_ERROR_LEN - 1] + "…"


def _clear_number(ti: Any) -> int:
    # The run context the API server sent at start-up; the SDK keeps it private.
    context = getattr(ti, "_ti_context_from_server", None)
    value = getattr(getattr(context, "dag_run", None), "clear_number", None)
    return value if isinstance(value, int) and value >= 0 else 0


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def task_record(ti: Any, state: str, error: object = None) -> dict[str, Any]:
    """The record for one hook on a RuntimeTaskInstance (without source, seq, at)."""
    task = getattr(ti, "task", None)
    map_index = getattr(ti, "map_index", -1)
    return {
        "v": RECORD_VERSION,
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": map_index if isinstance(map_index, int) else -1,
        "try_number": ti.try_number,
        "clear_number": _clear_number(ti),
        "state": state,
        "start_date": _iso(getattr(ti, "start_date", None)),
        "end_date": _iso(getattr(ti, "end_date", None)),
        "hostname": _text(getattr(ti, "hostname", None)),
        "queue": _text(getattr(ti, "queue", None)),
        "pool": _text(getattr(task, "pool", None)),
        "operator": _text(getattr(task, "task_type", None)),
        "max_tries": getattr(ti, "max_tries", None),
        "label": _text(getattr(ti, "rendered_map_index", None)),
        "error": error_summary(error),
    }


class WorkerListener:
    """Pluggy listener for the Task SDK's task runner.

    Acts only on ``RuntimeTaskInstance`` hooks and on the ``TaskRunnerMarker``
    component, so registering it in other Airflow components is harmless.
    """

    def __init__(
        self,
        spool_factory: Callable[[], Spool] | None = None,
        forwarder_factory: Callable[[], Forwarder] | None = None,
        flush_timeout: Callable[[], float] | None = None,
        enabled: Callable[[], bool] | None = None,
    ) -> None:
        self._enabled_check = enabled or _conf_enabled
        self._enabled: bool | None = None
        self._spool_factory = spool_factory or _conf_spool
        self._forwarder_factory = forwarder_factory or _conf_forwarder
        self._flush_timeout = flush_timeout or _conf_flush_timeout
        self._lock = threading.Lock()
        self._spool: Spool | None = None
        self._forwarder: Forwarder | None = None
        self._pid = 0
        self._source = ""
        self._seq = 0
        self._last_at: datetime | None = None

    # -- hooks --------------------------------------------------------------

    @hookimpl
    def on_starting(self, component: Any) -> None:
        if type(component).__name__ == TASK_RUNNER_COMPONENT:
            log.debug("BK-CI worker listener active in task runner %d", os.getpid())

    @hookimpl
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        self._record(task_instance, "running")

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        self._record(task_instance, "success")

    @hookimpl
    def on_task_instance_failed(
        self, previous_state: Any, task_instance: Any, error: str | BaseException | None
    ) -> None:
        state = _text(getattr(task_instance, "state", None))
        # The runner sets up_for_retry or failed before the hook fires.
        state = state.split(".")[-1].lower() if state else "failed"
        if state not in ("up_for_retry", "failed"):
            state = "failed"
        self._record(task_instance, state, error)

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        self._record(task_instance, "skipped")

    @hookimpl
    def before_stopping(self, component: Any) -> None:
        if type(component).__name__ != TASK_RUNNER_COMPONENT:
            return
        try:
            forwarder = self._forwarder
            if forwarder is None or self._pid != os.getpid():
                return
            timeout = self._flush_timeout()
            if not forwarder.flush(timeout):
                log.warning(
                    "BK-CI records not all sent within %.1fs ([bkci] forward_timeout); "
                    "they stay in %s for the next forwarder or `airflow-bkci relay`",
                    timeout,
                    forwarder.spool.path,
                )
        except Exception:
            log.warning("BK-CI worker listener failed at before_stopping", exc_info=True)

    # -- internals ----------------------------------------------------------

    def _record(self, ti: Any, state: str, error: object = None) -> None:
        try:
            if type(ti).__name__ != RUNTIME_TI:
                return  # API server or scheduler: the scheduler-side collector covers those
            if self._enabled is None:
                self._enabled = bool(self._enabled_check())
            if not self._enabled:
                log.debug("BK-CI worker records skipped: [bkci] enabled is False")
                return
            record = task_record(ti, state, error)
            with self._lock:
                spool = self._ensure_started()
                record.update(self._stamp())
                spool.append(record)
            if self._forwarder is not None:
                self._forwarder.notify()
        except Exception:
            log.warning(
                "BK-CI worker listener could not spool %s for %s",
                state,
                getattr(ti, "task_id", ti),
                exc_info=True,
            )

    def _ensure_started(self) -> Spool:
        pid = os.getpid()
        if self._spool is None or self._pid != pid:
            # First hook in this process (or a forked child): own spool, counter, thread.
            self._spool, self._forwarder = None, None
            spool = self._spool_factory()
            self._source = f"worker@{socket.gethostname()}:{pid}"
            self._seq, self._last_at, self._pid = 0, None, pid
            self._spool = spool
        if self._forwarder is None:
            try:
                self._forwarder = self._forwarder_factory()
                self._forwarder.start()
            except Exception:
                self._forwarder = None
                log.warning("BK-CI forwarder not started; records stay spooled", exc_info=True)
        return self._spool

    def _stamp(self) -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        if self._last_at is not None and now < self._last_at:
            now = self._last_at  # keep `at` non-decreasing per source
        self._last_at = now
        self._seq += 1
        return {"source": self._source, "seq": self._seq, "at": now.isoformat()}


def _conf_spool() -> Spool:
    from airflow_bkci import conf

    return Spool(conf.spool_path(), autocheckpoint=False)


def _conf_forwarder() -> Forwarder:
    from airflow_bkci import conf

    return Forwarder.from_conf(Spool(conf.spool_path()))


def _conf_enabled() -> bool:
    from airflow_bkci import conf

    return conf.enabled()


def _conf_flush_timeout() -> float:
    from airflow_bkci import conf

    return conf.forward_timeout()
