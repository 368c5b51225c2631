"""QualityGateOperator: rules checked at parse time, and what execute does with each decision.

Build status comes from the gates' fake reader; the connection, the build-tree
recorder and Airflow's human-in-the-loop call are replaced at their seams.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.sdk.exceptions import (
    AirflowFailException,
    TaskAwaitingInput,
    TaskDeferralError,
    TaskDeferred,
)

from airflow_bkci.gates import (
    AUDIT,
    EQ,
    GE,
    IN,
    WARN,
    GateConnectionError,
    GateRuleError,
    ReadUnavailable,
    latest_status,
    node_status,
    result_to_json,
    success_rate,
)
from airflow_bkci.gates.access import ApiAccess
from airflow_bkci.operators import QualityGateOperator
from airflow_bkci.operators.quality_gate import APPROVE, REJECT
from airflow_bkci.triggers.quality_gate import QualityGateTrigger
from tests.unit.gates.fakes import PIPELINE, AsyncFakeReader, FakeReader, summary, tree

BASE = "http://airflow-api:8080"
DOC = tree("SUCCEED", {"test": {"test.unit": "SUCCEED"}})


class Reader(FakeReader):
    """The fake reader as RestBuildReader is used: a context manager; ``then`` replaces builds."""

    def __init__(self, builds: list[Any], *, then: list[list[Any]] | None = None) -> None:
        super().__init__(builds, {b["id"]: DOC for b in builds})
        self.later = list(then or [])
        self.reads = 0

    def builds(self, query: Any) -> list[Any]:
        self.reads += 1
        if self.reads > 1 and self.later:
            self._builds = self.later.pop(0)
            if isinstance(self._builds, Exception):
                failure, self._builds = self._builds, []
                raise failure
        return super().builds(query)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *args: Any) -> None:
        pass


class TaskInstance:
    def __init__(self) -> None:
        self.id = uuid.uuid4()
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = json.loads(json.dumps(value))  # as XCom would: JSON only


class Gate:
    """One test's seams: the reader, the build-tree statuses, the approval requests."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reader = Reader([summary(1, "SUCCEED")])
        self.statuses: list[tuple[str, str]] = []
        self.asked: list[dict[str, Any]] = []
        self.ti = TaskInstance()
        self.context: Any = {"ti": self.ti, "task_instance": self.ti}
        monkeypatch.setattr("airflow_bkci.gates.access.api_access", self._access)
        monkeypatch.setattr(
            "airflow_bkci.gates.reader.RestBuildReader", lambda *a, **k: self.reader
        )
        monkeypatch.setattr(
            "airflow_bkci.listeners.worker.record_quality_check",
            lambda ti, status, line: self.statuses.append((status, line)),
        )
        monkeypatch.setattr(
            "airflow.sdk.execution_time.hitl.upsert_hitl_detail",
            lambda **request: self.asked.append(request),
        )
        self.access_error: Exception | None = None

    def _access(self, conn_id: str) -> ApiAccess:
        if self.access_error is not None:
            raise self.access_error
        return ApiAccess(BASE, "jwt", 5.0)

    def builds(self, *builds: Any, then: list[list[Any]] | None = None) -> None:
        self.reader = Reader(list(builds), then=then)

    def run(self, op: QualityGateOperator) -> dict[str, Any]:
        result: dict[str, Any] = op.execute(self.context)
        return result

    @property
    def checks(self) -> list[str]:
        return [status for status, _ in self.statuses]


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    return Gate(monkeypatch)


def operator(*rules: Any, **kwargs: Any) -> QualityGateOperator:
    return QualityGateOperator(task_id="quality_gate", rules=list(rules), **kwargs)


# ------------------------------------------------------------ construction
def test_a_bad_rule_fails_when_the_dag_file_is_parsed_with_the_fix() -> None:
    with pytest.raises(GateRuleError) as exc:
        operator({"indicator": "sucess_rate", "pipeline": PIPELINE, "comparison": "GE"})
    assert str(exc.value) == (
        "rules[0] (sucess_rate of 'build'): 'threshold' is missing. Fix: give threshold (a "
        "status, a list of statuses for IN, a rate 0..1, a duration or a count)"
    )
    with pytest.raises(GateRuleError, match="the gate has no rules"):
        operator()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"audit_default": "maybe"}, "audit_default 'maybe' is neither 'approve' nor 'reject'"),
        ({"timeout": -300}, "timeout -300 is not positive. Fix: give timeout > 0"),
        ({"poll_interval": "soon"}, "poll_interval 'soon' is not a duration"),
        ({"audit_timeout": 0}, "audit_timeout 0 is not positive"),
    ],
)
def test_bad_gate_settings_fail_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(GateRuleError, match=message):
        operator(latest_status(PIPELINE, EQ, "SUCCEED"), **kwargs)


def test_rules_may_be_dicts_or_json_and_settings_durations() -> None:
    text = json.dumps([{"indicator": "latest_status", "pipeline": "build", "comparison": "EQ",
                        "threshold": "SUCCEED"}])  # fmt: skip
    op = operator(*json.loads(text), timeout="15m", poll_interval=timedelta(seconds=5))
    assert op.rules == (latest_status(PIPELINE, EQ, "SUCCEED"),)
    assert (op.timeout, op.poll_interval, op.audit_default) == (
        timedelta(minutes=15),
        5.0,
        "reject",
    )
    assert QualityGateOperator(task_id="g", rules=text).rules == op.rules
    assert operator(*op.rules, audit_timeout=None).audit_timeout is None


# ------------------------------------------------------------ pass, fail, warn
def test_a_passing_gate_returns_its_report_and_shows_pass_on_its_task(gate: Gate) -> None:
    report = gate.run(operator(latest_status(PIPELINE, IN, ["SUCCEED"])))
    assert report["decision"] == "pass"
    assert report["quality_check"] == "QUALITY_CHECK_PASS"
    assert report["rules"][0]["actual"] == "SUCCEED (build #1)"
    assert report["rules"][0]["url"].startswith(f"{BASE}/dags/build/runs/manual__")
    assert gate.statuses == [("QUALITY_CHECK_PASS", "1/1 rules passed")]


def test_a_failed_end_rule_fails_the_task_with_every_rule_and_a_link(gate: Gate) -> None:
    gate.builds(summary(1, "SUCCEED"), summary(2, "FAILED"))
    op = operator(
        node_status(PIPELINE, "test", EQ, "SUCCEED"),
        latest_status(PIPELINE, EQ, "SUCCEED"),
        success_rate(PIPELINE, GE, 0.9, last=2, action=WARN),
    )
    with pytest.raises(AirflowFailException) as exc:
        gate.run(op)
    text = str(exc.value)
    lines = text.splitlines()
    assert lines[0] == (
        "Quality gate failed: 1 of 3 rules failed the gate (rules[1]); also failed: rules[2] (WARN)"
    )
    assert lines[2].split() == ["rule", "indicator", "expected", "actual", "outcome", "action"]
    row = re.compile(r"rules\[1\]\s+latest_status of 'build'\s+== SUCCEED\s+FAILED \(build #2\)")
    assert row.search(text)
    assert f"link: {BASE}/dags/build/runs/manual__" in text
    assert gate.checks == ["QUALITY_CHECK_FAIL"]
    assert gate.statuses[0][1].startswith(
        "1/3 rules passed; failed: latest_status of 'build' == SUCCEED (actual FAILED (build #2))"
    )
    assert gate.ti.xcom["return_value"]["decision"] == "fail"  # the report, for whoever looks


def test_a_failed_warn_rule_passes_with_the_report_in_xcom_and_the_log(
    gate: Gate, capsys: pytest.CaptureFixture[str]
) -> None:
    gate.builds(summary(1, "FAILED"), summary(2, "SUCCEED"))
    op = operator(
        latest_status(PIPELINE, EQ, "SUCCEED"),
        success_rate(PIPELINE, GE, "90%", last=5, action=WARN),
    )
    report = gate.run(op)
    assert report["decision"] == "pass"
    assert report["headline"] == "Quality gate passed: 1 of 2 rules held; warnings: rules[1]"
    assert [(r["outcome"], r["actual"]) for r in report["rules"]] == [
        ("passed", "SUCCEED (build #2)"),
        ("failed", "50% (1 of 2 finished builds; the last 5)"),
    ]
    logged = capsys.readouterr().out  # the task logger writes there outside a task runner
    assert "[warning  ] Quality gate passed: 1 of 2 rules held; warnings: rules[1]" in logged
    assert "50% (1 of 2 finished builds; the last 5)  FAILED   WARN" in logged
    assert gate.checks == ["QUALITY_CHECK_PASS"]


def test_an_unknown_stage_fails_before_any_wait_with_the_fix(gate: Gate) -> None:
    gate.builds(summary(1, "RUNNING"))
    with pytest.raises(AirflowFailException) as exc:
        gate.run(operator(node_status(PIPELINE, "tset", EQ, "SUCCEED")))
    assert str(exc.value).startswith("Quality gate 'quality_gate' cannot start: rules[0]")
    assert "Fix: did you mean 'test'?" in str(exc.value)
    assert gate.checks == ["QUALITY_CHECK_FAIL"]


def test_a_pipeline_the_connection_may_not_read_fails_with_a_permission_message(
    gate: Gate,
) -> None:
    gate.reader = Reader([summary(1, "SUCCEED", pipeline="secret")])
    gate.reader.denied = {"secret"}
    with pytest.raises(AirflowFailException, match="may not read pipeline 'secret' \\(HTTP 403"):
        gate.run(operator(latest_status("secret", EQ, "SUCCEED")))


def test_a_connection_that_cannot_be_used_fails_without_retries(gate: Gate) -> None:
    gate.access_error = GateConnectionError("bkci_api", "its login was refused (HTTP 401: no)")
    with pytest.raises(AirflowFailException, match="connection 'bkci_api' cannot reach"):
        gate.run(operator(latest_status(PIPELINE, EQ, "SUCCEED")))
    assert gate.checks == ["QUALITY_CHECK_FAIL"]


def test_an_api_server_that_cannot_answer_now_leaves_it_to_airflows_retries(gate: Gate) -> None:
    gate.access_error = ReadUnavailable("cannot reach the API server")
    with pytest.raises(ReadUnavailable):
        gate.run(operator(latest_status(PIPELINE, EQ, "SUCCEED")))


# ------------------------------------------------------------ waiting
def test_a_running_build_defers_to_a_serialisable_trigger(gate: Gate) -> None:
    gate.builds(summary(1, "SUCCEED"), summary(2, "RUNNING"))
    op = operator(latest_status(PIPELINE, EQ, "SUCCEED"), timeout="10m", poll_interval=7)
    before = datetime.now(timezone.utc)
    with pytest.raises(TaskDeferred) as deferred:
        gate.run(op)
    assert deferred.value.method_name == "execute_complete"
    assert timedelta(minutes=14) < deferred.value.timeout <= timedelta(minutes=15)
    classpath, kwargs = deferred.value.trigger.serialize()
    assert json.loads(json.dumps(kwargs)) == kwargs
    module, _, name = classpath.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert kwargs["rules"] == [op.rules[0].to_dict()]
    assert (kwargs["conn_id"], kwargs["poll_interval"], kwargs["link_base"]) == (
        "bkci_api",
        7,
        BASE,
    )
    deadline = datetime.fromisoformat(kwargs["deadline"])
    assert (
        before + timedelta(minutes=10)
        <= deadline
        <= datetime.now(timezone.utc) + timedelta(minutes=10)
    )
    assert deferred.value.kwargs == {"deadline": kwargs["deadline"], "link_base": BASE}
    assert gate.statuses == [("QUALITY_CHECK_WAIT", "0/1 rules passed; waiting for #2 of 'build'")]


def test_the_resumed_task_judges_what_the_trigger_saw(gate: Gate) -> None:
    op = operator(latest_status(PIPELINE, EQ, "SUCCEED"), poll_interval=0.01)
    reader = FakeReader([summary(1, "SUCCEED")])
    deadline = datetime.now(timezone.utc) + timedelta(minutes=1)
    trigger = QualityGateTrigger(
        rules=[r.to_dict() for r in op.rules], conn_id="bkci_api", deadline=deadline,
        poll_interval=0.01, link_base=BASE,
    )  # fmt: skip
    event = asyncio.run(first_event(trigger, reader))
    report = op.execute_complete(gate.context, event, deadline.isoformat(), BASE)
    assert (report["decision"], gate.checks) == ("pass", ["QUALITY_CHECK_PASS"])
    assert gate.reader.reads == 0  # nothing read again on the worker


def test_a_trigger_timeout_fails_an_end_rule_on_a_build_that_never_ended(gate: Gate) -> None:
    op = operator(latest_status(PIPELINE, EQ, "SUCCEED"), timeout="2m")
    waiting = evaluate_with(op, FakeReader([summary(1, "RUNNING")]))
    event = {"outcome": "timeout", "result": result_to_json(waiting), "error": None}
    with pytest.raises(AirflowFailException) as exc:
        op.execute_complete(gate.context, event, datetime.now(timezone.utc).isoformat(), BASE)
    assert "RUNNING (build #1 has not ended); still not ended" in str(exc.value)
    assert "when the gate's timeout (2m) passed" in str(exc.value)


def test_a_trigger_that_never_read_or_cannot_log_in_fails_plainly(gate: Gate) -> None:
    op = operator(latest_status(PIPELINE, EQ, "SUCCEED"), timeout="2m")
    now = datetime.now(timezone.utc).isoformat()
    never = {"outcome": "timeout", "result": None, "error": "HTTP 503: store down"}
    with pytest.raises(AirflowFailException, match="timed out after 2m without reading build"):
        op.execute_complete(gate.context, never, now, BASE)
    refused = {"outcome": "error", "error": "connection 'bkci_api' cannot reach the BK-CI query"}
    with pytest.raises(AirflowFailException, match="cannot read build status: connection"):
        op.execute_complete(gate.context, refused, now, BASE)
    assert gate.checks == ["QUALITY_CHECK_FAIL", "QUALITY_CHECK_FAIL"]


def test_a_timeout_while_the_api_is_down_fails_even_a_warn_gate_with_the_error(
    gate: Gate,
) -> None:
    op = operator(latest_status(PIPELINE, EQ, "SUCCEED", action=WARN), timeout="2m")
    waiting = evaluate_with(op, FakeReader([summary(1, "RUNNING")]))
    event = {"outcome": "timeout", "result": result_to_json(waiting), "error": "HTTP 503: down"}
    now = datetime.now(timezone.utc).isoformat()
    with pytest.raises(AirflowFailException, match="the last read failed: HTTP 503: down"):
        op.execute_complete(gate.context, event, now, BASE)
    assert gate.checks == ["QUALITY_CHECK_FAIL"]


def test_a_failed_trigger_still_shows_fail_on_the_gate(gate: Gate) -> None:
    op = operator(latest_status(PIPELINE, EQ, "SUCCEED"))
    with pytest.raises(TaskDeferralError):
        op.resume_execution("__fail__", {"error": "Trigger failure"}, gate.context)
    assert gate.checks == ["QUALITY_CHECK_FAIL"]


def test_without_deferral_the_worker_polls_until_the_build_ends(gate: Gate) -> None:
    gate.builds(
        summary(1, "RUNNING"),
        then=[ReadUnavailable("HTTP 503"), [summary(1, "RUNNING")], [summary(1, "SUCCEED")]],
    )
    op = operator(latest_status(PIPELINE, EQ, "SUCCEED"), deferrable=False, poll_interval=0.01)
    report = gate.run(op)
    assert report["decision"] == "pass"
    assert gate.checks == ["QUALITY_CHECK_WAIT", "QUALITY_CHECK_PASS"]


def test_without_deferral_a_timeout_settles_each_rule_by_its_action(gate: Gate) -> None:
    gate.builds(summary(1, "RUNNING"))
    warn = operator(
        latest_status(PIPELINE, EQ, "SUCCEED", action=WARN),
        deferrable=False,
        timeout=0.05,
        poll_interval=0.01,
    )
    report = gate.run(warn)
    assert report["decision"] == "pass"
    assert report["rules"][0]["outcome"] == "unknown"
    end = operator(
        latest_status(PIPELINE, EQ, "SUCCEED"), deferrable=False, timeout=0.05, poll_interval=0.01
    )
    with pytest.raises(AirflowFailException, match="still not ended"):
        gate.run(end)


# ------------------------------------------------------------ audit
def test_failed_audit_rules_ask_a_person_through_airflows_approval(gate: Gate) -> None:
    gate.builds(summary(1, "FAILED"), summary(2, "SUCCEED"))
    op = operator(
        latest_status(PIPELINE, EQ, "SUCCEED"),
        success_rate(PIPELINE, GE, 0.9, last=5, action=AUDIT),
        audit_timeout="30m",
        audit_default="approve",
    )
    with pytest.raises(TaskAwaitingInput) as parked:
        gate.run(op)
    assert parked.value.method_name == "execute_audit_complete"
    assert parked.value.timeout == timedelta(minutes=30)
    kwargs = parked.value.kwargs
    assert kwargs is not None and json.loads(json.dumps(kwargs)) == kwargs
    (request,) = gate.asked
    assert (request["ti_id"], request["options"], request["defaults"]) == (
        gate.ti.id,
        [APPROVE, REJECT],
        [APPROVE],
    )
    assert request["subject"] == (
        "Quality gate 'quality_gate': Quality gate needs approval: 1 of 2 AUDIT rules failed "
        "(rules[1])"
    )
    assert "Without an answer within 30m the gate takes **Approve**." in request["body"]
    assert "50% (1 of 2 finished builds; the last 5)" in request["body"]
    assert gate.checks == ["QUALITY_CHECK_WAIT"]
    assert gate.statuses[0][1].startswith("waiting for approval; 1/2 rules passed; failed:")

    answer = {"chosen_options": [APPROVE], "responded_by_user": {"id": "7", "name": "dana"}}
    report = op.execute_audit_complete(gate.context, answer, **kwargs)
    assert report["audit"] == {"approved": True, "by": "dana", "timed_out": False}
    assert gate.statuses[-1] == (
        "QUALITY_CHECK_PASS",
        "approved by dana; 1/2 rules passed; failed: success_rate of 'build' >= 90% (actual 50% "
        "(1 of 2 finished builds; the last 5)) [AUDIT]",
    )


def test_no_answer_within_the_audit_timeout_takes_the_default(gate: Gate) -> None:
    gate.builds(summary(1, "FAILED"), summary(2, "SUCCEED"))
    op = operator(
        success_rate(PIPELINE, GE, 0.9, last=5, action=AUDIT),
        audit_timeout=5,
        audit_default="reject",
    )
    with pytest.raises(TaskAwaitingInput) as parked:
        gate.run(op)
    kwargs = parked.value.kwargs
    assert kwargs is not None
    timed_out = {"chosen_options": [REJECT], "responded_by_user": None, "timedout": True}
    with pytest.raises(AirflowFailException) as exc:
        op.execute_audit_complete(gate.context, timed_out, **kwargs)
    assert str(exc.value).startswith(
        "Quality gate rejected by default (reject): nobody answered within 5s\n\n"
        "Quality gate needs approval"
    )
    assert gate.checks == ["QUALITY_CHECK_WAIT", "QUALITY_CHECK_FAIL"]
    assert gate.ti.xcom["return_value"]["audit"] == {
        "approved": False,
        "by": None,
        "timed_out": True,
    }


# ------------------------------------------------------------ helpers
def evaluate_with(op: QualityGateOperator, reader: FakeReader) -> Any:
    from airflow_bkci.gates import evaluate

    return evaluate(op.rules, reader)


async def first_event(trigger: QualityGateTrigger, reader: FakeReader) -> dict[str, Any]:
    async def opened() -> AsyncFakeReader:
        return AsyncFakeReader(reader)

    trigger._open = opened  # type: ignore[method-assign]
    async for event in trigger.run():
        payload: dict[str, Any] = json.loads(json.dumps(event.payload))
        return payload
    raise AssertionError("the trigger ended without an event")


@pytest.mark.parametrize(
    "path",
    [
        "src/airflow_bkci/example_dags/bkci_deploy_gate.py",
        "tests/integration/dags/bkci_gate_cases.py",
        "tests/integration/dags/bkci_gate_wait.py",
    ],
)
def test_gate_dags_parse_and_serialise_as_the_dag_processor_does(path: str) -> None:
    # An import error here would stop every integration test of the session.
    import runpy

    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    dag = runpy.run_path(path)["dag"]
    assert isinstance(dag, DAG)
    data = DagSerialization.to_dict(dag)
    back = DagSerialization.from_dict(data)
    gates = [t for t in back.task_dict.values() if t.task_type == "QualityGateOperator"]
    assert gates
