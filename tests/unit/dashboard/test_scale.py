"""The wall's reads over 100,000 builds of 50 pipelines give every tile (run with -m slow).

How long they take is measured in benchmarks/dashboard.py, not asserted here.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import insert

from airflow_bkci.model.event import utcnow
from airflow_bkci.store import Store
from airflow_bkci.store.dashboard import BUCKETS
from airflow_bkci.store.tables import BuildRow, PipelineRow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PIPELINES = 50
BUILDS = 100_000
STATUSES = ("SUCCEED", "SUCCEED", "SUCCEED", "FAILED", "CANCELED", "SUCCEED", "RUNNING")


def fill(store: Store) -> list[str]:
    now = utcnow()
    dags = [f"dag_{i:02d}" for i in range(PIPELINES)]
    per_dag = BUILDS // PIPELINES
    with store.engine.begin() as conn:
        conn.execute(
            insert(PipelineRow),
            [{"dag_id": d, "last_build_num": per_dag, "created_at": now} for d in dags],
        )
        for d in dags:
            rows = []
            for n in range(1, per_dag + 1):
                due = now - timedelta(minutes=(per_dag - n) * 5)  # one every 5 minutes
                status = STATUSES[n % len(STATUSES)]
                rows.append(
                    {
                        "build_id": f"b-{d}-{n}",
                        "dag_id": d,
                        "run_id": f"r{n}",
                        "build_num": n,
                        "status": status,
                        "run_after": due,
                        "started_at": due,
                        "ended_at": None
                        if status == "RUNNING"
                        else due + timedelta(seconds=n % 300),
                        "created_at": due,
                        "updated_at": due,
                        "document": {"id": f"b-{d}-{n}", "status": status, "stages": {}},
                        "sequence": 1,
                    }
                )
            conn.execute(insert(BuildRow), rows)
    return dags


def test_fifty_tiles_over_100k_builds(store: Store) -> None:
    dags = fill(store)
    until = utcnow()
    since = until - timedelta(days=7)
    started = time.perf_counter()
    tiles = store.wall_tiles(dags, since, until, 20)
    wall_s = time.perf_counter() - started
    started = time.perf_counter()
    points = store.pipeline_series(dags[0], since, until, BUCKETS["hour"])
    series_s = time.perf_counter() - started
    print(f"\n{store!r}: wall {wall_s * 1000:.0f} ms, series {series_s * 1000:.0f} ms")
    assert len(tiles) == PIPELINES
    assert all(len(t.trend) == 20 and t.last_failure is not None for t in tiles.values())
    assert len(points) == 7 * 24 + 1 or len(points) == 7 * 24
