"""Engines for the store: URL rules, SQLite pragmas and write serialisation."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import date, datetime
from enum import Enum
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError

from airflow_bkci.exceptions import ConfigError

WRITE_OPTION = "bkci_write"
"""Execution option on a connection whose transaction will write (BEGIN IMMEDIATE)."""

SQLITE_BUSY_TIMEOUT_MS = 30_000


def json_default(value: Any) -> Any:
    """Encode the few non-JSON values that event fields may carry."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} value {value!r} cannot be stored as JSON")


def dumps(value: Any) -> str:
    return json.dumps(value, default=json_default, separators=(",", ":"))


def normalize_url(url: str | URL) -> URL:
    """Use psycopg 3 for plain ``postgresql://`` URLs (SQLAlchemy would pick psycopg2)."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(f"backend {parsed.get_backend_name()!r} is not supported")
    except (ArgumentError, ValueError) as exc:
        shown = url.render_as_string(hide_password=True) if isinstance(url, URL) else url
        raise ConfigError(
            f"bkci status store URL {shown!r} is not usable: {exc}. Use sqlite:///PATH or "
            "postgresql://USER@HOST/DB ([bkci] store_url, or --store)."
        ) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_store_engine(url: str | URL) -> Engine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, json_serializer=dumps)
        _serialise_sqlite_writers(engine)
        return engine
    return create_engine(parsed, json_serializer=dumps, pool_pre_ping=True)


def _set_wal(cursor: Any, attempts: int = 50) -> None:
    """Switch to WAL, waiting out other connections.

    Changing the journal mode needs the database to itself and SQLite does not
    run the busy handler for it: processes that open a new store at the same
    moment (scheduler and API server starting together) would otherwise fail
    with "database is locked".
    """
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def _serialise_sqlite_writers(engine: Engine) -> None:
    """WAL, a long busy timeout, and BEGIN IMMEDIATE for writers.

    pysqlite's own BEGIN is deferred: two writers would both read, then one
    fails to upgrade its lock with "database is locked" and no busy wait.
    Taking the write lock at BEGIN makes writers queue on the busy timeout
    instead, while readers (plain BEGIN) keep reading beside them under WAL.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            _set_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
