"""After a cancel commits: tell Airflow's listeners, so other plugins see it too.

In a background thread, outside the timed path: ``on_task_instance_failed``
for each task the cancel killed, ``on_dag_run_failed`` for each run it ended.
The objects carry the cancel's mark, so our own listener reports CANCELED.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from sqlalchemy import Engine, select

from airflow_bkci.cancel.request import CancelRequest, CancelResult, Outcome
from airflow_bkci.cancel.writes import task_key
from airflow_bkci.forksafe import sqlite_section

log = logging.getLogger(__name__)


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
            # In the scheduler (cancel-previous) LocalExecutor forks meanwhile: SQLite
            # work holds the fork guard (see airflow_bkci.forksafe).
            with sqlite_section(engine.url), Session(engine) as session:
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
                if task_key(ti.task_id, ti.map_index) in wanted:
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
