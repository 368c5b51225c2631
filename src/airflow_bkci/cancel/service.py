"""Batch cancel: many builds in one transaction of our own, all or nothing.

The one way this package cancels anything; the REST route, the CLI, the
operator and cancel-previous all call :meth:`CancelService.cancel`.

Order of work, and why:

1. Validate everything first (request shape, limits, unknown builds) and read
   each DAG's teardown tasks from its serialized form. Nothing is locked yet.
2. In one transaction on an engine of our own (never the scheduler's session:
   its commit would write its in-memory runs back over ours), lock the target
   ``dag_run`` rows in id order with a lock timeout; the scheduler and the
   execution API lock the same rows, so a fixed order and a bounded wait are
   what keep a cancel from deadlocking them or stalling them for long.
3. Re-read the states under the lock: a run that finished meanwhile is a
   reported no-op. Then set-based statements, in chunks per DAG: the marker
   rows of the task tries about to change, running-like tasks to failed, the
   other unfinished ones to skipped (teardowns untouched: they are the
   clean-up), notes appended, audit rows, run markers, and finally the runs
   that have no teardown left to failed.
4. Commit once. A lock timeout or deadlock rolls back and retries the whole
   transaction with backoff; any other error rolls back and is raised. A dry
   run does all of it and rolls back, so what it reports is exact.

Running task processes learn it at their next heartbeat (the execution API
answers 409) and are killed by their supervisor; their pool slots free then.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from airflow_bkci.cancel.guard import guard_in_background
from airflow_bkci.cancel.marks import ensure_tables
from airflow_bkci.cancel.notify import notify_in_background
from airflow_bkci.cancel.plan import (
    Plan,
    Target,
    by_dag,
    chunks,
    find_filtered,
    find_named,
    find_teardowns,
)
from airflow_bkci.cancel.request import (
    BuildResult,
    CancelIncomplete,
    CancelRejected,
    CancelRequest,
    CancelResult,
    Outcome,
    RunKey,
)
from airflow_bkci.cancel.writes import CancelWrites

__all__ = ["CancelService", "Plan", "Target", "cancel_engine", "is_lock_conflict"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""Called as (phase, done, total) while a long cancel works."""

SQLITE_CHUNK = 500  # ids per statement: well inside SQLite's bound-parameter limit
POSTGRES_CHUNK = 5000  # fewer, larger statements: each one costs a round trip and a plan


def is_lock_conflict(exc: BaseException) -> bool:
    """A lock timeout, deadlock or serialization failure: the whole transaction may be retried."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if code in ("55P03", "40P01", "40001"):
        return True
    return "database is locked" in str(orig)


def cancel_engine(url: Any, lock_timeout: float) -> Engine:
    """An engine for cancels only: SQLite takes the write lock at BEGIN, so the
    busy timeout is the lock timeout and reads under it are consistent."""
    if str(url).startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": lock_timeout})

        @event.listens_for(engine, "connect")
        def _autocommit_off(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we send BEGIN ourselves
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)


@contextmanager
def _no_gc_pause() -> Iterator[None]:
    """Hold the cyclic garbage collector while rows are locked.

    A full collection in a busy API server takes a few hundred ms; taken while
    we hold the runs' row locks, it would stall the scheduler for as long.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class CancelService:
    """Cancels builds in Airflow's database; thread-safe, one engine per service."""

    def __init__(
        self,
        engine: Engine,
        *,
        atomic_limit: int = 5000,
        max_builds: int = 50000,
        lock_timeout: float = 3.0,
        attempts: int = 5,
        notify_listeners: bool = True,
    ) -> None:
        self.engine = engine
        self.atomic_limit = atomic_limit
        self.max_builds = max_builds
        self.lock_timeout = lock_timeout
        self.attempts = attempts
        self.notify_listeners = notify_listeners
        self.chunk = SQLITE_CHUNK if engine.dialect.name == "sqlite" else POSTGRES_CHUNK
        self._notifiers: list[threading.Thread] = []

    @classmethod
    def from_airflow(cls, **overrides: Any) -> CancelService:
        """A service on Airflow's configured database with the ``[bkci]`` cancel options."""
        from airflow import settings

        from airflow_bkci import conf

        if settings.engine is None:
            settings.configure_orm()  # type: ignore[no-untyped-call]
        assert settings.engine is not None
        lock_timeout = overrides.pop("lock_timeout", conf.cancel_lock_timeout())
        options: dict[str, Any] = {
            "atomic_limit": conf.cancel_atomic_limit(),
            "max_builds": conf.cancel_max_builds(),
            "attempts": conf.cancel_attempts(),
            **overrides,
        }
        return cls(
            cancel_engine(settings.engine.url, lock_timeout), lock_timeout=lock_timeout, **options
        )

    def wait_for_notifications(self, timeout: float) -> bool:
        """Before a short-lived process exits: let the listeners hear of its cancels.

        Also flushes this process's own collector, so our CANCELED events reach
        the store. Returns False if something was still pending at the timeout.
        """
        deadline = time.monotonic() + timeout
        for thread in self._notifiers:
            thread.join(max(0.0, deadline - time.monotonic()))
        done = not any(t.is_alive() for t in self._notifiers)
        from airflow_bkci.listeners.server import flush_collector

        return flush_collector(max(0.0, deadline - time.monotonic())) and done

    # ------------------------------------------------------------ validation
    def plan(self, request: CancelRequest) -> Plan:
        """Validate the request and find its targets; raises :class:`CancelRejected`."""
        problems = request.problems()
        if problems:
            raise CancelRejected(problems)
        if len(request.runs) > self.max_builds:
            raise CancelRejected(
                [f"{len(request.runs)} builds named; one request names at most {self.max_builds}"],
                status=413,
            )
        ensure_tables(self.engine)
        with self.engine.connect() as conn:
            duplicates: list[RunKey] = []
            if request.filter is not None:
                targets = find_filtered(conn, request.filter)
            else:
                targets, duplicates = find_named(conn, request.runs, self.chunk)
            if len(targets) > self.max_builds:
                raise CancelRejected(
                    [f"{len(targets)} builds match; one request cancels at most {self.max_builds}"],
                    status=413,
                )
            if len(targets) > self.atomic_limit and not request.chunked:
                raise CancelRejected(
                    [
                        f"{len(targets)} builds exceed the atomic limit of {self.atomic_limit} "
                        "([bkci] cancel_atomic_limit); narrow the request, or ask for chunked "
                        f"mode to cancel them in atomic batches of {self.atomic_limit}"
                    ],
                    status=413,
                )
            teardowns = find_teardowns(conn, targets, self.chunk)
        return Plan(request, targets, duplicates, teardowns)

    # ------------------------------------------------------------- execution
    def cancel(
        self,
        request: CancelRequest,
        progress: Progress | None = None,
        *,
        authorize: Callable[[Plan], None] | None = None,
    ) -> CancelResult:
        """Validate, then cancel in one transaction (or atomic batches in chunked mode).

        ``authorize`` sees the plan (its DAGs) before anything is locked and
        raises (e.g. :class:`CancelForbidden`) to refuse it; the cancel then
        changes exactly the builds it approved, or fewer if some finished.
        """
        started = time.perf_counter()
        plan = self.plan(request)
        if authorize is not None:
            authorize(plan)
        cancel_id = str(uuid.uuid4())
        result = CancelResult(
            cancel_id, request.dry_run, [], plan.duplicates, batches=0, attempts=0
        )
        batches = list(chunks(plan.targets, self.atomic_limit)) or [[]]
        for batch in batches:
            try:
                builds, attempts, committed_at = self._transaction(plan, list(batch), cancel_id)
            except Exception as exc:
                if result.batches == 0:
                    raise
                result.seconds = time.perf_counter() - started
                raise CancelIncomplete(result, len(plan.targets), exc) from exc
            result.builds.extend(builds)
            result.attempts += attempts
            result.batches += 1
            result.committed_at = committed_at
            if progress is not None:
                phase = "dry run" if request.dry_run else "committed"
                progress(phase, len(result.builds), len(plan.targets))
        result.seconds = time.perf_counter() - started
        if not request.dry_run:
            guard_in_background(
                self.engine,
                [(b.dag_id, b.run_id) for b in result.changed if b.state == "failed"],
                cancel_id,
            )
        if not request.dry_run and self.notify_listeners and result.changed:
            self._notifiers = [t for t in self._notifiers if t.is_alive()]
            self._notifiers.append(notify_in_background(self.engine, result, request))
        log.info(
            "bkci: cancel %s by %s (%s): %d canceled, %d already finished%s",
            cancel_id,
            request.user,
            request.source,
            len(result.changed),
            result.count(Outcome.ALREADY_FINISHED),
            " (dry run)" if request.dry_run else "",
        )
        return result

    def _transaction(
        self, plan: Plan, batch: list[Target], cancel_id: str
    ) -> tuple[list[BuildResult], int, datetime | None]:
        attempts = 0
        retrying = Retrying(
            retry=retry_if_exception(is_lock_conflict),
            wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.1),
            stop=stop_after_attempt(self.attempts),
            reraise=True,
            before_sleep=lambda state: log.warning(
                "bkci: cancel %s met a lock conflict (attempt %d); retrying the whole transaction",
                cancel_id,
                state.attempt_number,
            ),
        )
        for attempt in retrying:
            with attempt:
                attempts += 1
                with _no_gc_pause(), self.engine.connect() as conn, conn.begin() as tx:
                    now = datetime.now(timezone.utc)
                    builds = self._apply(
                        CancelWrites(conn, plan, cancel_id, now, chunk=self.chunk), batch
                    )
                    if plan.request.dry_run:
                        tx.rollback()
                        return builds, attempts, None
                return builds, attempts, now
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _apply(self, writes: CancelWrites, batch: list[Target]) -> list[BuildResult]:
        writes.set_lock_timeout(self.lock_timeout)
        locked = writes.lock(batch)
        marked = writes.already_marked(locked)
        live = [
            t
            for t in batch
            if t.id in locked and locked[t.id][0] in ("queued", "running") and t.id not in marked
        ]
        results = {}
        for t in batch:
            state = locked.get(t.id, ("deleted", 0))[0]
            outcome = Outcome.ALREADY_CANCELED if t.id in marked else Outcome.ALREADY_FINISHED
            results[t.id] = BuildResult(t.dag_id, t.run_id, outcome, state, state)
        teardown_left: set[int] = set()
        for dag_id, part in by_dag(live, self.chunk):
            teardown_left |= writes.change_tasks(dag_id, part)
        for ids in chunks([t.id for t in live], self.chunk):
            writes.note(list(ids))
            writes.audit(list(ids))
            writes.mark(list(ids))
        for ids in chunks([t.id for t in live if t.id not in teardown_left], self.chunk):
            writes.end_runs(list(ids))
        for target in live:
            result = results[target.id]
            if target.id in teardown_left:
                result.outcome = Outcome.CANCELED_TEARDOWN_RUNNING
            else:
                result.outcome, result.state = Outcome.CANCELED, "failed"
        writes.fill_tasks(results, live)
        return [results[t.id] for t in batch]
