"""The gate's report: links into Airflow's UI, the text table, and the XCom dict."""

from __future__ import annotations

import json

import pytest

from airflow_bkci.gates import (
    AUDIT,
    EQ,
    GE,
    IN,
    LE,
    WARN,
    Decision,
    evaluate,
    failed_count,
    latest_status,
    node_status,
    success_rate,
)
from airflow_bkci.gates.builds import NodeHit
from airflow_bkci.gates.report import (
    headline,
    node_url,
    pipeline_url,
    render_report,
    report_dict,
    run_url,
)
from airflow_bkci.model.status import BuildStatus
from tests.unit.gates.fakes import NOW, PIPELINE, FakeReader, summary, tree

BASE = "https://airflow.example.com/"
RUN = "manual__2026-03-01T12:00:00+00:00"
RUN_PATH = "/dags/build/runs/manual__2026-03-01T12%3A00%3A00%2B00%3A00"


def test_a_run_link_is_airflow_3s_ui_route_with_the_run_id_escaped() -> None:
    assert run_url(BASE, "build", RUN) == "https://airflow.example.com" + RUN_PATH
    assert run_url(None, "build", RUN) == RUN_PATH  # no base URL: a path on the same server
    assert pipeline_url(BASE, "build") == "https://airflow.example.com/dags/build/runs"


@pytest.mark.parametrize(
    ("hit", "suffix"),
    [
        (NodeHit("tests", "stage", BuildStatus.FAILED), "/tasks/group/tests"),
        (NodeHit("tests.e2e", "group", BuildStatus.FAILED), "/tasks/group/tests.e2e"),
        (NodeHit("__ungrouped__", "stage", BuildStatus.FAILED), ""),
        (NodeHit("tests.unit", "task", BuildStatus.FAILED, "tests.unit"), "/tasks/tests.unit"),
        (NodeHit("shard", "mapped", BuildStatus.FAILED, "shard"), "/tasks/shard/mapped"),
        (NodeHit("shard[2]", "instance", BuildStatus.FAILED, "shard", 2), "/tasks/shard/mapped/2"),
    ],
)
def test_a_node_link_opens_its_task_group_or_mapped_instance(hit: NodeHit, suffix: str) -> None:
    assert node_url(BASE, "build", RUN, hit) == "https://airflow.example.com" + RUN_PATH + suffix


def failing_gate() -> tuple[FakeReader, list]:  # type: ignore[type-arg]
    doc = tree("FAILED", {"tests": {"tests.unit": "FAILED"}})
    reader = FakeReader(
        [summary(1, "SUCCEED", duration_s=60), summary(2, "FAILED", minute=0, duration_s=90)],
        {"b-build-1": doc},
    )
    rules = [
        latest_status(PIPELINE, IN, ["SUCCEED"]),
        node_status(PIPELINE, "tests", EQ, "SUCCEED", action=AUDIT),
        success_rate(PIPELINE, GE, 0.9, last=10, action=WARN),
        latest_status("deploy", EQ, "SUCCEED"),
    ]
    return reader, rules


def test_the_report_lists_every_rule_with_expected_actual_outcome_action_and_link() -> None:
    reader, rules = failing_gate()
    text = render_report(evaluate(rules, reader, now=NOW), BASE)
    lines = text.splitlines()
    assert lines[0] == (
        "Quality gate failed: 1 of 4 rules failed the gate (rules[3]); "
        "also failed: rules[1] (AUDIT), rules[2] (WARN)"
    )
    header = lines[2].split()
    assert header == ["rule", "indicator", "expected", "actual", "outcome", "action"]
    body = "\n".join(lines[3:])
    assert "rules[0]  latest_status of 'build'" in body
    for expected, actual, outcome, action in [
        ("in SUCCEED", "SUCCEED (build #1)", "PASSED", "END"),
        ("== SUCCEED", "FAILED (stage 'tests' of build #1)", "FAILED", "AUDIT"),
        (">= 90%", "50% (1 of 2 finished builds; the last 10)", "FAILED", "WARN"),
        ("== SUCCEED", "no builds", "UNKNOWN", "END"),
    ]:
        row = next(line for line in lines if expected in line and actual in line)
        assert row.split()[-2:] == [outcome, action]
    links = [line.split("link: ")[1] for line in lines if "link: " in line]
    host = "https://airflow.example.com"
    assert links == [
        host
        + "/dags/build/runs/"
        + summary(1, "SUCCEED")["run_id"].replace(":", "%3A").replace("+", "%2B"),
        links[0] + "/tasks/group/tests",
        host + "/dags/build/runs",
        host + "/dags/deploy/runs",
    ]
    assert "why:  no build of pipeline 'deploy' in the status store: check the DAG id" in text


def test_the_columns_line_up() -> None:
    reader, rules = failing_gate()
    lines = render_report(evaluate(rules, reader, now=NOW)).splitlines()
    rows = [line for line in lines[2:] if not line.startswith(" ")]
    heads = ["expected", "in ", "== ", ">= ", "== "]
    starts = {row.index(word) for row, word in zip(rows, heads, strict=True)}
    assert len(starts) == 1


def test_headlines_say_what_the_gate_does_and_why() -> None:
    waiting = FakeReader([summary(7, "RUNNING")])
    result = evaluate([latest_status(PIPELINE, EQ, "SUCCEED")], waiting, now=NOW)
    assert headline(result) == (
        "Quality gate waiting for #7 of 'build' (manual__2026-03-01T12:07:00+00:00)"
    )
    history = FakeReader([summary(1, "SUCCEED"), summary(2, "FAILED")])
    audit = evaluate(
        [
            failed_count(PIPELINE, EQ, 0, last=5, action=AUDIT),
            success_rate(PIPELINE, GE, 0.9, last=5, action=WARN),
        ],
        history,
        now=NOW,
    )
    assert audit.decision is Decision.AUDIT
    assert headline(audit) == (
        "Quality gate needs approval: 1 of 2 AUDIT rules failed (rules[0]); warnings: rules[1]"
    )
    passed = evaluate(
        [
            latest_status(PIPELINE, EQ, "FAILED"),
            failed_count(PIPELINE, LE, 0, last=5, action=WARN),
        ],
        history,
        now=NOW,
    )
    assert headline(passed) == "Quality gate passed: 1 of 2 rules held; warnings: rules[1]"


def test_the_xcom_form_is_json_with_every_rule_and_the_builds_waited_on() -> None:
    reader, rules = failing_gate()
    reader = FakeReader(
        [*[summary(n, "SUCCEED", minute=n) for n in (1, 2)], summary(3, "RUNNING")],
        {"b-build-3": tree("RUNNING", {"tests": {"tests.unit": "RUNNING"}})},
    )
    data = report_dict(evaluate(rules[:3], reader, now=NOW), BASE)
    assert json.loads(json.dumps(data)) == data
    assert (data["decision"], data["quality_check"]) == ("wait", "QUALITY_CHECK_WAIT")
    assert [r["outcome"] for r in data["rules"]] == ["pending", "pending", "passed"]
    first = data["rules"][0]
    assert first["rule"] == rules[0].to_dict() and first["build_id"] == "b-build-3"
    assert first["expected"] == "in SUCCEED" and first["action"] == "END"
    assert data["rules"][1]["node"] == "tests"
    assert data["waiting_on"] == [
        {
            "build_id": "b-build-3",
            "pipeline_id": "build",
            "run_id": summary(3, "RUNNING")["run_id"],
            "build_num": 3,
            "status": "RUNNING",
            "url": first["url"],
        }
    ]
    assert data["checked_at"] == NOW.isoformat()
