"""Builds that run until canceled: two long tasks, then one after them (cancel tests)."""

from __future__ import annotations

import time

from airflow.sdk import dag, task


@task
def prepare() -> None:
    pass


@task(retries=0)
def long_a() -> None:
    time.sleep(900)


@task(retries=0)
def long_b() -> None:
    time.sleep(900)


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
