"""Run the store's Alembic migrations from code, safely from several processes."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from airflow_bkci.store.engine import WRITE_OPTION
from airflow_bkci.store.tables import VERSION_TABLE

log = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).with_name("migrations")

# Any fixed 64-bit number works; this one is "bkcimigr" in ASCII.
_PG_LOCK_KEY = 0x626B63696D696772


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("version_table", VERSION_TABLE)
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the store's tables to ``revision`` inside one transaction.

    The transaction first takes a lock every migrating process waits on: an
    advisory lock on PostgreSQL, the write lock (BEGIN IMMEDIATE) on SQLite.
    Whoever comes second finds the version table already at head and does
    nothing, so every process may call this at start-up.
    """
    config = alembic_config()
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    log.debug("bkci store at revision %s (%s)", revision, engine.url.render_as_string())
