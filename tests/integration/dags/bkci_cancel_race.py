"""Short builds of random length: the scheduler finishes some while a cancel runs (race tests)."""

from __future__ import annotations

import random
import time

from airflow.sdk import dag, task


@task(retries=0)
def step(n: int) -> None:
    time.sleep(random.uniform(0.0, 1.5))


@dag(
    dag_id="bkci_cancel_race", schedule=None, catchup=False, max_active_runs=32, tags=["bkci-tests"]
)
def bkci_cancel_race() -> None:
    step.override(task_id="first")(1) >> step.override(task_id="second")(2)


bkci_cancel_race()
