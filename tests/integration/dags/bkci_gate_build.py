"""A build pipeline that runs for about 20 s, so a quality gate has a running build to wait for."""

from __future__ import annotations

import time

from airflow.sdk import DAG, TaskGroup, task


@task
def step(seconds: float) -> None:
    time.sleep(seconds)


with DAG("bkci_gate_build", schedule=None, catchup=False, tags=["bkci-tests"]):
    with TaskGroup("build") as build:
        step.override(task_id="compile")(1.0)
    with TaskGroup("test") as test:
        step.override(task_id="unit")(20.0)
    build >> test
