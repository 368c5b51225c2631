"""Part 3: how long a state takes from Airflow's database to the status store.

Everything reachable (SQLite store, ingest route), default [bkci] options. For
every history row reported by the scheduler-side reconciler (source ``db@``),
the figure is ``recorded_at - at``: from the moment Airflow recorded the state
(its own scheduled_dttm, queued_dttm, start_date, end_date) until the store
committed it. It includes the reconcile interval (1 s), the sink's batching
and the store transaction; backfilled short states count like any other.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import create_engine, text

from airflow_bkci.devstack import AirflowStack
from airflow_bkci.example_dags import EXPECTED_STATES, FOLDER

DAGS = ("bkci_stages", "bkci_retry", "bkci_mapped", "bkci_chains")


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def part_latency(keep: bool, say: Callable[[str], None]) -> None:
    home = Path(tempfile.mkdtemp(prefix="bkci-bench-latency-"))
    st = AirflowStack(
        home=home, dags_folder=FOLDER, keep=keep, progress=lambda msg: say(f"latency: {msg}")
    )
    try:
        st.start(expect_dags=set(EXPECTED_STATES), timeout=300.0)
        runs = {d: st.trigger(d) for d in DAGS}
        for dag_id, run_id in runs.items():
            say(f"latency: {dag_id} {st.wait_run(dag_id, run_id, timeout=300)}")
        engine = create_engine(st.store_url)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT to_status, recorded_at, at FROM bkci_transition "
                    "WHERE source LIKE 'db@%'"
                )
            ).all()
        engine.dispose()
    finally:
        st.stop()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    lags = [(_ts(r[1]) - _ts(r[2])) for r in rows]
    seconds = [lag.total_seconds() for lag in lags]
    print()
    print("STATUS LATENCY: Airflow's own time of a state -> committed in the status store, s")
    print(
        f"transitions {len(seconds)}  p50 {_pct(seconds, 0.5):.2f}  p95 "
        f"{_pct(seconds, 0.95):.2f}  max {max(seconds):.2f}  (target: about 2 s)"
    )


def _ts(value: object):  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
