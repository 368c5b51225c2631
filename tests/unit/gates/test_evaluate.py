"""Evaluating rules on plain build data: every indicator, outcome and decision."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

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
    Decision,
    GateResult,
    Outcome,
    ReadUnavailable,
    Rule,
    RuleResult,
    duration_p95,
    evaluate,
    evaluate_async,
    failed_count,
    latest_status,
    node_status,
    success_rate,
)
from airflow_bkci.gates.evaluate import query_for
from airflow_bkci.gates.terms import FINAL_STATUSES
from tests.unit.gates.fakes import NOW, PIPELINE, AsyncFakeReader, FakeReader, summary, tree


def one(rule: Rule, reader: FakeReader) -> RuleResult:
    result = evaluate([rule], reader, now=NOW)
    assert len(result.results) == 1
    return result.results[0]


# ------------------------------------------------------------ latest_status
def test_latest_status_looks_at_the_newest_build_only() -> None:
    reader = FakeReader([summary(1, "FAILED"), summary(2, "SUCCEED")])
    passed = one(latest_status(PIPELINE, IN, ["SUCCEED"]), reader)
    assert (passed.outcome, passed.expected, passed.actual) == (
        Outcome.PASSED,
        "in SUCCEED",
        "SUCCEED (build #2)",
    )
    assert passed.build is not None and passed.build["build_num"] == 2
    failed = one(latest_status(PIPELINE, EQ, "FAILED"), reader)
    assert (failed.outcome, failed.actual) == (Outcome.FAILED, "SUCCEED (build #2)")


@pytest.mark.parametrize("status", ["QUEUE", "PREPARE_ENV", "RUNNING", "REVIEWING"])
def test_latest_status_of_a_build_that_has_not_ended_is_pending(status: str) -> None:
    reader = FakeReader([summary(1, "SUCCEED"), summary(2, status)])
    result = evaluate([latest_status(PIPELINE, EQ, "SUCCEED")], reader, now=NOW)
    pending = result.results[0]
    assert pending.outcome is Outcome.PENDING
    assert pending.actual == f"{status} (build #2 has not ended)"
    assert pending.reason is not None and "waiting for build #2 (manual__" in pending.reason
    assert result.decision is Decision.WAIT
    assert [b["build_num"] for b in result.waiting_on] == [2]


def test_filters_choose_the_latest_build_of_a_branch_and_run_type() -> None:
    reader = FakeReader(
        [
            summary(1, "SUCCEED", conf={"branch": "main"}, run_type="manual"),
            summary(2, "FAILED", conf={"branch": "main"}, run_type="scheduled"),
            summary(3, "FAILED", conf={"branch": "feature"}, run_type="manual"),
        ]
    )
    main_manual = latest_status(PIPELINE, EQ, "SUCCEED", conf={"branch": "main"}, run_type="manual")
    assert one(main_manual, reader).actual == "SUCCEED (build #1)"
    main_any = latest_status(PIPELINE, EQ, "SUCCEED", conf={"branch": "main"})
    assert one(main_any, reader).actual == "FAILED (build #2)"


def test_filters_apply_to_what_the_build_document_says_when_the_summary_does_not() -> None:
    builds = [summary(1, "SUCCEED"), summary(2, "FAILED")]
    documents = {
        "b-build-1": tree("SUCCEED", {}, run_type="scheduled"),
        "b-build-2": tree("FAILED", {}, run_type="manual"),
    }
    rule = latest_status(PIPELINE, EQ, "SUCCEED", run_type="scheduled")
    assert one(rule, FakeReader(builds, documents)).actual == "SUCCEED (build #1)"


def test_a_window_leaves_older_builds_out() -> None:
    reader = FakeReader([summary(1, "SUCCEED", minute=0)])  # an hour before NOW
    result = one(latest_status(PIPELINE, EQ, "SUCCEED", window="30m"), reader)
    assert result.outcome is Outcome.UNKNOWN
    assert result.reason == (
        "no build of 'build' (within the last 30m): check the filters, or run the pipeline first"
    )
    assert one(latest_status(PIPELINE, EQ, "SUCCEED", window="2h"), reader).outcome is (
        Outcome.PASSED
    )


def test_no_matching_build_is_unknown_and_fails_an_end_rule() -> None:
    reader = FakeReader([summary(1, "SUCCEED", conf={"branch": "main"})])
    rule = latest_status(PIPELINE, EQ, "SUCCEED", conf={"branch": "release"})
    result = evaluate([rule], reader, now=NOW)
    unknown = result.results[0]
    assert (unknown.outcome, unknown.actual) == (Outcome.UNKNOWN, "no build")
    assert unknown.reason is not None and "(conf branch='release')" in unknown.reason
    assert result.decision is Decision.FAIL


def test_aggregates_count_only_the_builds_the_conf_filter_keeps() -> None:
    reader = FakeReader(
        [
            summary(1, "FAILED", conf={"branch": "feature"}),
            summary(2, "SUCCEED", conf={"branch": "main", "retries": 3}),
            summary(3, "FAILED", conf={"branch": "feature"}),
            summary(4, "SUCCEED", conf={"branch": "main"}),
            summary(5, "FAILED"),  # no conf kept: none given, or over 16 KiB
        ]
    )
    main = one(success_rate(PIPELINE, GE, 1, last=10, conf={"branch": "main"}), reader)
    assert (main.outcome, main.actual) == (
        Outcome.PASSED,
        "100% (2 of 2 finished builds; conf branch='main', the last 10)",
    )
    assert reader.queries[-1].conf_params() == [("conf.branch", "main")]
    everything = one(success_rate(PIPELINE, GE, 1, last=10), reader)
    assert (everything.outcome, everything.actual) == (
        Outcome.FAILED,
        "40% (2 of 5 finished builds; the last 10)",
    )
    retried = one(failed_count(PIPELINE, EQ, 0, last=10, conf={"retries": 3}), reader)
    assert (retried.outcome, retried.actual) == (
        Outcome.PASSED,
        "0 (of 1 finished builds; conf retries=3, the last 10)",
    )


def test_a_pipeline_without_builds_is_unknown_with_the_fix() -> None:
    result = one(latest_status("biuld", EQ, "SUCCEED"), FakeReader([summary(1, "SUCCEED")]))
    assert result.outcome is Outcome.UNKNOWN
    assert result.reason is not None
    assert "no build of pipeline 'biuld' in the status store: check the DAG id" in result.reason


def test_no_permission_to_read_a_pipeline_fails_the_gate_even_for_a_warning() -> None:
    reader = FakeReader([summary(1, "SUCCEED", pipeline="payments")], denied={"payments"})
    result = evaluate([latest_status("payments", EQ, "SUCCEED", action=WARN)], reader, now=NOW)
    error = result.results[0]
    assert error.outcome is Outcome.ERROR
    assert error.reason is not None
    assert error.reason.startswith("no permission to read pipeline 'payments': ask an admin")
    assert result.decision is Decision.FAIL and result.failures == (error,)


def test_a_read_that_may_work_later_is_not_a_result() -> None:
    reader = FakeReader([summary(1, "SUCCEED")], failure=ReadUnavailable("503", retry_after=5))
    with pytest.raises(ReadUnavailable) as exc:
        evaluate([latest_status(PIPELINE, EQ, "SUCCEED")], reader, now=NOW)
    assert exc.value.retry_after == 5


# ------------------------------------------------------------ node_status
DOC = tree(
    "FAILED",
    {
        "build": {"build.compile": "SUCCEED", "build.lint": "SKIP"},
        "tests": {
            "tests.unit": "SUCCEED",
            "tests.e2e.chrome": "FAILED",
            "tests.e2e.firefox": "SUCCEED",
        },
        "__ungrouped__": {"shard[0]": "SUCCEED", "shard[1]": "FAILED", "notify": "UNEXEC"},
    },
)


@pytest.mark.parametrize(
    ("node", "status", "kind"),
    [
        ("build", "SUCCEED", "stage"),
        ("tests", "FAILED", "stage"),
        ("tests.unit", "SUCCEED", "task"),
        ("tests.e2e", "FAILED", "group"),
        ("shard", "FAILED", "mapped"),
        ("shard[0]", "SUCCEED", "instance"),
        ("notify", "UNEXEC", "task"),
    ],
)
def test_node_status_finds_stages_groups_tasks_and_mapped_tasks(
    node: str, status: str, kind: str
) -> None:
    reader = FakeReader([summary(1, "FAILED")], {"b-build-1": DOC})
    result = one(node_status(PIPELINE, node, EQ, status), reader)
    assert result.outcome is Outcome.PASSED
    assert result.actual == f"{status} ({kind} {node!r} of build #1)"
    assert result.node is not None and result.node.kind == kind


def test_a_node_that_ended_is_judged_while_the_build_still_runs() -> None:
    doc = tree("RUNNING", {"build": {"build.compile": "FAILED"}, "tests": {"tests.unit": "QUEUE"}})
    reader = FakeReader([summary(1, "RUNNING")], {"b-build-1": doc})
    result = evaluate(
        [
            node_status(PIPELINE, "build", EQ, "SUCCEED"),
            node_status(PIPELINE, "tests", EQ, "SUCCEED"),
        ],
        reader,
        now=NOW,
    )
    ended, running = result.results
    assert (ended.outcome, ended.actual) == (Outcome.FAILED, "FAILED (stage 'build' of build #1)")
    assert running.outcome is Outcome.PENDING
    assert (
        running.reason
        == "waiting for stage 'tests' of build #1 (manual__2026-03-01T12:01:00+00:00)"
    )
    assert result.decision is Decision.FAIL  # no need to wait: an END rule already failed


def test_a_task_up_for_retry_is_pending() -> None:
    doc = tree("RUNNING", {"tests": {"tests.unit": "RETRY"}})
    reader = FakeReader([summary(1, "RUNNING")], {"b-build-1": doc})
    assert one(node_status(PIPELINE, "tests.unit", EQ, "SUCCEED"), reader).outcome is (
        Outcome.PENDING
    )


def test_a_node_left_unfinished_by_an_ended_build_is_judged_as_it_is() -> None:
    doc = tree("FAILED", {"deploy": {"deploy.push": "QUEUE"}})
    reader = FakeReader([summary(1, "FAILED")], {"b-build-1": doc})
    result = one(node_status(PIPELINE, "deploy.push", EQ, "SUCCEED"), reader)
    assert (result.outcome, result.actual) == (
        Outcome.FAILED,
        "QUEUE (task 'deploy.push' of build #1)",
    )


def test_a_node_not_seen_yet_in_a_running_build_is_pending() -> None:
    doc = tree("RUNNING", {"build": {"build.compile": "RUNNING"}})
    reader = FakeReader([summary(1, "RUNNING")], {"b-build-1": doc})
    result = one(node_status(PIPELINE, "tests", EQ, "SUCCEED"), reader)
    assert (result.outcome, result.actual) == (Outcome.PENDING, "not in build #1 yet")


def test_an_unknown_node_of_an_ended_build_lists_what_there_is() -> None:
    reader = FakeReader([summary(1, "FAILED")], {"b-build-1": DOC})
    result = one(node_status(PIPELINE, "test", EQ, "SUCCEED"), reader)
    assert (result.outcome, result.actual) == (Outcome.UNKNOWN, "no 'test' in build #1")
    assert result.reason == (
        "build #1 of 'build' has no stage or task 'test': did you mean 'tests'? "
        "stages: build, tests; tasks: build.compile, build.lint, notify, shard, tests.e2e.chrome, "
        "tests.e2e.firefox, tests.unit"
    )


# ------------------------------------------------------------ aggregates
HISTORY = [
    summary(1, "SUCCEED", duration_s=60),
    summary(2, "FAILED", duration_s=300),
    summary(3, "SUCCEED", duration_s=120),
    summary(4, "CANCELED", duration_s=30),
    summary(5, "SUCCEED", duration_s=90),
    summary(6, "RUNNING"),
]


def test_success_rate_counts_finished_builds_and_canceled_as_not_successful() -> None:
    result = one(success_rate(PIPELINE, GE, 0.6, window="2h"), FakeReader(HISTORY))
    assert (result.outcome, result.actual) == (
        Outcome.PASSED,
        "60% (3 of 5 finished builds; within the last 2h)",
    )
    assert one(success_rate(PIPELINE, GT, 0.6, window="2h"), FakeReader(HISTORY)).outcome is (
        Outcome.FAILED
    )


def test_last_n_means_the_newest_n_finished_builds() -> None:
    result = one(success_rate(PIPELINE, GE, "60%", last=3), FakeReader(HISTORY))
    assert result.actual == "66.67% (2 of 3 finished builds; the last 3)"  # 5, 4, 3


def test_success_rate_without_a_finished_build_is_unknown() -> None:
    reader = FakeReader([summary(1, "RUNNING")])
    result = one(success_rate(PIPELINE, GE, 0.9, last=10), reader)
    assert (result.outcome, result.actual) == (Outcome.UNKNOWN, "no finished builds")
    assert result.reason is not None and "widen the window or the filters" in result.reason


def test_duration_p95_is_the_nearest_rank_of_finished_builds() -> None:
    rule = duration_p95(PIPELINE, LE, "5m", window="2h")
    result = one(rule, FakeReader(HISTORY))
    assert (result.outcome, result.actual) == (
        Outcome.PASSED,
        "5m (p95 of 5 finished builds; within the last 2h)",
    )
    assert one(duration_p95(PIPELINE, LT, "5m", window="2h"), FakeReader(HISTORY)).outcome is (
        Outcome.FAILED
    )


def test_duration_p95_without_durations_is_unknown() -> None:
    reader = FakeReader([summary(1, "FAILED")])  # ended, but no duration known
    assert one(duration_p95(PIPELINE, LE, 60, last=5), reader).outcome is Outcome.UNKNOWN


def test_failed_count_counts_failed_builds_only() -> None:
    result = one(failed_count(PIPELINE, LE, 1, window="2h"), FakeReader(HISTORY))
    assert (result.outcome, result.actual) == (
        Outcome.PASSED,
        "1 (of 5 finished builds; within the last 2h)",
    )


def test_no_builds_in_the_window_is_no_evidence_and_counts_as_failed() -> None:
    # A filter with a typo matches nothing: that must not open a gate on "0 failures".
    reader = FakeReader([summary(1, "FAILED", minute=0)])
    result = one(failed_count(PIPELINE, EQ, 0, window="10m"), reader)
    assert result.outcome is Outcome.UNKNOWN
    assert "no finished build" in result.actual


@pytest.mark.parametrize(
    ("comparison", "threshold", "outcome"),
    [
        (LT, 1, Outcome.FAILED),
        (LT, 2, Outcome.PASSED),
        (LE, 1, Outcome.PASSED),
        (LE, 0, Outcome.FAILED),
        (EQ, 1, Outcome.PASSED),
        (EQ, 2, Outcome.FAILED),
        (GE, 1, Outcome.PASSED),
        (GE, 2, Outcome.FAILED),
        (GT, 0, Outcome.PASSED),
        (GT, 1, Outcome.FAILED),
    ],
)
def test_every_comparison_through_a_rule(
    comparison: Comparison, threshold: int, outcome: Outcome
) -> None:
    rule = failed_count(PIPELINE, comparison, threshold, window="2h")  # one failed build
    assert one(rule, FakeReader(HISTORY)).outcome is outcome


def test_aggregates_read_only_finished_builds_of_the_window_and_last_n() -> None:
    rule = success_rate(PIPELINE, GE, 0.5, last=20, window="1d", run_type="manual")
    query = query_for(rule, NOW)
    assert query.statuses == FINAL_STATUSES and query.limit == 20
    assert query.since == NOW - timedelta(days=1) and query.run_type == "manual"
    latest = query_for(latest_status(PIPELINE, EQ, "SUCCEED"), NOW)
    assert (latest.limit, latest.statuses, latest.since) == (1, (), None)


# ------------------------------------------------------------ decisions
def _result(outcome: Outcome, action: Action, index: int = 0) -> RuleResult:
    rule = latest_status(PIPELINE, EQ, "SUCCEED", action=action)
    build = summary(index + 1, "RUNNING" if outcome is Outcome.PENDING else "SUCCEED")
    return RuleResult(index, rule, outcome, "== SUCCEED", "x", build=build)


P, F, W, U, E = Outcome.PASSED, Outcome.FAILED, Outcome.PENDING, Outcome.UNKNOWN, Outcome.ERROR


@pytest.mark.parametrize(
    ("outcomes", "decision", "warned"),
    [
        ([(P, END), (P, AUDIT), (P, WARN)], Decision.PASS, 0),
        ([(P, END), (F, WARN)], Decision.PASS, 1),
        ([(U, WARN), (F, WARN)], Decision.PASS, 2),
        ([(F, AUDIT), (P, END)], Decision.AUDIT, 0),
        ([(U, AUDIT), (F, WARN)], Decision.AUDIT, 1),
        ([(F, END), (F, AUDIT), (F, WARN)], Decision.FAIL, 1),
        ([(U, END)], Decision.FAIL, 0),
        ([(E, WARN), (P, END)], Decision.FAIL, 0),
        ([(W, END), (P, AUDIT)], Decision.WAIT, 0),
        ([(W, WARN), (F, AUDIT)], Decision.WAIT, 0),
        ([(W, END), (F, END)], Decision.FAIL, 0),
        ([(W, AUDIT), (F, WARN)], Decision.WAIT, 1),
    ],
)
def test_the_decision_of_every_action_and_outcome(
    outcomes: list[tuple[Outcome, Action]], decision: Decision, warned: int
) -> None:
    result = GateResult(
        tuple(_result(o, a, i) for i, (o, a) in enumerate(outcomes)), checked_at=NOW
    )
    assert result.decision is decision
    assert len(result.warnings) == warned


def test_decisions_carry_bk_ci_quality_check_names() -> None:
    assert {d: d.quality_check for d in Decision} == {
        Decision.PASS: "QUALITY_CHECK_PASS",
        Decision.WAIT: "QUALITY_CHECK_WAIT",
        Decision.AUDIT: "QUALITY_CHECK_WAIT",
        Decision.FAIL: "QUALITY_CHECK_FAIL",
    }


def test_a_gate_waits_on_each_running_build_once() -> None:
    doc = tree("RUNNING", {"tests": {"tests.unit": "RUNNING"}})
    reader = FakeReader([summary(1, "RUNNING")], {"b-build-1": doc})
    result = evaluate(
        [latest_status(PIPELINE, EQ, "SUCCEED"), node_status(PIPELINE, "tests", EQ, "SUCCEED")],
        reader,
        now=NOW,
    )
    assert [r.outcome for r in result.results] == [Outcome.PENDING, Outcome.PENDING]
    assert [b["id"] for b in result.waiting_on] == ["b-build-1"]


# ------------------------------------------------------------ async
def test_async_evaluation_gives_the_same_result() -> None:
    documents: dict[str, Any] = {"b-build-5": DOC}
    rules = [
        latest_status(PIPELINE, IN, ["SUCCEED"]),
        node_status(PIPELINE, "tests", EQ, "SUCCEED", action=AUDIT),
        success_rate(PIPELINE, GE, 0.5, last=4, action=WARN),
        latest_status("missing", EQ, "SUCCEED"),
    ]
    reader = FakeReader(HISTORY[:5], documents)
    sync = evaluate(rules, reader, now=NOW)
    asynchronous = asyncio.run(evaluate_async(rules, AsyncFakeReader(reader), now=NOW))
    assert asynchronous == sync
    assert [r.outcome for r in sync.results] == [P, F, P, U]
    assert sync.decision is Decision.FAIL
