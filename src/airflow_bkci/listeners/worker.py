"""Task-runner hooks: one enrichment record per task-instance hook, into the local spool.

The hooks run on the task's own thread, so they only build a dict and do one
local SQLite insert. The records are sent once, at ``before_stopping``, on the
same thread, with a bounded wait, and not at all while the host's receiver is
backing off (the spool keeps that state for every process on the host). No
thread of ours runs beside the task: it would take the GIL from the task and
from the next hook. Nothing here raises into Airflow.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow.listeners import hookimpl

from airflow_bkci import conf
from airflow_bkci.exceptions import BkciError
from airflow_bkci.spool.forwarder import Forwarder
from airflow_bkci.spool.records import QUALITY_CHECKS, RECORD_VERSION
from airflow_bkci.spool.spool import Spool

__all__ = ["WorkerListener", "error_summary", "record_quality_check", "task_record"]

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


class _Runtime:
    """What one process keeps: its spool, forwarder, source name and counter.

    Airflow may load a plugin twice in one process (the core and the Task SDK
    plugin managers each import a plugins-folder module) or register one
    listener with two managers; every such listener shares one runtime, so a
    process stays one source with one counter, and a hook that fires twice
    for the same task state is spooled once.
    """

    def __init__(
        self,
        spool_factory: Callable[[], Spool],
        forwarder_factory: Callable[[Spool], Forwarder],
        flush_timeout: Callable[[], float],
        enabled: Callable[[], bool],
    ) -> None:
        self.spool_factory = spool_factory
        self.forwarder_factory = forwarder_factory
        self.flush_timeout = flush_timeout
        self.enabled_check = enabled
        self.enabled: bool | None = None
        self.lock = threading.Lock()
        self.spool: Spool | None = None
        self.forwarder: Forwarder | None = None
        self.pid = 0
        self.source = ""
        self.seq = 0
        self.last_at: datetime | None = None
        self.seen: set[tuple[Any, ...]] = set()
        self.unflushed = False

    def record(
        self, ti: Any, state: str, error: object, extra: dict[str, Any] | None = None
    ) -> None:
        if self.enabled is None:
            self.enabled = bool(self.enabled_check())
        if not self.enabled:
            log.debug("BK-CI worker records skipped: [bkci] enabled is False")
            return
        record = task_record(ti, state, error)
        identity = tuple(record[k] for k in ("dag_id", "run_id", "task_id", "map_index"))
        identity += (record["try_number"], state)
        if extra:
            record.update(extra)
            identity += tuple(sorted(extra.items()))
        with self.lock:
            spool = self._ensure_started()
            if identity in self.seen:
                return  # the same hook again, from a second registration
            self.seen.add(identity)
            record.update(self._stamp())
            spool.append(record)
            self.unflushed = True

    def warm_up(self) -> None:
        """Read config and open the spool ahead of the first hook.

        About 2 ms of CPU in a freshly forked task runner (0.4 ms in a warm
        process): the one hook call of ours above 1 ms, once per process.
        """
        try:
            if self.enabled is None:
                self.enabled = bool(self.enabled_check())
            if self.enabled:
                with self.lock:
                    self._ensure_started()
        except Exception:
            log.warning("BK-CI worker warm-up failed; the first hook will retry", exc_info=True)

    def flush(self) -> None:
        """Send this host's spooled records, waiting at most ``[bkci] forward_timeout``."""
        with self.lock:
            spool = self.spool
            if spool is None or self.pid != os.getpid() or not self.unflushed:
                return
            self.unflushed = False
            if self.forwarder is None:
                self.forwarder = self.forwarder_factory(spool)
            forwarder = self.forwarder
        timeout = self.flush_timeout()
        forwarder.send_now(timeout)  # logs why, if it could not send everything

    def _ensure_started(self) -> Spool:
        pid = os.getpid()
        if self.spool is None or self.pid != pid:
            # First hook in this process (or a forked child): own spool and counter.
            self.spool, self.forwarder, self.seen = None, None, set()
            spool = self.spool_factory()
            self.source = f"worker@{socket.gethostname()}:{pid}"
            self.seq, self.last_at, self.pid = 0, None, pid
            self.spool = spool
        return self.spool

    def _stamp(self) -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        if self.last_at is not None and now < self.last_at:
            now = self.last_at  # keep `at` non-decreasing per source
        self.last_at = now
        self.seq += 1
        return {"source": self.source, "seq": self.seq, "at": now.isoformat()}


class WorkerListener:
    """Pluggy listener for the Task SDK's task runner.

    Acts only on ``RuntimeTaskInstance`` hooks and on the ``TaskRunnerMarker``
    component, so registering it in other Airflow components is harmless.
    Without arguments it reads ``[bkci]`` and shares one runtime per process;
    the arguments (for tests) give it a runtime of its own.
    """

    def __init__(
        self,
        spool_factory: Callable[[], Spool] | None = None,
        forwarder_factory: Callable[[Spool], Forwarder] | None = None,
        flush_timeout: Callable[[], float] | None = None,
        enabled: Callable[[], bool] | None = None,
    ) -> None:
        if spool_factory is None and forwarder_factory is None:
            self._rt = _process_runtime()
        else:
            self._rt = _Runtime(
                spool_factory or _conf_spool,
                forwarder_factory or _conf_forwarder,
                flush_timeout or _conf_flush_timeout,
                enabled or _conf_enabled,
            )
        if flush_timeout is not None:
            self._rt.flush_timeout = flush_timeout
        if enabled is not None:
            self._rt.enabled_check = enabled

    @property
    def forwarder(self) -> Forwarder | None:
        """The forwarder of this process, once ``before_stopping`` made it."""
        return self._rt.forwarder

    # -- hooks --------------------------------------------------------------

    @hookimpl
    def on_starting(self, component: Any) -> None:
        if type(component).__name__ != TASK_RUNNER_COMPONENT:
            return
        # Here, not in a thread: a thread costs more (its start alone takes
        # milliseconds on a busy host) and would compete with the runner for
        # the GIL. The first task hook then finds the spool open.
        self._rt.warm_up()

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
            self._rt.flush()
        except Exception:
            log.warning("BK-CI worker listener failed at before_stopping", exc_info=True)

    def _record(self, ti: Any, state: str, error: object = None) -> None:
        try:
            if type(ti).__name__ != RUNTIME_TI:
                return  # API server or scheduler: the scheduler-side collector covers those
            self._rt.record(ti, state, error)
        except Exception:
            log.warning(
                "BK-CI worker listener could not spool %s for %s",
                state,
                getattr(ti, "task_id", ti),
                exc_info=True,
            )


def record_quality_check(task_instance: Any, status: str, summary: str | None = None) -> bool:
    """Show a quality gate's state on its task in the build tree, and on every channel.

    For the gate operator, while its task runs in a task runner: one spooled
    record carrying ``quality_check`` (one of ``QUALITY_CHECK_WAIT``, ``_PASS``,
    ``_FAIL``) and a one-line ``quality_summary``. True when it was spooled;
    never raises (outside a task runner, or with the plugin disabled, it does
    nothing and says so at debug level).
    """
    try:
        if status not in QUALITY_CHECKS:
            log.warning("BK-CI quality check %r is not one of %s", status, sorted(QUALITY_CHECKS))
            return False
        if type(task_instance).__name__ != RUNTIME_TI:
            log.debug("BK-CI quality check %s not recorded outside a task runner", status)
            return False
        extra: dict[str, Any] = {"quality_check": status}
        if summary:
            line = summary.strip().splitlines()[0] if summary.strip() else ""
            extra["quality_summary"] = line[:MAX_ERROR_LEN]
        runtime = _process_runtime()
        runtime.record(task_instance, "running", None, extra)
        return runtime.spool is not None
    except Exception:
        log.warning("BK-CI worker could not spool quality check %s", status, exc_info=True)
        return False


_PROCESS_RUNTIME: _Runtime | None = None
_PROCESS_LOCK = threading.Lock()


def _process_runtime() -> _Runtime:
    global _PROCESS_RUNTIME  # noqa: PLW0603 - one runtime per process, by design
    with _PROCESS_LOCK:
        if _PROCESS_RUNTIME is None:
            _PROCESS_RUNTIME = _Runtime(
                _conf_spool, _conf_forwarder, _conf_flush_timeout, _conf_enabled
            )
            _preload_settings()
        return _PROCESS_RUNTIME


@dataclass(frozen=True)
class WorkerSettings:
    """The ``[bkci]`` options a task runner needs, read once per process.

    Airflow's ``conf.get`` costs about 0.1 ms a call in a task runner, and the
    hooks would make seven of them. The plugin is imported (and these read) in
    the process task runners fork from where the executor forks them (the
    scheduler, for LocalExecutor), so a runner inherits them for free.
    """

    enabled: bool
    spool_path: Path
    flush_timeout: float
    ingest_url: str
    ingest_secret: str | None
    secret_problem: str | None
    batch_size: int

    @classmethod
    def from_conf(cls) -> WorkerSettings:
        secret: str | None
        problem: str | None = None
        try:
            secret = conf.ingest_secret()
        except BkciError as exc:
            secret, problem = None, str(exc)
        return cls(
            enabled=conf.enabled(),
            spool_path=conf.spool_path(),
            flush_timeout=conf.forward_timeout(),
            ingest_url=conf.ingest_url(),
            ingest_secret=secret,
            secret_problem=problem,
            batch_size=conf.forward_batch_size(),
        )


_SETTINGS: WorkerSettings | None = None


def worker_settings() -> WorkerSettings:
    """This process's :class:`WorkerSettings`, read on first use."""
    global _SETTINGS  # noqa: PLW0603 - read once per process, by design
    if _SETTINGS is None:
        _SETTINGS = WorkerSettings.from_conf()
    return _SETTINGS


def _preload_settings() -> None:
    try:
        worker_settings()
    except Exception:  # the first hook reads them again, and logs why if it fails
        log.debug("BK-CI worker settings not read at plugin load", exc_info=True)


def _conf_spool() -> Spool:
    return Spool(worker_settings().spool_path, autocheckpoint=False)


def _conf_forwarder(spool: Spool) -> Forwarder:
    settings = worker_settings()
    if settings.ingest_secret is None:
        log.warning(
            "BK-CI forwarder cannot authenticate, records stay spooled: %s",
            settings.secret_problem,
        )
    return Forwarder(
        spool, settings.ingest_url, settings.ingest_secret, batch_size=settings.batch_size
    )


def _conf_enabled() -> bool:
    return worker_settings().enabled


def _conf_flush_timeout() -> float:
    return worker_settings().flush_timeout
