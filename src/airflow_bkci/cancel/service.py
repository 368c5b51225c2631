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

import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    create_engine,
    event,
    extract,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import DBAPIError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from airflow_bkci.cancel.marks import cancel_table, cancel_task_table, ensure_tables
from airflow_bkci.cancel.request import (
    BuildResult,
    CancelRejected,
    CancelRequest,
    CancelResult,
    Outcome,
    RunKey,
)
from airflow_bkci.model.layout import teardown_tasks

log = logging.getLogger(__name__)

RUNNING_LIKE = ("running", "deferred", "up_for_reschedule", "awaiting_input")
"""Task states with a live process or trigger: they fail, as in Airflow's mark-failed."""
FINISHED = ("success", "failed", "skipped", "upstream_failed", "removed")
AUDIT_EVENT = "bkci_cancel"
CHUNK = 1000
MAX_NOTE = 1000

Progress = Callable[[str, int, int], None]
"""Called as (phase, done, total) while a long cancel works."""


@dataclass(frozen=True, slots=True)
class Target:
    id: int
    dag_id: str
    run_id: str
    state: str
    clear_number: int

    @property
    def key(self) -> RunKey:
        return (self.dag_id, self.run_id)


@dataclass(frozen=True)
class Plan:
    """The validated request: targets in lock order, and each DAG's teardown tasks."""

    request: CancelRequest
    targets: list[Target]
    duplicates: list[RunKey]
    teardowns: dict[str, frozenset[str]]

    @property
    def dag_ids(self) -> list[str]:
        return sorted({t.dag_id for t in self.targets})


def is_lock_conflict(exc: BaseException) -> bool:
    """A lock timeout, deadlock or serialization failure: the whole transaction may be retried."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if code in ("55P03", "40P01", "40001"):
        return True
    return "database is locked" in str(orig)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _task_key(task_id: str, map_index: int) -> str:
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


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
        self.is_sqlite = engine.dialect.name == "sqlite"
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
                targets = self._filtered(conn, request)
            else:
                targets, duplicates = self._named(conn, request.runs)
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
            teardowns = self._teardowns(conn, targets)
        return Plan(request, targets, duplicates, teardowns)

    def _named(self, conn: Connection, runs: Sequence[RunKey]) -> tuple[list[Target], list[RunKey]]:
        from airflow.models.dagrun import DagRun

        dr = DagRun.__table__.c
        seen: set[RunKey] = set()
        unique: list[RunKey] = []
        duplicates: list[RunKey] = []
        for key in runs:
            (duplicates if key in seen else unique).append(key)
            seen.add(key)
        found: dict[RunKey, Target] = {}
        for part in _chunks(unique):
            stmt = select(dr.id, dr.dag_id, dr.run_id, dr.state, dr.clear_number).where(
                tuple_(dr.dag_id, dr.run_id).in_(list(part))
            )
            for row in conn.execute(stmt):
                found[(row[1], row[2])] = Target(row[0], row[1], row[2], str(row[3]), row[4] or 0)
        unknown = [k for k in unique if k not in found]
        if unknown:
            shown = ", ".join(f"{d}/{r}" for d, r in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise CancelRejected([f"{len(unknown)} unknown builds: {shown}{more}"], status=404)
        return sorted(found.values(), key=lambda t: t.id), duplicates

    def _filtered(self, conn: Connection, request: CancelRequest) -> list[Target]:
        from airflow.models.dagrun import DagRun

        flt = request.filter
        assert flt is not None
        dr = DagRun.__table__.c
        stmt = select(dr.id, dr.dag_id, dr.run_id, dr.state, dr.clear_number, dr.conf).where(
            dr.state.in_(list(flt.states))
        )
        if flt.dag_ids:
            stmt = stmt.where(dr.dag_id.in_(list(flt.dag_ids)))
        if flt.older_than is not None:
            stmt = stmt.where(dr.run_after < datetime.now(timezone.utc) - flt.older_than)
        if flt.due_before is not None:
            stmt = stmt.where(dr.run_after < flt.due_before)
        excluded = set(flt.exclude)
        targets = []
        for row in conn.execute(stmt.order_by(dr.id)):
            if (row[1], row[2]) in excluded:
                continue
            if flt.conf and not _conf_matches(row[5], flt.conf):
                continue
            targets.append(Target(row[0], row[1], row[2], str(row[3]), row[4] or 0))
        return targets

    def _teardowns(self, conn: Connection, targets: Sequence[Target]) -> dict[str, frozenset[str]]:
        """Teardown task ids per DAG, over every serialized version its target runs use."""
        from airflow.models.serialized_dag import SerializedDagModel as SDM
        from airflow.models.taskinstance import TaskInstance as TI

        if not targets:
            return {}
        ti = TI.__table__.c
        versions: set[Any] = set()
        for dag_id, part in self._by_dag(targets):
            stmt = (
                select(ti.dag_version_id)
                .distinct()
                .where(ti.dag_id == dag_id, ti.run_id.in_([t.run_id for t in part]))
            )
            versions.update(v for v in conn.scalars(stmt) if v is not None)
        found: dict[str, set[str]] = {t.dag_id: set() for t in targets}
        from sqlalchemy.orm import Session

        with Session(bind=conn) as session:
            models = list(
                session.scalars(select(SDM).where(SDM.dag_version_id.in_(list(versions))))
            )
            missing = set(found) - {m.dag_id for m in models}
            for dag_id in missing:  # runs with no TI yet: the DAG's latest version
                latest = session.scalar(
                    select(SDM).where(SDM.dag_id == dag_id).order_by(SDM.created_at.desc()).limit(1)
                )
                if latest is not None:
                    models.append(latest)
            for model in models:
                data = model.data
                if isinstance(data, dict) and model.dag_id in found:
                    found[model.dag_id] |= teardown_tasks(data)
        return {dag_id: frozenset(ids) for dag_id, ids in found.items()}

    @staticmethod
    def _by_dag(targets: Sequence[Target]) -> Iterator[tuple[str, list[Target]]]:
        groups: dict[str, list[Target]] = defaultdict(list)
        for target in targets:
            groups[target.dag_id].append(target)
        for dag_id in sorted(groups):
            for part in _chunks(groups[dag_id]):
                yield dag_id, list(part)

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
        batches = list(_chunks(plan.targets, self.atomic_limit)) or [[]]
        done = 0
        for batch in batches:
            outcome, attempts, committed_at = self._transaction(
                plan, list(batch), cancel_id, progress
            )
            result.builds.extend(outcome)
            result.attempts += attempts
            result.batches += 1
            result.committed_at = committed_at
            done += len(batch)
            if progress is not None:
                progress("committed" if not request.dry_run else "dry run", done, len(plan.targets))
        result.seconds = time.perf_counter() - started
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
        self, plan: Plan, batch: list[Target], cancel_id: str, progress: Progress | None
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
                with self.engine.connect() as conn, conn.begin() as tx:
                    now = datetime.now(timezone.utc)
                    builds = self._apply(conn, plan, batch, cancel_id, now, progress)
                    if plan.request.dry_run:
                        tx.rollback()
                        return builds, attempts, None
                return builds, attempts, now
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _apply(
        self,
        conn: Connection,
        plan: Plan,
        batch: list[Target],
        cancel_id: str,
        now: datetime,
        progress: Progress | None,
    ) -> list[BuildResult]:
        from airflow.models.dagrun import DagRun

        dr = DagRun.__table__.c
        if not self.is_sqlite:
            ms = max(1, int(self.lock_timeout * 1000))
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{ms}ms'")
        locked: dict[int, tuple[str, int]] = {}
        for part in _chunks(batch):
            stmt = (
                select(dr.id, dr.state, dr.clear_number)
                .where(dr.id.in_([t.id for t in part]))
                .order_by(dr.id)
                .with_for_update(of=DagRun.__table__)
            )
            locked.update({row[0]: (str(row[1]), row[2] or 0) for row in conn.execute(stmt)})
        marked = self._already_marked(conn, locked)
        live = [
            t
            for t in batch
            if t.id in locked and locked[t.id][0] in ("queued", "running") and t.id not in marked
        ]
        results = {
            t.id: BuildResult(
                t.dag_id,
                t.run_id,
                Outcome.ALREADY_CANCELED if t.id in marked else Outcome.ALREADY_FINISHED,
                locked.get(t.id, ("deleted", 0))[0],
                locked.get(t.id, ("deleted", 0))[0],
            )
            for t in batch
        }
        if progress is not None:
            progress("locked", len(locked), len(batch))
        teardown_left: set[int] = set()
        for dag_id, part in self._by_dag(live):
            teardown_left |= self._change_tasks(conn, plan, dag_id, part, cancel_id, now)
        ended = [t.id for t in live if t.id not in teardown_left]
        live_ids = [t.id for t in live]
        for part in _chunks(live_ids):
            self._note(conn, list(part), plan.request, now)
            self._audit(conn, list(part), plan.request, cancel_id, now)
            self._mark(conn, list(part), plan.request, cancel_id, now)
        for part in _chunks(ended):
            conn.execute(
                update(DagRun.__table__)
                .where(dr.id.in_(list(part)))
                .values(state="failed", end_date=now, updated_at=now)
            )
        for target in live:
            result = results[target.id]
            result.outcome = (
                Outcome.CANCELED_TEARDOWN_RUNNING
                if target.id in teardown_left
                else Outcome.CANCELED
            )
            result.state = locked[target.id][0] if target.id in teardown_left else "failed"
        self._fill_tasks(conn, cancel_id, results, plan.teardowns, live)
        return [results[t.id] for t in batch]

    def _already_marked(self, conn: Connection, locked: dict[int, tuple[str, int]]) -> set[int]:
        c = cancel_table.c
        marked: set[int] = set()
        pairs = [(run_id, clear) for run_id, (_s, clear) in locked.items()]
        for part in _chunks(pairs):
            stmt = select(c.dag_run_id).where(tuple_(c.dag_run_id, c.clear_number).in_(list(part)))
            marked.update(conn.scalars(stmt))
        return marked

    def _change_tasks(
        self,
        conn: Connection,
        plan: Plan,
        dag_id: str,
        part: list[Target],
        cancel_id: str,
        now: datetime,
    ) -> set[int]:
        """Marker rows, then failed or skipped, per DAG chunk; returns runs with teardowns left."""
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance as TI

        ti = TI.__table__.c
        dr = DagRun.__table__.c
        run_ids = [t.run_id for t in part]
        teardowns = sorted(plan.teardowns.get(dag_id, frozenset()))
        unfinished = or_(ti.state.is_(None), ti.state.not_in(FINISHED))
        of_chunk = and_(ti.dag_id == dag_id, ti.run_id.in_(run_ids))
        not_teardown = ti.task_id.not_in(teardowns) if teardowns else literal(True)
        new_state = case((ti.state.in_(RUNNING_LIKE), literal("failed")), else_=literal("skipped"))
        conn.execute(
            insert(cancel_task_table).from_select(
                [
                    "dag_run_id",
                    "task_id",
                    "map_index",
                    "try_number",
                    "cancel_id",
                    "dag_id",
                    "run_id",
                    "prior_state",
                    "new_state",
                ],
                select(
                    dr.id,
                    ti.task_id,
                    ti.map_index,
                    ti.try_number,
                    literal(cancel_id),
                    ti.dag_id,
                    ti.run_id,
                    ti.state,
                    new_state,
                )
                .select_from(
                    TI.__table__.join(
                        DagRun.__table__, and_(dr.dag_id == ti.dag_id, dr.run_id == ti.run_id)
                    )
                )
                .where(of_chunk, unfinished, not_teardown),
            )
        )
        conn.execute(
            update(TI.__table__)
            .where(of_chunk, ti.state.in_(RUNNING_LIKE), not_teardown)
            .values(
                state="failed",
                start_date=func.coalesce(ti.start_date, now),
                end_date=func.coalesce(ti.end_date, now),
                duration=self._seconds_since(ti.start_date, now),
                updated_at=now,
            )
        )
        conn.execute(
            update(TI.__table__)
            .where(
                of_chunk,
                unfinished,
                ti.state.not_in(RUNNING_LIKE) | ti.state.is_(None),
                not_teardown,
            )
            .values(
                state="skipped",
                start_date=func.coalesce(ti.start_date, now),
                end_date=func.coalesce(ti.end_date, now),
                duration=self._seconds_since(ti.start_date, now),
                updated_at=now,
            )
        )
        if not teardowns:
            return set()
        waiting = (
            select(ti.run_id).distinct().where(of_chunk, unfinished, ti.task_id.in_(teardowns))
        )
        left = set(conn.scalars(waiting))
        return {t.id for t in part if t.run_id in left}

    def _seconds_since(self, start: Any, now: datetime) -> Any:
        """SQL for (now - start) in seconds, 0 when the task never started."""
        from airflow.utils.sqlalchemy import UtcDateTime

        bound = literal(now, UtcDateTime)
        if self.is_sqlite:
            elapsed = (func.julianday(bound) - func.julianday(start)) * 86400.0
        else:
            elapsed = extract("epoch", bound - start)
        return case((start.is_(None), 0.0), else_=elapsed)

    def _note(
        self, conn: Connection, run_ids: list[int], request: CancelRequest, now: datetime
    ) -> None:
        """Append one line to each run's note; what was there stays (cut only past 1,000 chars)."""
        from airflow.models.dagrun import DagRun, DagRunNote

        note = DagRunNote.__table__
        line = f"[bkci] canceled by {request.user} at {now:%Y-%m-%d %H:%M:%S} UTC: {request.reason}"
        line = line[:900]
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert  # type: ignore[assignment]
        stmt = upsert(note).from_select(
            ["dag_run_id", "user_id", "content", "created_at", "updated_at"],
            select(
                DagRun.__table__.c.id,
                literal(request.user[:128]),
                literal(line),
                literal(now, note.c.created_at.type),
                literal(now, note.c.updated_at.type),
            ).where(DagRun.__table__.c.id.in_(run_ids)),
        )
        old = note.c.content
        keep = MAX_NOTE - len(line) - 1
        appended = case(
            (or_(old.is_(None), old == ""), stmt.excluded.content),
            else_=func.substr(old, 1, keep) + literal("\n") + stmt.excluded.content,
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[note.c.dag_run_id],
                set_={"content": appended, "updated_at": stmt.excluded.updated_at},
            )
        )

    def _audit(
        self,
        conn: Connection,
        run_ids: list[int],
        request: CancelRequest,
        cancel_id: str,
        now: datetime,
    ) -> None:
        from airflow.models.dagrun import DagRun
        from airflow.models.log import Log

        dr = DagRun.__table__.c
        extra = json.dumps(
            {
                "cancel_id": cancel_id,
                "reason": request.reason,
                "source": request.source,
                "tool": "airflow-bkci",
            }
        )
        conn.execute(
            insert(Log.__table__).from_select(
                [
                    "dttm",
                    "dag_id",
                    "run_id",
                    "event",
                    "logical_date",
                    "owner",
                    "owner_display_name",
                    "extra",
                ],
                select(
                    literal(now, Log.__table__.c.dttm.type),
                    dr.dag_id,
                    dr.run_id,
                    literal(AUDIT_EVENT),
                    dr.logical_date,
                    literal(request.user),
                    literal(request.user),
                    literal(extra),
                ).where(dr.id.in_(run_ids)),
            )
        )

    def _mark(
        self,
        conn: Connection,
        run_ids: list[int],
        request: CancelRequest,
        cancel_id: str,
        now: datetime,
    ) -> None:
        from airflow.models.dagrun import DagRun

        dr = DagRun.__table__.c
        conn.execute(
            insert(cancel_table).from_select(
                [
                    "dag_run_id",
                    "clear_number",
                    "dag_id",
                    "run_id",
                    "cancel_id",
                    "reason",
                    "canceled_by",
                    "canceled_at",
                    "prior_state",
                ],
                select(
                    dr.id,
                    func.coalesce(dr.clear_number, 0),
                    dr.dag_id,
                    dr.run_id,
                    literal(cancel_id),
                    literal(request.reason),
                    literal(request.user),
                    literal(now, cancel_table.c.canceled_at.type),
                    dr.state,
                ).where(dr.id.in_(run_ids)),
            )
        )

    def _fill_tasks(
        self,
        conn: Connection,
        cancel_id: str,
        results: dict[int, BuildResult],
        teardowns: dict[str, frozenset[str]],
        live: list[Target],
    ) -> None:
        from airflow.models.taskinstance import TaskInstance as TI

        c = cancel_task_table.c
        stmt = select(c.dag_run_id, c.task_id, c.map_index, c.new_state).where(
            c.cancel_id == cancel_id
        )
        for run_id, task_id, map_index, new_state in conn.execute(stmt):
            result = results.get(run_id)
            if result is not None:
                (result.failed if new_state == "failed" else result.skipped).append(
                    _task_key(task_id, map_index)
                )
        ti = TI.__table__.c
        for dag_id, part in self._by_dag(live):
            ids = sorted(teardowns.get(dag_id, frozenset()))
            if not ids:
                continue
            by_run = {t.run_id: t.id for t in part}
            pending = select(ti.run_id, ti.task_id, ti.map_index).where(
                ti.dag_id == dag_id,
                ti.run_id.in_(list(by_run)),
                ti.task_id.in_(ids),
                or_(ti.state.is_(None), ti.state.not_in(FINISHED)),
            )
            for run_id, task_id, map_index in conn.execute(pending):
                results[by_run[run_id]].teardowns.append(_task_key(task_id, map_index))
        for result in results.values():
            result.failed.sort()
            result.skipped.sort()
            result.teardowns.sort()


def _conf_matches(conf: Any, wanted: Any) -> bool:
    if not isinstance(conf, dict):
        return False
    return all(key in conf and conf[key] == value for key, value in wanted.items())


def notify_in_background(
    engine: Engine, result: CancelResult, request: CancelRequest
) -> threading.Thread:
    """Tell Airflow's listeners (other plugins, and ours) about the canceled runs and killed tasks.

    Outside the timed path and after the commit: the listeners see committed
    rows. Our own listener finds the marker and reports CANCELED.
    """
    thread = threading.Thread(
        target=_notify, args=(engine, result, request), name="bkci-cancel-notify", daemon=True
    )
    thread.start()
    return thread


def _notify(engine: Engine, result: CancelResult, request: CancelRequest) -> None:
    try:
        from airflow.listeners.listener import get_listener_manager
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance as TI
        from sqlalchemy.orm import Session

        from airflow_bkci.listeners.rows import CancelMark
        from airflow_bkci.listeners.server import CANCEL_MARK_ATTR

        hooks = get_listener_manager().hook
        message = f"canceled by {request.user}: {request.reason}"
        mark = CancelMark(
            result.cancel_id,
            request.reason,
            request.user,
            result.committed_at or datetime.now(timezone.utc),
        )
        for build in result.changed:
            with Session(engine) as session:
                run = session.scalar(
                    select(DagRun).where(
                        DagRun.dag_id == build.dag_id, DagRun.run_id == build.run_id
                    )
                )
                killed = list(
                    session.scalars(
                        select(TI).where(
                            TI.dag_id == build.dag_id,
                            TI.run_id == build.run_id,
                            TI.state == "failed",
                        )
                    )
                )
                # Detached, so listeners that wait for a commit report at once;
                # the mark tells ours it was a cancel, not a failure.
                session.expunge_all()
            wanted = set(build.failed)
            for ti in killed:
                if _task_key(ti.task_id, ti.map_index) in wanted:
                    setattr(ti, CANCEL_MARK_ATTR, mark)
                    hooks.on_task_instance_failed(
                        previous_state="running", task_instance=ti, error=message
                    )
            if run is not None and build.outcome is Outcome.CANCELED:
                setattr(run, CANCEL_MARK_ATTR, mark)
                hooks.on_dag_run_failed(dag_run=run, msg=message)
    except Exception:
        log.warning(
            "bkci: telling listeners about cancel %s failed", result.cancel_id, exc_info=True
        )
