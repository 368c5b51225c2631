"""Task groups as BK-CI stages: build, test and deploy, plus one ungrouped task."""

from __future__ import annotations

import time

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TaskGroup, task


@task
def step(seconds: float = 0.2) -> None:
    time.sleep(seconds)


with DAG("bkci_stages", schedule=None, catchup=False, tags=["bkci-example"]):
    with TaskGroup("build") as build:
        # EmptyOperator never reaches a worker: the scheduler marks it success by itself.
        EmptyOperator(task_id="checkout") >> step.override(task_id="compile")()
    with TaskGroup("test") as test:
        step.override(task_id="unit")()
        step.override(task_id="lint")(0.1)
    with TaskGroup("deploy") as deploy:
        step.override(task_id="upload")() >> step.override(task_id="release")()
    notify = step.override(task_id="notify")(0.0)
    build >> test >> deploy >> notify
