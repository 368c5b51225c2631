"""Pipeline metrics over a time window: outcomes, durations, queue times, failing tasks.

Percentiles are nearest-rank over the builds of the window, computed here
rather than in SQL because SQLite has no percentile function; the window's
rows are read through the ``(dag_id, run_after, …)`` index, four narrow
columns each.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, false, func, select

from airflow_bkci.model.event import BUILD_NODE
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.stats import percentile
from airflow_bkci.store.tables import BuildRow, NodeRow

__all__ = ["FINAL_STATUSES", "pipeline_metrics"]

B, N = BuildRow, NodeRow

FINAL_STATUSES = tuple(s for s in BuildStatus if s.is_finished and s is not BuildStatus.RETRY)
"""A build in one of these has ended; RETRY ends a try, never a build."""


def pipeline_metrics(
    conn: Connection, dag_id: str, since: datetime, until: datetime, top: int
) -> dict[str, Any]:
    """Metrics of the pipeline's builds due (``run_after``) in ``[since, until)``."""
    window = (B.dag_id == dag_id, B.run_after >= since, B.run_after < until)
    rows = conn.execute(select(B.status, B.queued_at, B.started_at, B.ended_at).where(*window))
    counts: Counter[str] = Counter()
    durations: list[float] = []
    queue_times: list[float] = []
    for status, queued, started, ended in rows:
        counts[status] += 1
        if status in _FINAL and started is not None and ended is not None:
            durations.append(_ms(ended - started))
        if queued is not None and started is not None:
            queue_times.append(_ms(started - queued))
    finished = sum(counts[s] for s in _FINAL)
    return {
        "pipeline_id": dag_id,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "builds": sum(counts.values()),
        "finished": finished,
        "unfinished": sum(counts.values()) - finished,
        "success_rate": counts[BuildStatus.SUCCEED.value] / finished if finished else None,
        "by_status": {s: counts[s] for s in sorted(_FINAL) if counts[s]},
        "duration_ms": _spread(durations),
        "queue_ms": _spread(queue_times),
        "failing_tasks": _failing_tasks(conn, window, top),
    }


_FINAL = frozenset(s.value for s in FINAL_STATUSES)


def _ms(delta: timedelta) -> float:
    return max(0.0, delta.total_seconds() * 1000)


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
    }


def _failing_tasks(conn: Connection, window: tuple[Any, ...], top: int) -> list[dict[str, Any]]:
    """Tasks by the number of the window's builds in which they ended FAILED, most first.

    A mapped task counts once per build, however many of its instances failed.
    """
    failed_builds = func.count(N.build_id.distinct()).label("failed_builds")
    stmt = (
        select(N.task_id, failed_builds, func.max(B.build_num).label("last_build_num"))
        .join(B, B.build_id == N.build_id)
        .where(
            *window,
            N.node_id != BUILD_NODE,
            N.status == BuildStatus.FAILED.value,
            N.removed == false(),
        )
        .group_by(N.task_id)
        .order_by(failed_builds.desc(), N.task_id)
        .limit(top)
    )
    return [
        {
            "task_id": row.task_id,
            "failed_builds": int(row.failed_builds),
            "last_failed_build_num": int(row.last_build_num),
        }
        for row in conn.execute(stmt)
    ]
