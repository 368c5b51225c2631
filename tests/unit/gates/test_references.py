"""Names the rules use: unknown pipelines, stages and tasks fail before the gate waits on them."""

from __future__ import annotations

import asyncio

import pytest

from airflow_bkci.gates import (
    EQ,
    GE,
    BuildQuery,
    GateRuleError,
    check_references,
    check_references_async,
    latest_status,
    node_status,
    success_rate,
)
from tests.unit.gates.fakes import PIPELINE, AsyncFakeReader, FakeReader, summary, tree

DOC = tree("SUCCEED", {"build": {"build.compile": "SUCCEED"}, "tests": {"tests.unit": "SUCCEED"}})


def reader() -> FakeReader:
    return FakeReader(
        [summary(1, "SUCCEED"), summary(1, "SUCCEED", pipeline="deploy")], {"b-build-1": DOC}
    )


def test_rules_that_name_what_exists_pass_after_one_read_per_tree() -> None:
    rules = [
        latest_status(PIPELINE, EQ, "SUCCEED"),
        node_status(PIPELINE, "tests", EQ, "SUCCEED"),
        node_status(PIPELINE, "build.compile", EQ, "SUCCEED"),
        success_rate("deploy", GE, 0.9, last=5),
    ]
    source = reader()
    check_references(rules, source)  # no error
    # One read of the latest build, of the one pipeline whose stages and tasks are named.
    assert source.queries == [BuildQuery(PIPELINE, limit=1)]


def test_every_unknown_name_is_reported_with_did_you_mean() -> None:
    rules = [
        latest_status("biuld", EQ, "SUCCEED"),
        node_status(PIPELINE, "test", EQ, "SUCCEED"),
        node_status(PIPELINE, "tests.unit", EQ, "SUCCEED"),
        node_status(PIPELINE, "lint", EQ, "SUCCEED"),
    ]
    with pytest.raises(GateRuleError) as exc:
        check_references(rules, reader())
    assert [str(p) for p in exc.value.problems] == [
        "rules[0] (latest_status of 'biuld'): pipeline 'biuld' is unknown: the status store has "
        "no build of it. Fix: did you mean 'build'? or check the DAG id, or run the pipeline once",
        "rules[1] (node_status of 'build' node 'test'): the latest build of 'build' has no stage "
        "or task 'test'. Fix: did you mean 'tests'? or name a task group id or a task id "
        "(stages: build, tests; tasks: build.compile, tests.unit)",
        "rules[3] (node_status of 'build' node 'lint'): the latest build of 'build' has no stage "
        "or task 'lint'. Fix: name a task group id or a task id (stages: build, tests; tasks: "
        "build.compile, tests.unit)",
    ]


def test_a_pipeline_the_user_may_not_read_is_named_as_a_missing_permission() -> None:
    # The list of pipelines leaves it out; asked by name, the API answers 403.
    source = FakeReader([summary(1, "SUCCEED", pipeline="payments")], denied={"payments"})
    with pytest.raises(GateRuleError) as exc:
        check_references([latest_status("payments", EQ, "SUCCEED")], source)
    assert str(exc.value) == (
        "rules[0] (latest_status of 'payments'): the gate's connection may not read pipeline "
        "'payments' (HTTP 403 from the query API). Fix: give the user of the gate's connection "
        "read access to DAG 'payments' (or use a connection whose user has it), or remove the rule"
    )
    assert source.queries == [BuildQuery("payments", limit=1)]


def test_a_pipeline_whose_first_build_landed_after_the_list_is_known() -> None:
    class LateList(FakeReader):
        def pipelines(self) -> list[str]:
            return []

    source = LateList([summary(1, "SUCCEED")])
    check_references([latest_status(PIPELINE, EQ, "SUCCEED")], source)  # no error


def test_the_async_check_finds_the_same() -> None:
    rules = [node_status(PIPELINE, "test", EQ, "SUCCEED")]
    with pytest.raises(GateRuleError) as sync:
        check_references(rules, reader())
    with pytest.raises(GateRuleError) as asynchronous:
        asyncio.run(check_references_async(rules, AsyncFakeReader(reader())))
    assert asynchronous.value.problems == sync.value.problems
