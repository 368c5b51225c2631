"""Builds that run until canceled: two long tasks, then one after them (cancel tests)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from airflow.sdk import dag, get_current_context, task


def _sleep_with_pid_file() -> None:
    # The cancel tests check that the process is gone, by this pid.
    ti = get_current_context()["ti"]
    pids = Path(os.environ["AIRFLOW_HOME"]) / "pids"
    pids.mkdir(exist_ok=True)
    (pids / f"{ti.run_id}.{ti.task_id}.pid").write_text(str(os.getpid()))
    time.sleep(900)


@task
def prepare() -> None:
    pass


@task(retries=0)
def long_a() -> None:
    _sleep_with_pid_file()


@task(retries=0)
def long_b() -> None:
    _sleep_with_pid_file()


@task
def publish() -> None:
    pass


@dag(
    dag_id="bkci_cancel_long", schedule=None, catchup=False, max_active_runs=16, tags=["bkci-tests"]
)
def bkci_cancel_long() -> None:
    p = prepare()
    after = publish()
    p >> [long_a(), long_b()] >> after


bkci_cancel_long()
