"""A result across a deferral (JSON and back), the end of a wait, and the one-line summary."""

from __future__ import annotations

import json

from airflow_bkci.gates import (
    AUDIT,
    EQ,
    GE,
    IN,
    WARN,
    Decision,
    Outcome,
    evaluate,
    latest_status,
    node_status,
    result_from_json,
    result_to_json,
    stop_waiting,
    success_rate,
    summary_line,
)
from tests.unit.gates.fakes import NOW, PIPELINE, FakeReader, summary, tree

DOC = tree("SUCCEED", {"test": {"test.unit": "SUCCEED", "test.lint[0]": "FAILED"}})


def reader(latest: str = "SUCCEED") -> FakeReader:
    builds = [summary(n, "FAILED" if n % 4 == 0 else "SUCCEED") for n in range(1, 9)]
    builds.append(summary(9, latest))
    return FakeReader(builds, {"b-build-9": DOC})


def test_a_result_comes_back_from_json_equal_whatever_it_holds() -> None:
    rules = [
        latest_status(PIPELINE, IN, ["SUCCEED", "SKIP"]),
        node_status(PIPELINE, "test.lint", EQ, "SUCCEED", action=WARN),
        node_status(PIPELINE, "test", EQ, "SUCCEED", name="tests"),
        success_rate(PIPELINE, GE, 0.9, last=8, window="30d", action=AUDIT),
        latest_status("nobody", EQ, "SUCCEED"),
    ]
    result = evaluate(rules, reader(), now=NOW)
    data = result_to_json(result)
    assert json.loads(json.dumps(data)) == data  # only JSON values: a trigger event may carry it
    assert result_from_json(data) == result


def test_stopping_a_wait_fails_each_waiting_rule_by_its_own_action() -> None:
    running = reader("RUNNING")
    end = evaluate([latest_status(PIPELINE, EQ, "SUCCEED")], running, now=NOW)
    warn = evaluate([latest_status(PIPELINE, EQ, "SUCCEED", action=WARN)], running, now=NOW)
    assert end.decision is warn.decision is Decision.WAIT

    ended = stop_waiting(end, "the gate's timeout (5m) passed")
    assert ended.decision is Decision.FAIL
    (rule,) = ended.results
    assert rule.outcome is Outcome.UNKNOWN
    assert rule.actual == "RUNNING (build #9 has not ended); still not ended"
    assert rule.reason is not None
    assert rule.reason.endswith("of 'build' when the gate's timeout (5m) passed")
    assert rule.build is not None and rule.build["build_num"] == 9  # the link still points at it
    assert stop_waiting(warn, "the timeout passed").decision is Decision.PASS


def test_the_summary_names_what_failed_with_expected_and_actual() -> None:
    rules = [
        latest_status(PIPELINE, EQ, "SUCCEED"),
        success_rate(PIPELINE, GE, "90%", last=8),
        node_status(PIPELINE, "test.lint", EQ, "SUCCEED", action=WARN),
    ]
    line = summary_line(evaluate(rules, reader(), now=NOW))
    assert line == (
        "1/3 rules passed; failed: success_rate of 'build' >= 90% (actual 75% (6 of 8 "
        "finished builds; the last 8)); node_status of 'build' node 'test.lint' == SUCCEED "
        "(actual FAILED (mapped 'test.lint' of build #9)) [WARN]"
    )
    waiting = summary_line(evaluate(rules[:1], reader("RUNNING"), now=NOW))
    assert waiting == "0/1 rules passed; waiting for #9 of 'build'"
