"""Append-only local buffer of worker records: one SQLite file per host.

Task runners append here on their hot path (one INSERT on an open connection,
about 0.1 ms); forwarders claim rows with a short lease, post them, and ack or
quarantine them. Several processes on one host share the file: SQLite's WAL
and ``busy_timeout`` serialise writers, the lease keeps two forwarders from
sending the same rows at the same time, and an expired lease (a forwarder that
died mid-request) makes the rows claimable again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")

__all__ = ["DEFAULT_LEASE", "Backoff", "Spool"]

DEFAULT_LEASE = 30.0
"""Seconds a claimed row stays invisible to other forwarders."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record TEXT NOT NULL,
    created_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS spool_quarantine (
    id INTEGER PRIMARY KEY,
    record TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL,
    quarantined_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS receiver_backoff (
    url TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    retry_at REAL NOT NULL,
    error TEXT NOT NULL
);
PRAGMA user_version = 1;
"""
_SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of a spool file with every table of :data:`_SCHEMA`."""


@dataclass(frozen=True)
class Backoff:
    """A receiver that failed ``failures`` times in a row: no try before ``retry_at``."""

    failures: int
    retry_at: float
    error: str


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "database is locked" in text or "database is busy" in text


class Spool:
    """A local, durable, multi-process queue of JSON records.

    One instance holds one open connection and is safe to share between the
    threads of a process; processes share the file. Open it in the process
    that uses it: after a fork the child reopens its own connection.
    ``autocheckpoint=False`` keeps WAL checkpoints (milliseconds) off a hot
    path; some other connection to the file (the forwarder's) must then run them.
    """

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 5.0, autocheckpoint: bool = True
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._autocheckpoint = autocheckpoint
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        # SQLite's own busy handler sleeps 1, 2, 5, 10 ... ms between tries: a
        # lock held for half a millisecond by another task runner or the reader
        # would cost a hook several ms. We wait in steps from 0.1 ms instead.
        conn = sqlite3.connect(
            self.path,
            timeout=0,
            isolation_level=None,  # autocommit; multi-statement work uses BEGIN IMMEDIATE
            check_same_thread=False,  # guarded by self._lock
        )
        try:
            run = self._retrying  # connect(timeout=0) set SQLite's busy timeout to 0
            (version,) = run(lambda: conn.execute("PRAGMA user_version").fetchone())
            if version != _SCHEMA_VERSION:
                # Only the first opener of a file: WAL mode and the tables stay in it,
                # so a task runner's open is one header read and no DDL.
                run(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchall())
                run(lambda: conn.executescript(_SCHEMA))
            run(lambda: conn.execute("PRAGMA synchronous=NORMAL"))
            if not self._autocheckpoint:
                # Appenders on a hot path leave WAL checkpoints to the forwarder's commits.
                run(lambda: conn.execute("PRAGMA wal_autocheckpoint=0"))
            # Maps the WAL index now, so the first append (a hook) does not pay for it.
            run(lambda: conn.execute("SELECT 1 FROM spool LIMIT 1").fetchall())
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _retrying(self, action: Callable[[], _T]) -> _T:
        """``action()``, tried again while the file is locked, for up to the busy timeout."""
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.0001
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            # A connection must never cross a fork; the parent keeps its own.
            self._conn = None
            return self._connect()
        return self._conn

    def append(self, record: Mapping[str, Any]) -> int:
        """Store one record (a JSON-serialisable mapping); return its row id."""
        text = json.dumps(record, separators=(",", ":"), default=str)
        return self.append_text(text)

    def append_text(self, text: str) -> int:
        """Store a record already serialised (also used by tests to spool bad rows)."""
        with self._lock:
            db = self._db()
            cur = self._retrying(
                lambda: db.execute(
                    "INSERT INTO spool (record, created_at) VALUES (?, ?)", (text, time.time())
                )
            )
            return int(cur.lastrowid or 0)

    def has_claimable(self) -> bool:
        """Whether some row waits unleased (a read: no write lock taken)."""
        with self._lock:
            return self._claimable(self._db(), time.time())

    def _claimable(self, db: sqlite3.Connection, now: float) -> bool:
        row = self._retrying(
            lambda: db.execute(
                "SELECT 1 FROM spool WHERE lease_until <= ? LIMIT 1", (now,)
            ).fetchone()
        )
        return row is not None

    def claim(self, limit: int, *, lease: float = DEFAULT_LEASE) -> list[tuple[int, str]]:
        """Lease up to ``limit`` of the oldest unleased rows to the caller."""
        now = time.time()
        with self._lock:
            db = self._db()
            # A read first: the reader polls many times a second, and an UPDATE that
            # matches nothing still takes the write lock the task runners' hooks need.
            if not self._claimable(db, now):
                return []
            rows = self._retrying(
                lambda: db.execute(
                    "UPDATE spool SET lease_until = ? WHERE id IN ("
                    " SELECT id FROM spool WHERE lease_until <= ? ORDER BY id LIMIT ?"
                    ") RETURNING id, record",
                    (now + lease, now, max(0, int(limit))),
                ).fetchall()
            )
        return sorted((int(i), str(r)) for i, r in rows)

    def release(self, ids: Iterable[int]) -> None:
        """Give leased rows back at once (the send failed; another forwarder may try)."""
        self._many("UPDATE spool SET lease_until = 0 WHERE id = ?", ids)

    def ack(self, ids: Iterable[int]) -> None:
        """Delete rows the receiver accepted."""
        self._many("DELETE FROM spool WHERE id = ?", ids)

    def _many(self, sql: str, ids: Iterable[int]) -> None:
        params = [(int(i),) for i in ids]
        if not params:
            return
        with self._lock:
            db = self._db()
            self._retrying(lambda: db.execute("BEGIN IMMEDIATE"))
            try:
                db.executemany(sql, params)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def quarantine(self, row_id: int, reason: str) -> None:
        """Move one row aside with the reason, so it never blocks the queue."""
        with self._lock:
            db = self._db()
            self._retrying(lambda: db.execute("BEGIN IMMEDIATE"))
            try:
                db.execute(
                    "INSERT OR REPLACE INTO spool_quarantine"
                    " (id, record, reason, created_at, quarantined_at)"
                    " SELECT id, record, ?, created_at, ? FROM spool WHERE id = ?",
                    (reason, time.time(), int(row_id)),
                )
                db.execute("DELETE FROM spool WHERE id = ?", (int(row_id),))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def pending_count(self, limit: int | None = None) -> int:
        """Rows not yet acked or quarantined, leased or not; counted up to ``limit`` if given.

        A full count walks every row (about 7 ms over 100,000): a task runner's
        exit asks with a limit, so its cost does not grow with the host's backlog.
        """
        # LIMIT -1 is SQLite's "no limit": one statement either way.
        sql = "SELECT COUNT(*) FROM (SELECT 1 FROM spool LIMIT ?)"
        args = (-1 if limit is None else max(0, limit),)
        with self._lock:
            db = self._db()
            (count,) = self._retrying(lambda: db.execute(sql, args).fetchone())
        return int(count)

    def quarantined(self) -> list[tuple[int, str, str]]:
        """Quarantined rows as (id, record text, reason), oldest first."""
        with self._lock:
            rows = (
                self._db()
                .execute("SELECT id, record, reason FROM spool_quarantine ORDER BY id")
                .fetchall()
            )
        return [(int(i), str(r), str(why)) for i, r, why in rows]

    # -- the receiver's state, shared by every forwarder on the host ----------

    def backoff(self, url: str) -> Backoff | None:
        """The receiver's backoff, if its last try (by any forwarder here) failed."""
        with self._lock:
            row = (
                self._db()
                .execute(
                    "SELECT failures, retry_at, error FROM receiver_backoff WHERE url = ?", (url,)
                )
                .fetchone()
            )
        return None if row is None else Backoff(int(row[0]), float(row[1]), str(row[2]))

    def receiver_failed(self, url: str, error: str, delay: Callable[[int], float]) -> Backoff:
        """Count one more failure in a row; ``delay(failures)`` says how long to back off."""
        with self._lock:
            db = self._db()
            self._retrying(lambda: db.execute("BEGIN IMMEDIATE"))
            try:
                row = db.execute(
                    "SELECT failures FROM receiver_backoff WHERE url = ?", (url,)
                ).fetchone()
                failures = (int(row[0]) if row else 0) + 1
                state = Backoff(failures, time.time() + max(0.0, delay(failures)), error[:1000])
                db.execute(
                    "INSERT OR REPLACE INTO receiver_backoff (url, failures, retry_at, error)"
                    " VALUES (?, ?, ?, ?)",
                    (url, state.failures, state.retry_at, state.error),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return state

    def receiver_ok(self, url: str) -> None:
        """The receiver answered: forget its backoff."""
        with self._lock:
            db = self._db()
            self._retrying(lambda: db.execute("DELETE FROM receiver_backoff WHERE url = ?", (url,)))

    def checkpoint(self) -> None:
        """Fold the WAL into the database file, without waiting for readers."""
        with self._lock:
            db = self._db()
            self._retrying(lambda: db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
