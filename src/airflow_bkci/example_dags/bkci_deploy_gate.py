"""A deploy gated on the build pipeline: its latest build succeeded, and most recent ones did.

The gate reads build status through the plugin's query API as the user of the
``bkci_api`` connection (a login and password, or a token; see
docs/quality-gates.md). While ``bkci_stages`` has a build running, the gate waits
for it in the triggerer; a failed latest build fails the gate, a low success
rate only warns.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task

from airflow_bkci.gates import GE, IN, WARN, latest_status, success_rate
from airflow_bkci.operators import QualityGateOperator


@task
def deploy() -> None:
    pass


with DAG("bkci_deploy_gate", schedule=None, catchup=False, tags=["bkci-example"]) as dag:
    gate = QualityGateOperator(
        task_id="quality_gate",
        rules=[
            latest_status("bkci_stages", IN, ["SUCCEED"]),
            success_rate("bkci_stages", GE, "80%", last=10, action=WARN),
        ],
        timeout=timedelta(minutes=30),
        poll_interval=10,
    )
    gate >> deploy()
