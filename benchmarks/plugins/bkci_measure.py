"""Benchmark-only plugin: times every hook call of our listeners and of a no-op listener.

Copied into the plugins folder of the benchmark's hook-cost stack, never installed. It wraps
the hook methods of the listener objects themselves (asking the listener manager while
plugins load recurses) and appends one CSV line per call to a file of its own process:

    role,owner,hook,key,wall_ns,cpu_ns

``key`` identifies one hook invocation (the ids of its arguments), so the calls of our two
listeners for the same invocation can be added up. Airflow may execute this module twice in
one process (core and Task SDK plugin managers): the state lives in ``sys.modules`` and the
wrapping is done once.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

STATE_MODULE = "_bkci_bench_state"
SAMPLES_DIR_ENV = "BKCI_BENCH_SAMPLES"
WRAPPED_FLAG = "_bkci_bench_wrapped"
HOOKS = (
    "on_starting",
    "before_stopping",
    "on_task_instance_running",
    "on_task_instance_success",
    "on_task_instance_failed",
    "on_task_instance_skipped",
    "on_dag_run_running",
    "on_dag_run_success",
    "on_dag_run_failed",
)
TASK_RUNNER_ARGS = ("RuntimeTaskInstance", "TaskRunnerMarker")
ARGV_ROLES = (
    ("api-server", ("api-server", "api_server")),
    ("dag-processor", ("dag-processor", "dag_processor")),
    ("triggerer", ("triggerer",)),
    ("scheduler", ("scheduler",)),
)


def _state() -> Any:
    state = sys.modules.get(STATE_MODULE)
    if state is None:
        state = types.ModuleType(STATE_MODULE)
        for name, value in (("fd", -1), ("pid", 0), ("noop", None)):
            setattr(state, name, value)
        sys.modules[STATE_MODULE] = state
    return state


def _role(args: tuple[Any, ...]) -> str:
    # Task runners are forked from the scheduler: their argv says "scheduler", their
    # arguments do not.
    if any(type(a).__name__ in TASK_RUNNER_ARGS for a in args):
        return "task-runner"
    argv = " ".join(sys.argv)
    for role, words in ARGV_ROLES:
        if any(w in argv for w in words):
            return role
    return "other"


def _write(line: str) -> None:
    state = _state()
    pid = os.getpid()
    if state.pid != pid:  # first sample here, or a forked child
        folder = os.environ.get(SAMPLES_DIR_ENV) or os.path.join(
            os.environ.get("AIRFLOW_HOME", "."), "bench-samples"
        )
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"samples-{pid}.csv")
        state.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        state.pid = pid
    # One unbuffered write per sample: task runners end with os._exit.
    os.write(state.fd, line.encode())


def timed(owner: str, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its wall and thread-CPU time recorded per call (outside the timed span)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wall0 = time.perf_counter_ns()
        cpu0 = time.thread_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            cpu = time.thread_time_ns() - cpu0
            wall = time.perf_counter_ns() - wall0
            try:
                values = (*args, *kwargs.values())
                key = "-".join(str(id(v)) for v in values)
                _write(f"{_role(values)},{owner},{hook},{key},{wall},{cpu}\n")
            except Exception:  # a benchmark must never break the component it measures
                pass

    return wrapper


def wrap_listener(listener: object) -> None:
    """Replace the listener's hook methods by timed ones (instance attributes, once)."""
    if getattr(listener, WRAPPED_FLAG, False):
        return
    owner = type(listener).__name__
    for hook in HOOKS:
        method = getattr(listener, hook, None)
        if method is not None and hasattr(method, "airflow_impl"):
            setattr(listener, hook, timed(owner, hook, method))
    setattr(listener, WRAPPED_FLAG, True)


def wrap_after_commit() -> None:
    """Time ServerCollector._committed too: it runs on the scheduler's thread at commit."""
    try:
        from airflow_bkci.listeners.server import ServerCollector
    except ImportError:
        return
    original = getattr(ServerCollector, "_committed", None)
    if original is None or getattr(original, WRAPPED_FLAG, False):
        return
    timed_fn = timed("ServerCollector", "after_commit", original)

    def _committed(self: Any, session: Any) -> None:  # the signature SQLAlchemy expects
        timed_fn(self, session)

    setattr(_committed, WRAPPED_FLAG, True)
    ServerCollector._committed = _committed  # type: ignore[method-assign]


class NoopListener:
    """The reference: every hook our listeners implement, doing nothing."""

    @hookimpl
    def on_starting(self, component: Any) -> None:
        pass

    @hookimpl
    def before_stopping(self, component: Any) -> None:
        pass

    @hookimpl
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        pass

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        pass

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        pass

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        pass

    @hookimpl
    def on_dag_run_running(self, dag_run: Any, msg: str) -> None:
        pass

    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        pass

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        pass


def _setup() -> NoopListener:
    state = _state()
    if state.noop is None:
        from airflow_bkci.plugins.bkci import BkciPlugin

        for listener in BkciPlugin.listeners:
            wrap_listener(listener)
        wrap_after_commit()
        noop = NoopListener()
        wrap_listener(noop)
        state.noop = noop
    return state.noop  # type: ignore[no-any-return]


class BkciBenchNoopPlugin(AirflowPlugin):
    """Registers the no-op listener next to ours."""

    name = "bkci_bench_noop"
    listeners = [_setup()]
