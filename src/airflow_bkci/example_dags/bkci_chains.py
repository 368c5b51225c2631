"""Benchmark load: 60 short tasks in 6 independent chains of 10."""

from __future__ import annotations

from airflow.sdk import DAG, chain, task

CHAINS = 6
LENGTH = 10


@task
def step() -> None:
    pass


with DAG("bkci_chains", schedule=None, catchup=False, tags=["bkci-example", "benchmark"]):
    for c in range(CHAINS):
        chain(*(step.override(task_id=f"chain{c}_step{i:02d}")() for i in range(LENGTH)))
