"""Faults on real components: what users must never lose, and what they may wait for."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from airflow_bkci.devstack import AirflowStack
from airflow_bkci.model.event import build_id_for
from airflow_bkci.spool.spool import Spool
from airflow_bkci.store import Store
from tests.integration.conftest import INGEST_SECRET
from tests.integration.helpers import eventually
from tests.integration.truth import RETRY_STEPS, steps, tasks_of, wait_agreement

pytestmark = pytest.mark.integration


def _relay_once(stack: AirflowStack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow_bkci.cli", "relay", "--once"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _spool(stack: AirflowStack) -> Spool:
    return Spool(stack.home / "bkci" / "spool.db")


def test_ingest_down_states_complete_and_enrichment_arrives_later(sqlite_stack):
    stack = sqlite_stack
    store = Store(stack.store_url)
    stack.faults.ingest_proxy.cut()
    try:
        run_id = stack.trigger("bkci_failure")
        assert stack.wait_run("bkci_failure", run_id, timeout=180) == "failed"
        # the scheduler side alone completes every state
        tree = wait_agreement(store, stack.db_url, "bkci_failure", run_id)
        assert tasks_of(tree)["deploy"]["status"] == "FAILED"
        assert tasks_of(tree)["deploy"]["error"] is None, "missing, never wrong"
        assert _spool(stack).pending_count() > 0, "the worker kept its records"
    finally:
        stack.faults.ingest_proxy.restore()
    result = _relay_once(stack)
    assert result.returncode == 0, result.stdout + result.stderr

    def error() -> Any:
        tree = store.build_tree(build_id_for("bkci_failure", run_id))
        return tree and tasks_of(tree)["deploy"]["error"]

    assert eventually(error, 30, "error summary") == (
        "RuntimeError: deploy target unreachable: db-01"
    )
    store.dispose()


def test_sigkilled_task_still_delivers_its_spooled_record(sqlite_stack):
    stack = sqlite_stack
    store = Store(stack.store_url)
    stack.faults.ingest_proxy.cut()
    try:
        run_id = stack.trigger("bkci_fault_kill")
        assert stack.wait_run("bkci_fault_kill", run_id, timeout=180) == "failed"
        assert _spool(stack).pending_count() > 0, "the running record was spooled"
    finally:
        stack.faults.ingest_proxy.restore()
    build_id = build_id_for("bkci_fault_kill", run_id)

    def delivered() -> Any:
        # A forwarder killed mid-send leaves its rows leased for a while;
        # the relay takes them once the lease runs out.
        result = _relay_once(stack)
        assert result.returncode == 0, result.stdout + result.stderr
        node = store.node_states(build_id).get("killed")
        return node and node.values().get("runner_started_at")

    assert eventually(delivered, 90, "the killed task's worker record")
    assert _spool(stack).pending_count() == 0
    tree = wait_agreement(store, stack.db_url, "bkci_fault_kill", run_id)
    assert tasks_of(tree)["killed"]["status"] == "FAILED"
    store.dispose()


def test_bad_ingest_requests_are_rejected_with_reasons(sqlite_stack):
    stack = sqlite_stack
    url = f"{stack.api_url}/bkci/ingest"
    auth = {"Authorization": f"Bearer {INGEST_SECRET}"}
    assert requests.post(url, json=[], timeout=30).status_code == 401
    assert (
        requests.post(
            url, json=[], headers={"Authorization": "Bearer wrong"}, timeout=30
        ).status_code
        == 401
    )
    garbage = requests.post(url, data=b"{not json", headers=auth, timeout=30)
    assert garbage.status_code == 400
    store = Store(stack.store_url)
    before = store.build_tree(build_id_for("bkci_ingest", "never"))
    answer = requests.post(
        url, json=[{"dag_id": "bkci_ingest"}, "text", {"v": 99}], headers=auth, timeout=30
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["accepted"] == 0
    assert [r["index"] for r in body["rejected"]] == [0, 1, 2]
    assert all(r["reason"] for r in body["rejected"])
    assert before is None and store.build_tree(build_id_for("bkci_ingest", "never")) is None
    store.dispose()


@pytest.mark.postgres
def test_ingest_down_the_scheduler_reads_the_spool_of_its_host(pg_stack):
    # LocalExecutor: the task runners share the scheduler's host, whose spool
    # reader brings their records in with the ingest route cut, and no relay.
    stack = pg_stack
    store = Store(stack.store_url)
    stack.faults.ingest_proxy.cut()
    try:
        run_id = stack.trigger("bkci_failure")
        assert stack.wait_run("bkci_failure", run_id, timeout=180) == "failed"

        def error() -> Any:
            tree = store.build_tree(build_id_for("bkci_failure", run_id))
            return tree and tasks_of(tree)["deploy"]["error"]

        assert eventually(error, 30, "error summary") == (
            "RuntimeError: deploy target unreachable: db-01"
        )
        assert eventually(lambda: _spool(stack).pending_count() == 0, 10, "spool read")
    finally:
        stack.faults.ingest_proxy.restore()
    store.dispose()


@pytest.mark.postgres
def test_store_down_for_a_while_loses_nothing(pg_stack):
    stack = pg_stack
    proxy = stack.faults.store_proxy
    proxy.cut()
    try:
        runs = {d: stack.trigger(d) for d in ("bkci_retry", "bkci_stages")}
        for dag_id, run_id in runs.items():
            assert stack.wait_run(dag_id, run_id, timeout=180) == "success"
    finally:
        proxy.restore()
    store = Store(stack.store_url)
    for dag_id, run_id in runs.items():
        wait_agreement(store, stack.db_url, dag_id, run_id, timeout=90)
    retry_build = build_id_for("bkci_retry", runs["bkci_retry"])
    assert steps(store, retry_build, "flaky") == RETRY_STEPS
    store.dispose()


@pytest.mark.postgres
def test_scheduler_killed_while_the_store_is_down_loses_nothing(pg_stack):
    # The sink's memory dies with the scheduler; the new scheduler's reconciler
    # must find the run again from where the store left off.
    stack = pg_stack
    proxy = stack.faults.store_proxy
    proxy.cut()
    try:
        run_id = stack.trigger("bkci_stages")
        assert stack.wait_run("bkci_stages", run_id, timeout=180) == "success"
        stack.kill("scheduler")
        # down for longer than [bkci] recent_window (3 s on this stack): only the
        # store's own record of where it left off can bring the run back
        time.sleep(8)
        stack.restart("scheduler")
        time.sleep(5)  # the new reconciler runs its first passes with the store still away
    finally:
        proxy.restore()
    store = Store(stack.store_url)
    store.migrate()  # a fresh stack's store may not have its tables yet
    tree = wait_agreement(store, stack.db_url, "bkci_stages", run_id, timeout=120)
    assert tree["status"] == "SUCCEED"
    store.dispose()
