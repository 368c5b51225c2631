"""SQLite: keep a canceled run failed when a scheduler pass begun before the cancel ends it.

PostgreSQL's row locks keep the scheduler off the runs a cancel holds. SQLite
has none: a scheduler pass that read a run as running before the cancel
committed may evaluate it again after, find its leaves skipped, and write
``success`` over our ``failed``. That pass is the only one: the next reads the
run as finished. So for a few seconds after the commit a thread of ours sets
such a run back to ``failed`` (keeping its end date) and says so in the log.
The status store is not affected: the cancel marker keeps it CANCELED.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from sqlalchemy import Engine, and_, or_, update

from airflow_bkci.forksafe import sqlite_section

__all__ = ["GUARD_SECONDS", "guard_in_background", "restore_failed"]

log = logging.getLogger(__name__)

GUARD_SECONDS = 10.0
_EVERY = 0.1


def restore_failed(engine: Engine, runs: Sequence[tuple[str, str]]) -> int:
    """Set the given runs back to ``failed`` where something ended them ``success``; how many."""
    from airflow.models.dagrun import DagRun

    if not runs:
        return 0
    stmt = (
        update(DagRun)
        .where(
            DagRun.state == "success",
            or_(*(and_(DagRun.dag_id == d, DagRun.run_id == r) for d, r in runs)),
        )
        .values(state="failed")
        .execution_options(synchronize_session=False)
    )
    with sqlite_section(engine.url), engine.begin() as conn:
        return int(conn.execute(stmt).rowcount or 0)


def guard_in_background(
    engine: Engine, runs: Sequence[tuple[str, str]], cancel_id: str, seconds: float = GUARD_SECONDS
) -> threading.Thread | None:
    """On SQLite, watch the canceled runs for ``seconds``; None elsewhere (nothing to guard)."""
    if engine.dialect.name != "sqlite" or not runs:
        return None
    thread = threading.Thread(
        target=_guard,
        args=(engine, list(runs), cancel_id, seconds),
        name="bkci-cancel-guard",
        daemon=True,
    )
    thread.start()
    return thread


def _guard(engine: Engine, runs: list[tuple[str, str]], cancel_id: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            restored = restore_failed(engine, runs)
        except Exception as exc:  # a locked database: try again on the next round
            log.debug("bkci: cancel %s guard: %s", cancel_id, exc)
            restored = 0
        if restored:
            log.warning(
                "bkci: cancel %s: a scheduler pass that began before the cancel ended %d run(s) "
                "success; set back to failed (SQLite has no row locks to keep it off; the "
                "DAG's success callback may have run)",
                cancel_id,
                restored,
            )
        time.sleep(_EVERY)
