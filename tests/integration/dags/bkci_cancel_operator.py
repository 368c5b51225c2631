"""A deploy whose first task cancels the DAG's earlier runs (BatchCancelOperator tests)."""

from __future__ import annotations

import time

from airflow.sdk import dag, task

from airflow_bkci.operators import BatchCancelOperator


@task(retries=0)
def roll_out() -> None:
    time.sleep(20)


@dag(
    dag_id="bkci_cancel_operator",
    schedule=None,
    catchup=False,
    max_active_runs=4,
    tags=["bkci-tests"],
)
def bkci_cancel_operator() -> None:
    cancel = BatchCancelOperator(
        task_id="cancel_earlier", cancel_earlier_runs=True, reason="a newer deploy started"
    )
    cancel >> roll_out()


bkci_cancel_operator()
