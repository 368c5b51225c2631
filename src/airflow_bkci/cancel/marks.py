"""The durable cancel marker: two tables of ours in Airflow's own database.

They are written in the cancel's transaction, next to the state changes they
explain, so a marker exists exactly when the cancel committed, even if the
process dies right after. Every collector that reads Airflow's database reads
them too, and reports CANCELED instead of the FAILED Airflow's rows say.

``bkci_cancel`` has one row per canceled run and clear (a cleared run starts
again and is no longer canceled); ``bkci_cancel_task`` one row per task
instance the cancel changed, with its try, so a later try is not canceled.
Run markers go with their run (``ON DELETE CASCADE``), so ``airflow db clean``
and a deleted run leave no marker that a new run of the same id could inherit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from airflow.models.dagrun import DagRun
from airflow.utils.sqlalchemy import UtcDateTime
from sqlalchemy import (
    Column,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from airflow_bkci.forksafe import sqlite_section

log = logging.getLogger(__name__)

metadata = MetaData()

cancel_table = Table(
    "bkci_cancel",
    metadata,
    Column(
        "dag_run_id",
        Integer,
        ForeignKey(DagRun.__table__.c.id, ondelete="CASCADE", name="bkci_cancel_dag_run_fkey"),
        primary_key=True,
    ),
    Column("clear_number", Integer, primary_key=True),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("cancel_id", String(36), nullable=False),
    Column("reason", Text, nullable=False),
    Column("canceled_by", String(500), nullable=True),
    Column("canceled_at", UtcDateTime, nullable=False),
    Column("prior_state", String(20), nullable=False),
    Index("bkci_cancel_run", "dag_id", "run_id"),
    Index("bkci_cancel_batch", "cancel_id"),
)

cancel_task_table = Table(
    "bkci_cancel_task",
    metadata,
    # No foreign key: checking one per task row was a fifth of a 2,000-run cancel.
    # Rows are found through their run marker's cancel_id, so the rows of a
    # deleted run (whose marker cascades away) are never read again.
    Column("cancel_id", String(36), primary_key=True),
    Column("dag_run_id", Integer, primary_key=True),
    Column("task_id", String(250), primary_key=True),
    Column("map_index", Integer, primary_key=True),
    Column("try_number", Integer, primary_key=True),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("prior_state", String(20), nullable=True),
    Column("new_state", String(20), nullable=False),
)


_ready: set[str] = set()
_ready_lock = threading.Lock()


def ensure_tables(engine: Engine) -> None:
    """Create the marker tables in Airflow's database if they are missing (idempotent).

    Two processes may race to create them; the loser finds them made.
    """
    key = str(engine.url)
    if key in _ready:
        return
    with _ready_lock:
        if key in _ready:
            return
        # In the scheduler this runs on our thread while LocalExecutor forks:
        # SQLite work must hold the fork guard (see airflow_bkci.forksafe).
        with sqlite_section(engine.url):
            try:
                metadata.create_all(engine, checkfirst=True)
            except SQLAlchemyError:
                # another process created them between our check and our CREATE
                log.debug("bkci: marker tables raced; checking again", exc_info=True)
                metadata.create_all(engine, checkfirst=True)
        _ready.add(key)


TaskKey = tuple[str, str, str, int, int]  # dag_id, run_id, task_id, map_index, try_number


def canceled_tasks(session: Session, cancel_ids: Iterable[str], chunk: int = 500) -> set[TaskKey]:
    """(dag_id, run_id, task_id, map_index, try_number) of the task tries these cancels changed."""
    c = cancel_task_table.c
    keys: set[TaskKey] = set()
    wanted = sorted(set(cancel_ids))
    for start in range(0, len(wanted), chunk):
        stmt = select(c.dag_id, c.run_id, c.task_id, c.map_index, c.try_number).where(
            c.cancel_id.in_(wanted[start : start + chunk])
        )
        keys.update((r[0], r[1], r[2], r[3], r[4]) for r in session.execute(stmt))
    return keys
