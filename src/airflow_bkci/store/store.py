"""The status store: one object that owns an engine and every read and write."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.exc import DBAPIError, OperationalError

from airflow_bkci.exceptions import StoreUnavailable
from airflow_bkci.forksafe import sqlite_section
from airflow_bkci.model.event import StatusEvent, utcnow
from airflow_bkci.model.fsm import NodeState
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.store import dashboard, metrics, migrate, queries
from airflow_bkci.store.apply import apply_events
from airflow_bkci.store.engine import WRITE_OPTION, create_store_engine
from airflow_bkci.store.queries import BuildFilter, BuildKey
from airflow_bkci.store.recording import Recorder
from airflow_bkci.store.results import ApplyResult, Transition
from airflow_bkci.store.signal import announce
from airflow_bkci.store.tables import QuarantineRow

log = logging.getLogger(__name__)

# PostgreSQL deadlock and serialisation failure: the whole batch can run again.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})
_ATTEMPTS = 3


class Store:
    """Builds, their nodes and history, kept in SQLite or PostgreSQL."""

    def __init__(self, url: str, *, record_to: str | Path | None = None) -> None:
        self.engine = create_store_engine(url)
        # Held around every transaction: see airflow_bkci.forksafe.
        self._fork_guard = sqlite_section(self.engine.url)
        # Every applied batch is appended here ([bkci] record_events_to), for replay.
        self.recorder = Recorder(record_to) if record_to else None

    @classmethod
    def from_conf(cls) -> Store:
        from airflow_bkci import conf

        return cls(conf.store_url(), record_to=conf.record_events_to())

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def migrate(self) -> None:
        """Create or upgrade the tables; safe from several processes at once."""
        with self._fork_guard, self._errors("migrate"):
            migrate.upgrade(self.engine)

    def apply(self, events: Sequence[StatusEvent]) -> ApplyResult:
        """Apply a batch in one transaction; bad events land in ``rejected``."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                now = utcnow()
                with self._write() as conn:
                    result = apply_events(conn, events, now)
                    if result.build_ids:
                        announce(conn)  # wakes dispatchers in other processes at commit
                self._record(events, now)
                return result
            except StoreUnavailable as exc:
                if attempt == _ATTEMPTS or not _retryable(exc.__cause__):
                    raise
                log.warning(
                    "bkci store: batch of %d events hit %s; retrying (attempt %d of %d)",
                    len(events),
                    exc.__cause__,
                    attempt + 1,
                    _ATTEMPTS,
                )
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def quarantine(self, payload: str, reason: str, source: str) -> None:
        """Keep a record that could not be read as events, for a human to look at."""
        row = {"received_at": utcnow(), "source": source, "reason": reason, "payload": payload}
        with self._write() as conn:
            conn.execute(insert(QuarantineRow), row)
        log.warning("bkci store: quarantined a record from %s: %s", source, reason)

    def build_tree(self, build_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            return queries.build_tree(conn, build_id)

    def snapshot(self, build_id: str) -> dict[str, Any] | None:
        """``{"build_id", "pipeline_id", "sequence", "document"}``, consistent with each other."""
        with self._read() as conn:
            return queries.snapshot(conn, build_id)

    def changes(
        self, build_id: str, after: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Change sets ``{"sequence", "patch", "created_at"}`` after ``after``, in order."""
        with self._read() as conn:
            return queries.changes(conn, build_id, after, limit)

    def find_build(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            return queries.find_build(conn, dag_id, run_id)

    def build_refs(self, build_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{build_id: (dag_id, run_id)}`` of the ids the store knows; unknown ids are left out."""
        with self._read() as conn:
            return queries.build_refs(conn, build_ids)

    def builds(
        self,
        dag_id: str | None = None,
        *,
        status: Sequence[BuildStatus] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        with self._read() as conn:
            return queries.builds(
                conn, dag_id, status=status, since=since, until=until, limit=limit, offset=offset
            )

    def last_update(self) -> datetime | None:
        """When a build last changed here: the reconciler catches up from there."""
        with self._read() as conn:
            return queries.last_update(conn)

    def history(self, build_id: str, node_id: str = "") -> list[Transition]:
        with self._read() as conn:
            return queries.history(conn, build_id, node_id)

    # -- the query API ----------------------------------------------------------

    def pipeline_ids(self) -> list[str]:
        """Every pipeline the store has seen a build of, sorted."""
        with self._read() as conn:
            return queries.pipeline_ids(conn)

    def pipelines(self, dag_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The given pipelines (those the store knows), each with its newest build."""
        with self._read() as conn:
            return queries.pipelines(conn, dag_ids)

    def build_page(
        self, dag_id: str, flt: BuildFilter, after: BuildKey | None, limit: int
    ) -> list[dict[str, Any]]:
        """A page of the pipeline's builds, newest first, after the key ``after``."""
        with self._read() as conn:
            return queries.build_page(conn, dag_id, flt, after, limit)

    def build_key(self, build_id: str) -> tuple[str, BuildKey] | None:
        """``(dag_id, (run_after, build_num))`` of a build, or None if unknown."""
        with self._read() as conn:
            return queries.build_key(conn, build_id)

    def changes_since(self, build_id: str, after: int, limit: int) -> dict[str, Any] | None:
        """``{"build_id", "pipeline_id", "sequence", "changes"}``: change sets up to the
        sequence current when read; None for an unknown build."""
        with self._read() as conn:
            return queries.changes_since(conn, build_id, after, limit)

    def node_known(self, build_id: str, node_id: str) -> bool:
        with self._read() as conn:
            return queries.node_known(conn, build_id, node_id)

    def pipeline_metrics(
        self, dag_id: str, since: datetime, until: datetime, top: int = 10
    ) -> dict[str, Any]:
        """Outcomes, durations, queue times and failing tasks of builds due in the window."""
        with self._read() as conn:
            return metrics.pipeline_metrics(conn, dag_id, since, until, top)

    # -- the dashboard ----------------------------------------------------------

    def wall_tiles(
        self, dag_ids: Sequence[str], since: datetime, until: datetime, trend: int
    ) -> dict[str, dashboard.Tile]:
        """A wall tile of each pipeline the store knows among ``dag_ids``."""
        with self._read() as conn:
            return dashboard.wall_tiles(conn, dag_ids, since, until, trend)

    def pipeline_series(
        self, dag_id: str, since: datetime, until: datetime, bucket: dashboard.Bucket
    ) -> list[dict[str, Any]]:
        """The pipeline's outcomes and durations per bucket of ``[since, until)``."""
        with self._read() as conn:
            return dashboard.pipeline_series(conn, dag_id, since, until, bucket)

    def build_transitions(self, build_id: str, limit: int) -> list[Transition]:
        """Every node's transitions of the build, newest first."""
        with self._read() as conn:
            return dashboard.build_transitions(conn, build_id, limit)

    def node_states(self, build_id: str) -> dict[str, NodeState]:
        with self._read() as conn:
            return queries.node_states(conn, build_id)

    def dispose(self) -> None:
        with self._fork_guard:  # closing an SQLite connection is SQLite work too
            self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._fork_guard, self._errors("write"), self.engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    def _record(self, events: Sequence[StatusEvent], now: datetime) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder.record(events, now)
        except OSError as exc:  # a debugging aid must never stop the store
            log.warning(
                "bkci store: cannot record to %s (%s); recording off", self.recorder.path, exc
            )
            self.recorder = None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._fork_guard, self._errors("read"), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            raise StoreUnavailable(
                f"bkci status store {self!r} failed to {what}: {exc.orig}. "
                "Check that the database is up, [bkci] store_url is right and the "
                "tables exist (Store.migrate()); then retry."
            ) from exc


def _retryable(exc: BaseException | None) -> bool:
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES
