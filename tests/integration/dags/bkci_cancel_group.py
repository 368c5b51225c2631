"""One deploy per branch: a newer run of a branch cancels the earlier ones (cancel tests)."""

from __future__ import annotations

import time

from airflow.sdk import dag, task


@task(retries=0)
def deploy() -> None:
    time.sleep(6)


@dag(
    dag_id="bkci_cancel_group",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["bkci-tests", "bkci:group={{ conf.get('branch', 'main') }}"],
)
def bkci_cancel_group() -> None:
    deploy()


bkci_cancel_group()
