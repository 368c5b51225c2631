"""Gate rules: one-line constructors, dicts and JSON, and every mistake told with its fix."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_bkci.gates import (
    AUDIT,
    END,
    EQ,
    GE,
    GT,
    IN,
    LE,
    LT,
    WARN,
    Action,
    Comparison,
    GateRuleError,
    Indicator,
    Rule,
    duration_p95,
    failed_count,
    latest_status,
    make_rule,
    node_status,
    parse_rule,
    parse_rules,
    success_rate,
)
from airflow_bkci.gates.rules import RUN_TYPES, format_duration, parse_duration
from airflow_bkci.model.status import BuildStatus

S = BuildStatus


def problems(exc: pytest.ExceptionInfo[GateRuleError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


# ------------------------------------------------------------ one-line rules
def test_one_line_rules_hold_normalised_values() -> None:
    latest = latest_status("build", IN, ["SUCCEED", "skip"], conf={"branch": "main"})
    assert latest.indicator is Indicator.LATEST_STATUS
    assert latest.threshold == (S.SUCCEED, S.SKIP)
    assert latest.conf == {"branch": "main"} and latest.action is Action.END
    assert latest.expected == "in SUCCEED, SKIP"

    node = node_status("build", "unit_tests", "==", "failed", action="warn")
    assert (node.node, node.threshold, node.action) == ("unit_tests", S.FAILED, WARN)
    assert node.expected == "== FAILED"

    rate = success_rate("build", ">=", "90%", last=20, run_type="Manual")
    assert (rate.comparison, rate.threshold, rate.last, rate.run_type) == (GE, 0.9, 20, "manual")
    assert rate.expected == ">= 90%"

    p95 = duration_p95("build", "le", "1h30m", window=timedelta(days=7))
    assert (p95.threshold, p95.window) == (timedelta(minutes=90), timedelta(days=7))
    assert p95.expected == "<= 1h30m"

    failed = failed_count("build", LT, 3, window=86400, action=AUDIT)
    assert (failed.threshold, failed.window, failed.action) == (3, timedelta(days=1), AUDIT)


@pytest.mark.parametrize(
    ("written", "comparison"),
    [
        ("LT", LT),
        ("lt", LT),
        ("<", LT),
        ("LE", LE),
        ("<=", LE),
        ("EQ", EQ),
        ("=", EQ),
        ("==", EQ),
        ("GE", GE),
        (">=", GE),
        ("GT", GT),
        (">", GT),
        (Comparison.LT, LT),
    ],
)
def test_comparisons_read_by_name_or_symbol(written: Any, comparison: Comparison) -> None:
    assert failed_count("build", written, 1, last=5).comparison is comparison


def test_in_reads_by_name_or_symbol() -> None:
    assert latest_status("build", "in", ["SUCCEED"]).comparison is IN


@pytest.mark.parametrize(
    ("comparison", "actual", "threshold", "holds"),
    [
        (LT, 1, 2, True),
        (LT, 2, 2, False),
        (LE, 2, 2, True),
        (LE, 3, 2, False),
        (EQ, 2, 2, True),
        (EQ, 1, 2, False),
        (GE, 2, 2, True),
        (GE, 1, 2, False),
        (GT, 3, 2, True),
        (GT, 2, 2, False),
        (IN, S.SKIP, (S.SUCCEED, S.SKIP), True),
        (IN, S.FAILED, (S.SUCCEED, S.SKIP), False),
        (EQ, S.SUCCEED, S.SUCCEED, True),
        (LE, timedelta(minutes=5), timedelta(minutes=5), True),
        (GE, 0.89, 0.9, False),
    ],
)
def test_every_comparison_holds_or_not(
    comparison: Comparison, actual: Any, threshold: Any, holds: bool
) -> None:
    assert comparison.holds(actual, threshold) is holds


def test_the_gate_names_have_constants_for_one_line_use() -> None:
    assert (END, AUDIT, WARN) == (Action.END, Action.AUDIT, Action.WARN)
    assert [c.symbol for c in (LT, LE, EQ, GE, GT, IN)] == ["<", "<=", "==", ">=", ">", "in"]


# ------------------------------------------------------------ dicts and JSON
def test_a_rule_from_a_dict_equals_the_one_line_rule() -> None:
    data = {
        "indicator": "success_rate",
        "pipeline": "build",
        "comparison": "GE",
        "threshold": 0.9,
        "last": 20,
        "action": "WARN",
        "conf": {"branch": "main"},
    }
    expected = success_rate("build", GE, 0.9, last=20, action=WARN, conf={"branch": "main"})
    assert parse_rule(data) == expected


ROUND_TRIP = [
    latest_status("build", IN, ["SUCCEED", "SKIP"], conf={"branch": "main"}, window="12h"),
    node_status("build", "tests.unit", EQ, "SUCCEED", run_type="scheduled", name="unit tests"),
    success_rate("build", GE, 0.95, last=20, window="30d", action=AUDIT),
    duration_p95("build", LE, 754.25, window="7d", action=WARN),
    failed_count("deploy", LT, 1, window="1d"),
    failed_count("deploy", LE, 2, last=9, conf={"retries": 3, "ratio": 0.5, "dry_run": False}),
]


@pytest.mark.parametrize("rule", ROUND_TRIP, ids=lambda r: r.indicator.value)
def test_to_dict_is_json_and_parses_back_to_the_same_rule(rule: Rule) -> None:
    text = json.dumps(rule.to_dict())
    assert parse_rule(json.loads(text)) == rule


def test_rules_from_json_text_or_an_object_with_rules() -> None:
    as_list = json.dumps([r.to_dict() for r in ROUND_TRIP])
    assert parse_rules(as_list) == tuple(ROUND_TRIP)
    assert parse_rules(json.dumps({"rules": json.loads(as_list)})) == tuple(ROUND_TRIP)
    assert parse_rules([ROUND_TRIP[0], ROUND_TRIP[1].to_dict()]) == tuple(ROUND_TRIP[:2])


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)))
def test_durations_format_and_parse_back_exactly(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h30m", 5400), ("7d", 604800), ("1d 2h", 93600), ("2.5", 2.5)],
)
def test_durations_in_words(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_run_types_are_airflows() -> None:
    from airflow.utils.types import DagRunType

    assert set(RUN_TYPES) == {t.value for t in DagRunType}


# ------------------------------------------------------------ mistakes and their fixes
BAD_RULES = [
    (
        lambda: make_rule("sucess_rate", "build", GE, 0.9, last=5),
        "'sucess_rate' is not a known indicator",
        "did you mean 'success_rate'?",
    ),
    (
        lambda: latest_status("build", LT, "SUCCEED"),
        "LT does not apply to latest_status (a status has no order)",
        "Fix: EQ, IN",
    ),
    (
        lambda: success_rate("build", IN, [0.9], last=5),
        "IN does not apply to success_rate",
        "Fix: LT, LE, EQ, GE, GT",
    ),
    (
        lambda: latest_status("build", "~", "SUCCEED"),
        "'~' is not a comparison",
        "use one of LT, LE, EQ, GE, GT, IN",
    ),
    (
        lambda: latest_status("build", IN, "SUCCEED"),
        "IN takes a list of statuses",
        'write IN ["SUCCEED"]',
    ),
    (
        lambda: latest_status("build", IN, []),
        "IN has an empty list",
        "name at least one status",
    ),
    (
        lambda: latest_status("build", EQ, ["SUCCEED", "SKIP"]),
        "EQ takes one status, not a list",
        'write IN ["SUCCEED", "SKIP"]',
    ),
    (
        lambda: latest_status("build", EQ, "SUCESS"),
        "'SUCESS' is not a BK-CI status",
        "did you mean 'SUCCEED'?",
    ),
    (
        lambda: latest_status("build", EQ, "success"),
        "'success' is Airflow's name, not a BK-CI status",
        "write 'SUCCEED' instead",
    ),
    (
        lambda: node_status("build", "tests", IN, ["SUCCEED", "upstream_failed"]),
        "'upstream_failed' is Airflow's name",
        "write 'UNEXEC' instead",
    ),
    (
        lambda: latest_status("build", EQ, "RUNNING"),
        "RUNNING is not a status a build or task ends in",
        "compare with final statuses: SUCCEED, FAILED, CANCELED, SKIP, UNEXEC",
    ),
    (
        lambda: latest_status("", EQ, "SUCCEED"),
        "pipeline '' is empty",
        "give the DAG id",
    ),
    (
        lambda: latest_status("{{ params.dag }}", EQ, "SUCCEED"),
        "is not a DAG id",
        "so they cannot be Jinja templates",
    ),
    (
        lambda: success_rate("build", GE, 90, last=5),
        "rate 90 is not between 0 and 1",
        "write 0.9 or '90%'",
    ),
    (
        lambda: success_rate("build", GE, "ninety", last=5),
        "'ninety' is not a rate",
        "a fraction between 0 and 1",
    ),
    (
        lambda: duration_p95("build", LE, "fast", window="7d"),
        "duration 'fast' is not a duration",
        "'15m'",
    ),
    (
        lambda: duration_p95("build", LE, -5, window="7d"),
        "duration -5 is negative",
        "give 0 or more",
    ),
    (
        lambda: failed_count("build", LE, -1, window="1d"),
        "count -1 is negative",
        "give 0 or more",
    ),
    (
        lambda: failed_count("build", LE, 1.5, window="1d"),
        "1.5 is not a whole number of builds",
        "give a count",
    ),
    (
        lambda: failed_count("build", LE, True, window="1d"),
        "True is not a whole number of builds",
        "give a count",
    ),
    (
        lambda: failed_count("build", LE, 1, window="1d", action="STOP"),
        "'STOP' is not an action",
        "use one of END, AUDIT, WARN",
    ),
    (
        lambda: success_rate("build", GE, 0.9),
        "success_rate needs the builds to look at",
        "give window= (e.g. '7d') and/or last=",
    ),
    (
        lambda: success_rate("build", GE, 0.9, window=0),
        "window 0 is not between 0 and 366 days",
        "give a positive window",
    ),
    (
        lambda: success_rate("build", GE, 0.9, window="400d"),
        "window '400d' is not between 0 and 366 days",
        "at most a year",
    ),
    (
        lambda: success_rate("build", GE, 0.9, window="a week"),
        "window 'a week' is not a duration",
        "'7d'",
    ),
    (
        lambda: success_rate("build", GE, 0.9, last=0),
        "last=0 is not a number of builds from 1 to 1000",
        "e.g. last=20",
    ),
    (
        lambda: make_rule("latest_status", "build", EQ, "SUCCEED", last=5),
        "latest_status looks at one build, the latest, so last= does not apply",
        "remove last=",
    ),
    (
        lambda: node_status("build", "", EQ, "SUCCEED"),
        "node_status names no stage or task",
        "give node= a task group id or a task id",
    ),
    (
        lambda: make_rule("latest_status", "build", EQ, "SUCCEED", node="tests"),
        "latest_status takes no node",
        "use node_status",
    ),
    (
        lambda: latest_status("build", EQ, "SUCCEED", run_type="nightly"),
        "'nightly' is not a run type",
        "use one of backfill, scheduled, manual",
    ),
    (
        lambda: latest_status("build", EQ, "SUCCEED", run_type="schedule"),
        "'schedule' is not a run type",
        "did you mean 'scheduled'?",
    ),
    (
        lambda: latest_status("build", EQ, "SUCCEED", conf={1: "x"}),
        "is not a mapping of names",
        '{"branch": "main"}',
    ),
    (
        lambda: latest_status("build", EQ, "SUCCEED", conf={"when": timedelta(1)}),
        "conf when=datetime.timedelta(days=1) cannot be matched",
        "match strings (up to 1000 characters), numbers or booleans",
    ),
    (
        lambda: latest_status("build", EQ, "SUCCEED", conf={"tags": ["a"]}),
        "conf tags=['a'] cannot be matched (not a string, number or boolean)",
        "lists, objects and null cannot be filtered on",
    ),
    (
        lambda: latest_status("build", EQ, "SUCCEED", conf={"ratio": float("nan")}),
        "conf ratio=nan cannot be matched",
        "numbers or booleans",
    ),
    (
        lambda: latest_status("build", EQ, "SUCCEED", conf={"git branch": "main"}),
        "conf key 'git branch' is not one the query API filters on",
        "1-100 of A-Z a-z 0-9 _ . -",
    ),
    (
        lambda: success_rate("build", GE, 0.9, last=5, conf={f"k{i}": i for i in range(11)}),
        "conf names 11 keys",
        "match at most 10",
    ),
    (
        lambda: success_rate("build", LT, 0, last=5),
        "< 0% can never pass",
        "change the comparison or the threshold",
    ),
    (
        lambda: success_rate("build", GT, 1, last=5),
        "> 100% can never pass",
        "change the comparison",
    ),
    (
        lambda: failed_count("build", GE, 0, last=5),
        ">= 0 can never fail",
        "change the comparison",
    ),
    (
        lambda: Rule(Indicator.DURATION_P95, "build", LE, "15m", window=timedelta(1)),
        "does not suit duration_p95 LE",
        "make_rule() or parse_rule()",
    ),
]


@pytest.mark.parametrize(("make", "problem", "fix"), BAD_RULES)
def test_every_mistake_names_the_rule_and_the_fix(make: Any, problem: str, fix: str) -> None:
    with pytest.raises(GateRuleError) as exc:
        make()
    message = str(exc.value)
    assert problem in message and fix in message
    assert message.startswith("rule (") and "of " in message  # names indicator and pipeline


def test_every_problem_of_a_rule_is_reported_at_once() -> None:
    with pytest.raises(GateRuleError) as exc:
        failed_count("build", "LE", -1, window="soon", action="STOP")
    assert len(exc.value.problems) == 3
    assert {p.rule for p in exc.value.problems} == {"failed_count of 'build'"}


def test_a_named_rule_is_named_in_its_errors() -> None:
    with pytest.raises(GateRuleError, match=r"rule \('smoke', latest_status of 'build'\)"):
        latest_status("build", EQ, "SUCES", name="smoke")


def test_parsed_rules_are_named_by_index_and_every_bad_one_is_listed() -> None:
    good = success_rate("build", GE, 0.9, last=5).to_dict()
    data = [
        good,
        {"indicator": "sucess_rate", "pipeline": "b", "comparison": "GE", "threshold": 0.9,
         "windw": "7d"},
        {"indicator": "latest_status", "pipeline": "b"},
    ]  # fmt: skip
    with pytest.raises(GateRuleError) as exc:
        parse_rules(data)
    found = problems(exc)
    assert found[0].startswith("rules[1] (sucess_rate of 'b'): unknown key 'windw'")
    assert "did you mean 'window'?" in found[0]
    assert any(
        p.startswith("rules[1]") and "did you mean 'success_rate'?" in p for p in found
    )  # the values are checked too, not only the keys
    missing = [p for p in found if p.startswith("rules[2] (latest_status of 'b')")]
    assert [p.split(":")[1].strip() for p in missing] == [
        "'comparison' is missing. Fix",
        "'threshold' is missing. Fix",
    ]
    assert str(exc.value).startswith("rules have problems:\nrules[1]")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("[{", "the rules are not JSON"),
        ('{"indicator": "latest_status"}', "the rules are not a list"),
        ("[]", "the gate has no rules"),
        ('["latest_status"]', "rules[0]: 'latest_status' is not a rule"),
    ],
)
def test_rules_that_are_not_a_list_of_rules(data: str, problem: str) -> None:
    with pytest.raises(GateRuleError, match="Fix: ") as exc:
        parse_rules(data)
    assert str(exc.value).startswith(problem)


def test_rule_errors_are_bkci_errors() -> None:
    from airflow_bkci.exceptions import BkciError

    with pytest.raises(BkciError):
        latest_status("build", LT, "SUCCEED")
