"""Quality gates on a real Airflow (SQLite): pass, fail, warn, wait in the triggerer, approval.

The gates judge builds that ran earlier in the session (``bkci_stages``
succeeded, ``bkci_failure`` failed) and one slow build of their own. Every gate
run of the module is started at once by one fixture, so the module costs about
as long as its slowest case (the approval that times out, or the wait for the
slow build); each test then checks its own case: the task's state, its log, its
XCom report, Airflow's human-in-the-loop record, and the gate status on the
task in the status store and in the change sets every channel gets.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_bkci.devstack import AirflowStack, StackError
from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store
from tests.integration.auth_manager import HIDDEN_DAG, LIMITED_PASSWORD, LIMITED_USER
from tests.integration.conftest import ExampleRuns
from tests.integration.helpers import eventually
from tests.integration.truth import wait_agreement

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DEPLOY = "bkci_deploy_gate"  # the example DAG
CASES = "bkci_gate_cases"
BUILD = "bkci_gate_build"
WAIT = "bkci_gate_wait"
LIMITED_CONN = "bkci_api_limited"
FINAL = ("success", "failed", "upstream_failed", "skipped")
PASS, FAIL, WAITING = "QUALITY_CHECK_PASS", "QUALITY_CHECK_FAIL", "QUALITY_CHECK_WAIT"


@dataclass
class Gates:
    stack: AirflowStack
    store: Store
    runs: dict[str, str]

    def ti(self, dag_id: str, task_id: str) -> dict[str, Any]:
        path = f"/dags/{dag_id}/dagRuns/{self.runs[dag_id]}/taskInstances/{task_id}"
        answer: dict[str, Any] = self.stack.api("GET", path)
        return answer

    def state_of(self, dag_id: str, task_id: str) -> str | None:
        state: str | None = self.ti(dag_id, task_id)["state"]
        return state

    def wait_state(self, dag_id: str, task_id: str, wanted: str, timeout: float = 180) -> None:
        def reached() -> bool:
            state = self.state_of(dag_id, task_id)
            if state in FINAL and state != wanted:
                raise AssertionError(self.explain(dag_id, f"{task_id} ended {state}"))
            return state == wanted

        eventually(reached, timeout, f"{dag_id}.{task_id} {wanted}")

    def explain(self, dag_id: str, why: str) -> str:
        return f"{why}\n{self.stack.explain_run(dag_id, self.runs[dag_id])}"

    def report(self, dag_id: str, task_id: str) -> dict[str, Any]:
        path = (
            f"/dags/{dag_id}/dagRuns/{self.runs[dag_id]}/taskInstances/{task_id}"
            "/xcomEntries/return_value"
        )
        value = self.stack.api("GET", path)["value"]
        report: dict[str, Any] = json.loads(value) if isinstance(value, str) else value
        return report

    def hitl(self, task_id: str, method: str = "GET", **kwargs: Any) -> dict[str, Any]:
        path = f"/dags/{CASES}/dagRuns/{self.runs[CASES]}/taskInstances/{task_id}/-1/hitlDetails"
        answer: dict[str, Any] = self.stack.api(method, path, **kwargs)
        return answer

    def log(self, dag_id: str, task_id: str, attempt: int = 1) -> str:
        """The task's log as text: each record's event, and the message of any exception."""
        path = (
            self.stack.home / "logs" / f"dag_id={dag_id}" / f"run_id={self.runs[dag_id]}"
            / f"task_id={task_id}" / f"attempt={attempt}.log"
        )  # fmt: skip
        return log_text(path)

    def gate_task(self, dag_id: str, task_id: str) -> dict[str, Any]:
        """The gate's task node in the stored build tree."""
        tree = self.store.build_tree(build_id_for(dag_id, self.runs[dag_id])) or {}
        return task_node(tree, task_id)

    def wait_check(self, dag_id: str, task_id: str, check: str) -> dict[str, Any]:
        found: dict[str, Any] = eventually(
            lambda: (
                (node := self.gate_task(dag_id, task_id)).get("quality_check") == check and node
            ),
            60,
            f"{check} on {dag_id}.{task_id} in the store",
        )
        return found


def task_node(tree: dict[str, Any], task_id: str) -> dict[str, Any]:
    for stage in (tree.get("stages") or {}).values():
        node = (stage.get("tasks") or {}).get(task_id)
        if node is not None:
            return dict(node)
    return {}


def log_text(path: Path) -> str:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            lines.append(raw)
            continue
        if not isinstance(record, dict):
            lines.append(raw)
            continue
        lines.append(str(record.get("event", "")))
        for error in record.get("error_detail") or []:
            lines.append(f"{error.get('exc_type')}: {error.get('exc_value')}")
    return "\n".join(lines)


def add_limited_connection(stack: AirflowStack) -> None:
    """A connection as the user who may not read ``bkci_branch`` (kept in Airflow's database)."""
    body = {
        "connection_id": LIMITED_CONN,
        "conn_type": "http",
        "host": stack.api_url,
        "login": LIMITED_USER,
        "password": LIMITED_PASSWORD,
    }
    try:
        stack.api("POST", "/connections", json=body)
    except StackError as exc:
        if "409" not in str(exc):  # made by an earlier run of this module on the same stack
            raise


@pytest.fixture(scope="module")
def gates(sqlite_stack: AirflowStack, example_runs_sqlite: ExampleRuns) -> Iterator[Gates]:
    stack = sqlite_stack
    store = Store(stack.store_url)
    # The gates read the status store through the API: it must hold the examples' ends.
    for dag_id in ("bkci_stages", "bkci_failure"):
        wait_agreement(store, stack.db_url, dag_id, example_runs_sqlite[dag_id][0], timeout=60)
    add_limited_connection(stack)
    runs = {dag_id: stack.trigger(dag_id) for dag_id in (BUILD, CASES, DEPLOY)}
    build_id = build_id_for(BUILD, runs[BUILD])
    # The waiting gate checks that the pipeline exists, so it starts once the build is stored.
    eventually(lambda: store.build_tree(build_id), 60, "the slow build in the store")
    runs[WAIT] = stack.trigger(WAIT)
    yield Gates(stack, store, runs)
    store.dispose()


def test_a_gate_on_a_succeeded_build_passes_and_the_deploy_runs(gates: Gates) -> None:
    state = gates.stack.wait_run(DEPLOY, gates.runs[DEPLOY], timeout=180)
    assert state == "success", gates.explain(DEPLOY, "the example deploy did not pass its gate")
    report = gates.report(DEPLOY, "quality_gate")
    assert (report["decision"], report["headline"]) == (
        "pass",
        "Quality gate passed: 2 of 2 rules held",
    )
    latest, rate = report["rules"]
    assert latest["actual"].startswith("SUCCEED (build #")
    assert rate["actual"].startswith("100% (")
    assert latest["url"].startswith(f"{gates.stack.api_url}/dags/bkci_stages/runs/")
    node = gates.wait_check(DEPLOY, "quality_gate", PASS)
    assert node["quality_summary"] == "2/2 rules passed"


def test_a_failed_end_rule_fails_the_task_with_every_rule_in_the_log(gates: Gates) -> None:
    gates.wait_state(CASES, "end_fails", "failed")
    assert gates.ti(CASES, "end_fails")["try_number"] == 1  # not retried: the builds stay failed
    log = gates.log(CASES, "end_fails")
    assert "Quality gate failed: 1 of 4 rules failed the gate (rules[2])" in log
    header = r"rule\s+indicator\s+expected\s+actual\s+outcome\s+action"
    assert re.search(header, log), log[-3000:]
    for row in (
        r"rules\[0\]\s+latest_status of 'bkci_stages'\s+in SUCCEED\s+SUCCEED \(build #\d+\)"
        r"\s+PASSED",
        r"rules\[1\]\s+duration_p95 of 'bkci_stages'\s+<= 10m\s+.+PASSED\s+END",
        r"rules\[2\]\s+failed_count of 'bkci_failure'\s+<= 0\s+[1-9]\d* \(of \d+ finished builds; "
        r"within the last 1d\)\s+FAILED\s+END",
    ):
        assert re.search(row, log), f"no row {row!r} in:\n{log[-3000:]}"
    assert f"link: {gates.stack.api_url}/dags/bkci_failure/runs" in log
    assert gates.report(CASES, "end_fails")["decision"] == "fail"  # kept for whoever looks
    node = gates.wait_check(CASES, "end_fails", FAIL)
    # rules[3] looks at the latest bkci_failure build, whose deploy another module may mark
    # success: it passes or warns, and either way the gate fails on rules[2].
    assert re.match(
        r"[23]/4 rules passed; failed: failed_count of 'bkci_failure' <= 0 \(actual [1-9]",
        node["quality_summary"],
    ), node["quality_summary"]


def test_a_failed_warn_rule_passes_and_says_so(gates: Gates) -> None:
    gates.wait_state(CASES, "warns", "success")
    report = gates.report(CASES, "warns")
    assert report["headline"] == "Quality gate passed: 1 of 2 rules held; warnings: rules[1]"
    assert report["rules"][1]["outcome"] == "failed"
    node = gates.wait_check(CASES, "warns", PASS)
    assert node["quality_summary"].startswith(
        "1/2 rules passed; failed: failed_count of 'bkci_failure' <= 0 (actual "
    )
    assert node["quality_summary"].endswith("[WARN]")


def test_a_gate_waits_in_the_triggerer_for_a_running_build_then_passes(gates: Gates) -> None:
    gates.wait_state(WAIT, "quality_gate", "deferred", timeout=120)
    assert gates.stack.run_state(BUILD, gates.runs[BUILD]) == "running"
    waiting = gates.wait_check(WAIT, "quality_gate", WAITING)
    build_num = gates.store.build_tree(build_id_for(BUILD, gates.runs[BUILD]))["build_num"]
    assert waiting["quality_summary"] == f"0/2 rules passed; waiting for #{build_num} of {BUILD!r}"

    state = gates.stack.wait_run(WAIT, gates.runs[WAIT], timeout=180)
    assert state == "success", gates.explain(WAIT, "the waiting gate did not pass")
    assert gates.stack.run_state(BUILD, gates.runs[BUILD]) == "success"
    assert gates.ti(WAIT, "quality_gate")["try_number"] == 1  # resumed, not retried
    report = gates.report(WAIT, "quality_gate")
    assert [r["actual"] for r in report["rules"]] == [
        f"SUCCEED (build #{build_num})",
        f"SUCCEED (stage 'test' of build #{build_num})",
    ]
    assert "Quality gate waiting for" in gates.log(WAIT, "quality_gate")
    # What every channel is sent: the change sets of the gate's build, in order.
    build_id = build_id_for(WAIT, gates.runs[WAIT])
    checks = eventually(
        lambda: (found := quality_checks(gates, build_id))[-1:] == [PASS] and found,
        60,
        "the gate's PASS in the change sets",
    )
    assert checks == [WAITING, PASS]
    receiver = gates.stack.receiver  # type: ignore[attr-defined]
    mirrored = eventually(
        lambda: task_node(receiver.documents().get(build_id) or {}, "quality_gate").get(
            "quality_check"
        ),
        60,
        "the webhook receiver's copy of the gate's task",
    )
    assert mirrored == PASS


def test_an_audit_gate_waits_for_approval_through_airflows_human_in_the_loop(
    gates: Gates,
) -> None:
    gates.wait_state(CASES, "approve_me", "awaiting_input")
    node = gates.wait_check(CASES, "approve_me", WAITING)
    assert node["quality_summary"].startswith("waiting for approval; 1/2 rules passed; failed:")
    asked = gates.hitl("approve_me")
    assert (asked["options"], asked["defaults"], asked["response_received"]) == (
        ["Approve", "Reject"],
        ["Reject"],
        False,
    )
    assert asked["subject"].startswith("Quality gate 'approve_me': Quality gate needs approval")
    assert "failed_count of 'bkci_failure'" in asked["body"]
    # The worker that parked the task has just exited; Airflow 3.3 may take that exit for
    # the resumed try's end if the answer comes within moments (apache/airflow#72716).
    time.sleep(3)
    gates.hitl("approve_me", "PATCH", json={"chosen_options": ["Approve"]})

    gates.wait_state(CASES, "approve_me", "success")
    assert gates.report(CASES, "approve_me")["audit"] == {
        "approved": True,
        "by": "admin",
        "timed_out": False,
    }
    node = gates.wait_check(CASES, "approve_me", PASS)
    assert node["quality_summary"].startswith("approved by admin; 1/2 rules passed")


def test_an_audit_gate_nobody_answers_takes_its_default(gates: Gates) -> None:
    # 5 s of audit_timeout, then the scheduler's sweep (every 15 s) applies the default.
    gates.wait_state(CASES, "nobody_answers", "failed", timeout=240)
    answer = gates.hitl("nobody_answers")
    assert (answer["chosen_options"], answer["responded_by_user"]) == (["Reject"], None)
    log = gates.log(CASES, "nobody_answers")
    assert "Quality gate rejected by default (reject): nobody answered within 5s" in log
    assert gates.report(CASES, "nobody_answers")["audit"] == {
        "approved": False,
        "by": None,
        "timed_out": True,
    }
    node = gates.wait_check(CASES, "nobody_answers", FAIL)
    assert node["quality_summary"].startswith("rejected by default (reject)")


def test_a_user_who_may_not_read_the_pipeline_fails_the_gate_with_the_reason(
    gates: Gates,
) -> None:
    gates.wait_state(CASES, "denied", "failed")
    log = gates.log(CASES, "denied")
    reason = (
        f"the gate's connection may not read pipeline {HIDDEN_DAG!r} (HTTP 403 from the query API)"
    )
    assert reason in log
    assert f"give the user of the gate's connection read access to DAG {HIDDEN_DAG!r}" in log
    node = gates.wait_check(CASES, "denied", FAIL)
    assert reason in node["quality_summary"]


def quality_checks(gates: Gates, build_id: str) -> list[str]:
    """The gate task's quality_check values, in the order the change sets set them."""
    answer = requests.get(
        f"{gates.stack.api_url}/bkci/v1/builds/{build_id}/changes",
        params={"after": 0},
        headers={"Authorization": f"Bearer {gates.stack.token()}"},
        timeout=60,
    )
    answer.raise_for_status()
    found = []
    for change in answer.json()["changes"]:
        for op in change["patch"]:
            path, value = op["path"], op.get("value")
            if path.endswith("/tasks/quality_gate/quality_check"):
                found.append(value)
            elif path.endswith("/tasks/quality_gate") and isinstance(value, dict):
                found += [value["quality_check"]] if "quality_check" in value else []
    return found
