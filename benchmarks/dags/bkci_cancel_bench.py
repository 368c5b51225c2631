"""Load for benchmarks/cancel.py: a chain of tasks that each sleep for an hour.

A chain keeps most task instances of a running run in state None (only the first is
schedulable), as in a real pipeline; the sleep keeps the few that start running until the
cancel kills them. Every task is in the pool ``bkci_cancel_bench``, which the benchmark makes
with 2 slots: at most 2 task instances are queued or running at once, the other first tasks
wait as scheduled. ``BKCI_CANCEL_BENCH_TASKS`` (set by the benchmark) is the chain length.
"""

from __future__ import annotations

import os
import time

from airflow.sdk import DAG, chain, task

TASKS = int(os.environ.get("BKCI_CANCEL_BENCH_TASKS", "10"))
POOL = "bkci_cancel_bench"


@task(pool=POOL)
def hold() -> None:
    time.sleep(3600)


with DAG(
    "bkci_cancel_bench",
    schedule=None,
    catchup=False,
    max_active_runs=1_000_000,  # the runs are made running directly; no cap should apply
    tags=["benchmark"],
):
    chain(*(hold.override(task_id=f"step{i:02d}")() for i in range(TASKS)))
