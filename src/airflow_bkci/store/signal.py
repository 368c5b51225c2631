"""A cheap cross-process signal that someone committed to the status store.

A dispatcher in the scheduler is told of change sets its own process stored
(an in-process wake-up), but the API server stores some too: a task's start,
worker records through the ingest route, manual changes. Without a signal it
would only find them at its next poll. The signal costs no table read:

- SQLite: ``PRAGMA data_version`` on a connection of its own changes whenever
  another connection commits; checking it is a few microseconds.
- PostgreSQL: the store's writes ``NOTIFY`` :data:`CHANNEL` in their
  transaction (delivered at commit), and the signal ``LISTEN`` s on a
  connection of its own.

Anything that goes wrong with the signal only makes the waiter fall back to
its poll; it is reopened on the next wait.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import Connection, Engine, text

from airflow_bkci.forksafe import sqlite_section

__all__ = ["CHANNEL", "StoreSignal", "announce"]

log = logging.getLogger(__name__)

CHANNEL = "bkci_store"
_SLICE = 0.01


def announce(conn: Connection) -> None:
    """Tell listeners, when this transaction commits, that the store changed (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


class StoreSignal:
    """Waits until another connection committed to the store, a wake event is set, or a timeout."""

    def __init__(self, engine: Engine) -> None:
        self.url = engine.url
        self._conn: Any = None
        self._version: int | None = None
        self._failed_at = 0.0

    def wait(self, timeout: float, wake: threading.Event) -> bool:
        """True when the store changed or ``wake`` was set before ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while True:
            if wake.is_set():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._changed(min(_SLICE, left)):
                return True

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                with sqlite_section(self.url):
                    conn.close()
            except Exception:
                pass

    def _changed(self, slice_: float) -> bool:
        if self._conn is None and not self._open():
            time.sleep(slice_)
            return False
        try:
            if self.url.get_backend_name() == "sqlite":
                time.sleep(slice_)
                with sqlite_section(self.url):
                    version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
                changed = self._version is not None and version != self._version
                self._version = version
                return changed
            return any(True for _ in self._conn.notifies(timeout=slice_, stop_after=1))
        except Exception as exc:
            log.debug("bkci store signal lost (%s); polling until it is back", exc)
            self.close()
            self._failed_at = time.monotonic()
            return False

    def _open(self) -> bool:
        if time.monotonic() - self._failed_at < 5.0:
            return False
        try:
            if self.url.get_backend_name() == "sqlite":
                with sqlite_section(self.url):
                    self._conn = sqlite3.connect(
                        self.url.database or ":memory:", check_same_thread=False
                    )
                self._version = None
            else:
                import psycopg

                self._conn = psycopg.connect(_libpq(self.url), autocommit=True, connect_timeout=5)
                self._conn.execute(f"LISTEN {CHANNEL}")
            return True
        except Exception as exc:
            log.debug("bkci store signal not available (%s); polling", exc)
            self._conn = None
            self._failed_at = time.monotonic()
            return False


def _libpq(url: Any) -> str:
    plain = url.set(drivername="postgresql")
    return str(plain.render_as_string(hide_password=False))
