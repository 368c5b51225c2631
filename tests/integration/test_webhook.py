"""A real receiver process, fed by the schedulers' dispatchers, ends with every build's tree.

The receiver verifies each Standard Webhooks signature, parses each event with
the CloudEvents SDK and applies each patch with jsonpatch; what it holds must
equal the store's snapshot at the same sequence, after the store agreed with
Airflow's own database.
"""

from __future__ import annotations

import time
from typing import Any

from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store
from tests.integration.truth import wait_agreement


def wait_mirrored(
    receiver: Any, store: Store, build_id: str, timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        snap = store.snapshot(build_id)
        mirrored = receiver.state()["builds"].get(build_id)
        if snap is not None and mirrored is not None and mirrored["sequence"] == snap["sequence"]:
            assert mirrored["document"] == snap["document"]
            return mirrored
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{build_id}: receiver at {mirrored and mirrored['sequence']}, "
                f"store at {snap and snap['sequence']}"
            )
        time.sleep(0.3)


def test_receiver_rebuilds_every_example_build_from_signed_change_sets(examples, store):
    stack, runs = examples
    receiver = stack.receiver
    for dag_id, (run_id, _) in runs.items():
        tree = wait_agreement(store, stack.db_url, dag_id, run_id)
        build_id = build_id_for(dag_id, run_id)
        mirrored = wait_mirrored(receiver, store, build_id)
        assert mirrored["document"]["status"] == tree["status"]
    state = receiver.state()
    assert state["bad_signatures"] == 0
    assert state["pending"] == []  # no build left waiting on a gap


def test_dispatchers_run_where_dispatch_in_says(examples):
    stack, _ = examples
    assert "dispatcher started for bkci_test_hook" in stack.log_path("scheduler").read_text()
    # The PostgreSQL stacks add the API server (see conftest); SQLite ones keep the default.
    in_api_server = "dispatcher started in the API server" in (
        stack.log_path("api-server").read_text()
    )
    assert in_api_server == (stack.backend != "sqlite")
