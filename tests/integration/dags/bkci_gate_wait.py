"""A deploy whose gate waits, in the triggerer, for the running build of ``bkci_gate_build``."""

from __future__ import annotations

from airflow.sdk import DAG, task

from airflow_bkci.gates import EQ, latest_status, node_status
from airflow_bkci.operators import QualityGateOperator


@task
def deploy() -> None:
    pass


with DAG("bkci_gate_wait", schedule=None, catchup=False, tags=["bkci-tests"]) as dag:
    gate = QualityGateOperator(
        task_id="quality_gate",
        rules=[
            latest_status("bkci_gate_build", EQ, "SUCCEED"),
            node_status("bkci_gate_build", "test", EQ, "SUCCEED"),
        ],
        timeout="5m",
        poll_interval=3,
    )
    gate >> deploy()
