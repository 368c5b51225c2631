"""Quality gates over the example builds, one case per task, all in one run (test_gates).

``bkci_stages`` succeeded and ``bkci_failure`` failed earlier in the session.
Each task ends on its own; the run fails, since some cases must fail.
"""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_bkci.gates import (
    AUDIT,
    EQ,
    IN,
    LE,
    WARN,
    duration_p95,
    failed_count,
    latest_status,
    node_status,
)
from airflow_bkci.operators import QualityGateOperator

STAGES_OK = latest_status("bkci_stages", IN, ["SUCCEED"])
NO_FAILURES = {"pipeline": "bkci_failure", "comparison": LE, "count": 0, "window": "1d"}

with DAG("bkci_gate_cases", schedule=None, catchup=False, tags=["bkci-tests"]) as dag:
    QualityGateOperator(
        task_id="end_fails",
        rules=[
            STAGES_OK,
            duration_p95("bkci_stages", LE, "10m", window="1d"),
            failed_count(**NO_FAILURES),
            node_status("bkci_failure", "deploy", EQ, "SUCCEED", action=WARN),
        ],
    )
    QualityGateOperator(
        task_id="warns", rules=[STAGES_OK, failed_count(**NO_FAILURES, action=WARN)]
    )
    # The restricted user of the test auth manager may not read bkci_branch.
    QualityGateOperator(
        task_id="denied",
        rules=[latest_status("bkci_branch", IN, ["SUCCEED"])],
        conn_id="bkci_api_limited",
    )
    QualityGateOperator(
        task_id="approve_me",
        rules=[STAGES_OK, failed_count(**NO_FAILURES, action=AUDIT)],
        audit_timeout="10m",
    )
    QualityGateOperator(
        task_id="nobody_answers",
        rules=[failed_count(**NO_FAILURES, action=AUDIT)],
        audit_timeout=5,
        audit_default="reject",
    )
