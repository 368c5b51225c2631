"""Every example build, collected through real Airflow components, matches Airflow's database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text

from airflow_bkci.model.event import build_id_for
from tests.integration.truth import (
    RETRY_STEPS,
    airflow_truth,
    steps,
    tasks_of,
    tried_times,
    wait_agreement,
)


def test_every_build_matches_airflow(examples, store):
    stack, runs = examples
    for dag_id, (run_id, _) in runs.items():
        tree = wait_agreement(store, stack.db_url, dag_id, run_id)
        assert tree["build_num"] >= 1
        assert tree["progress"]["total"] == len(tasks_of(tree))


def test_failed_task_carries_the_workers_error_and_downstream_is_unexec(examples, store):
    stack, runs = examples
    run_id, state = runs["bkci_failure"]
    assert state == "failed"
    tree = wait_agreement(store, stack.db_url, "bkci_failure", run_id)
    tasks = tasks_of(tree)
    assert tasks["deploy"]["status"] == "FAILED"
    assert tasks["deploy"]["error"] == "RuntimeError: deploy target unreachable: db-01"
    assert tasks["verify"]["status"] == "UNEXEC"
    assert tree["status"] == "FAILED"


def test_retry_history_holds_every_try_with_real_times(examples, store):
    stack, runs = examples
    run_id, _ = runs["bkci_retry"]
    wait_agreement(store, stack.db_url, "bkci_retry", run_id)
    history = store.history(build_id_for("bkci_retry", run_id), "flaky")
    assert steps(store, build_id_for("bkci_retry", run_id), "flaky") == RETRY_STEPS
    times = [t.at for t in history if t.detail != "pending"]
    assert times == sorted(times), "history times follow the order of the states"
    _, truth = airflow_truth(stack.db_url, "bkci_retry", run_id)
    flaky = next(t for t in truth if t.node_id == "flaky")
    assert history[-1].at == flaky.end_date
    first_try = tried_times(stack.db_url, "bkci_retry", run_id, "flaky", 1)
    by_step = {(t.try_number, t.to_status.value): t.at for t in history}
    assert (by_step[1, "RUNNING"], by_step[1, "RETRY"]) == first_try


def test_branch_mapping_and_deferral_shapes(examples, store):
    stack, runs = examples
    branch = tasks_of(wait_agreement(store, stack.db_url, "bkci_branch", runs["bkci_branch"][0]))
    assert sorted(t["status"] for t in branch.values()).count("SKIP") >= 1
    mapped = tasks_of(wait_agreement(store, stack.db_url, "bkci_mapped", runs["bkci_mapped"][0]))
    assert {n for n in mapped if "[" in n} == {
        f"package[{i}]" for i in range(len([n for n in mapped if n.startswith("package[")]))
    }
    assert len([n for n in mapped if n.startswith("package[")]) >= 3
    run_id = runs["bkci_deferrable"][0]
    wait_agreement(store, stack.db_url, "bkci_deferrable", run_id)
    details = {
        (t.to_status.value, t.detail)
        for t in store.history(build_id_for("bkci_deferrable", run_id), "wait_end_in_triggerer")
    }
    assert ("RUNNING", "deferred") in details
    assert ("SUCCEED", None) in details


def test_stages_are_top_level_groups_in_dag_order(examples, store):
    stack, runs = examples
    tree = wait_agreement(store, stack.db_url, "bkci_stages", runs["bkci_stages"][0])
    stages = sorted(tree["stages"].values(), key=lambda s: s["order"])
    names = [s["id"] for s in stages]
    assert [n for n in names if n != "__ungrouped__"] == ["build", "test", "deploy"]
    assert all(s["status"] == "SUCCEED" for s in stages)


def test_cleared_run_shows_the_new_attempt(examples, store):
    stack, runs = examples
    run_id, _ = runs["bkci_failure"]
    build_id = build_id_for("bkci_failure", run_id)
    before = store.build_tree(build_id)
    stack.clear_run("bkci_failure", run_id)
    assert stack.wait_run("bkci_failure", run_id, timeout=120) == "failed"
    tree = wait_agreement(store, stack.db_url, "bkci_failure", run_id)
    assert tree["execute_count"] == before["execute_count"] + 1
    assert tasks_of(tree)["deploy"]["try_number"] == 2
    assert tree["build_num"] == before["build_num"], "a clear is the same build"
    started = [t.at for t in store.history(build_id, "deploy") if t.to_status.value == "RUNNING"]
    assert len(started) == 2 and started[0] < started[1]
    assert isinstance(started[0], datetime)


def test_manual_mark_success_in_the_api_overrides_the_failure(examples, store):
    stack, _ = examples
    run_id = stack.trigger("bkci_failure")
    assert stack.wait_run("bkci_failure", run_id, timeout=180) == "failed"
    wait_agreement(store, stack.db_url, "bkci_failure", run_id)
    stack.api(
        "PATCH",
        f"/dags/bkci_failure/dagRuns/{run_id}/taskInstances/deploy",
        json={"new_state": "success"},
    )
    tree = wait_agreement(store, stack.db_url, "bkci_failure", run_id)
    assert tasks_of(tree)["deploy"]["status"] == "SUCCEED"
    steps = [
        (t.try_number, t.to_status.value)
        for t in store.history(build_id_for("bkci_failure", run_id), "deploy")
    ]
    assert steps[-2:] == [(1, "FAILED"), (1, "SUCCEED")], steps


def test_task_starts_are_recorded_by_the_api_server_as_airflow_records_them(examples, store):
    """The execution API's task-run calls, seen by our root middleware, give the RUNNING rows."""
    stack, _ = examples
    with store.engine.connect() as conn:
        sources = conn.execute(
            text(
                "SELECT DISTINCT source FROM bkci_transition "
                "WHERE to_status = 'RUNNING' AND node_id != '' AND source LIKE 'db@%'"
            )
        ).scalars()
        pids = {int(source.rsplit(":", 1)[1]) for source in sources}
    assert pids & stack.pids("api-server"), f"RUNNING recorded only by {pids}"
