"""A real Airflow runs every example DAG to the end state the DAG intends, on each backend."""

from __future__ import annotations

import re

import pytest

from airflow_bkci.devstack import AirflowStack
from airflow_bkci.example_dags import EXPECTED_STATES
from tests.integration.helpers import airflow_rows

pytestmark = pytest.mark.integration

ExampleRuns = dict[str, tuple[str, str]]


def _ti_states(stack: AirflowStack, dag_id: str, run_id: str) -> dict[tuple[str, int], str]:
    return {
        (ti["task_id"], ti["map_index"]): ti["state"] for ti in stack.task_instances(dag_id, run_id)
    }


def test_examples_parse_without_errors(examples: tuple[AirflowStack, ExampleRuns]) -> None:
    stack, _ = examples
    assert stack.import_errors() == []
    assert set(EXPECTED_STATES) <= stack.dag_ids()


def test_examples_end_as_intended(examples: tuple[AirflowStack, ExampleRuns]) -> None:
    stack, runs = examples
    wrong = [
        stack.explain_run(dag_id, run_id)
        for dag_id, (run_id, state) in runs.items()
        if state != EXPECTED_STATES[dag_id]
    ]
    assert not wrong, "\n".join(wrong)
    assert {dag_id: state for dag_id, (_, state) in runs.items()} == EXPECTED_STATES


def test_retry_task_ran_two_tries(examples: tuple[AirflowStack, ExampleRuns]) -> None:
    stack, runs = examples
    run_id = runs["bkci_retry"][0]
    current = airflow_rows(
        stack,
        "SELECT try_number, state FROM task_instance "
        "WHERE dag_id = 'bkci_retry' AND run_id = :run_id AND task_id = 'flaky'",
        run_id=run_id,
    )
    earlier = airflow_rows(
        stack,
        "SELECT try_number FROM task_instance_history "
        "WHERE dag_id = 'bkci_retry' AND run_id = :run_id AND task_id = 'flaky'",
        run_id=run_id,
    )
    assert [tuple(r) for r in current] == [(2, "success")]
    assert [r.try_number for r in earlier] == [1]


def test_failure_leaves_downstream_upstream_failed(
    examples: tuple[AirflowStack, ExampleRuns],
) -> None:
    stack, runs = examples
    states = _ti_states(stack, "bkci_failure", runs["bkci_failure"][0])
    assert states == {
        ("build", -1): "success",
        ("deploy", -1): "failed",
        ("verify", -1): "upstream_failed",
    }


def test_branch_skips_the_path_not_taken(examples: tuple[AirflowStack, ExampleRuns]) -> None:
    stack, runs = examples
    states = _ti_states(stack, "bkci_branch", runs["bkci_branch"][0])
    assert states[("slow_path", -1)] == "skipped"
    assert states[("fast_path", -1)] == states[("join", -1)] == "success"


def test_mapped_task_expands_per_item(examples: tuple[AirflowStack, ExampleRuns]) -> None:
    stack, runs = examples
    states = _ti_states(stack, "bkci_mapped", runs["bkci_mapped"][0])
    assert sorted(i for (task_id, i) in states if task_id == "package") == [0, 1, 2, 3]
    assert set(states.values()) == {"success"}


def test_deferrable_sensors_ran_in_the_triggerer(
    examples: tuple[AirflowStack, ExampleRuns],
) -> None:
    stack, runs = examples
    run_dir = (
        stack.home / "logs" / "dag_id=bkci_deferrable" / f"run_id={runs['bkci_deferrable'][0]}"
    )
    for task_id in ("wait_resume_on_worker", "wait_end_in_triggerer"):
        # The triggerer writes a log of its own next to the task's log for each deferral.
        trigger_logs = list((run_dir / f"task_id={task_id}").glob("attempt=1.log.trigger.*.log"))
        assert len(trigger_logs) == 1, f"{task_id} never deferred: no trigger log in {run_dir}"
        assert "trigger completed" in trigger_logs[0].read_text() or "condition reached" in (
            trigger_logs[0].read_text()
        )


def test_a_failed_run_is_explained_with_its_task_log(
    examples: tuple[AirflowStack, ExampleRuns],
) -> None:
    # What a CI failure prints when a run ends in the wrong state (see test above).
    stack, runs = examples
    text = stack.explain_run("bkci_failure", runs["bkci_failure"][0])
    # test_collect clears this run once, so the tries counted depend on the order.
    assert re.search(r"- deploy\[-1\] try \d: failed", text), text
    assert re.search(r"- build\[-1\] try \d: success", text), text
    assert "attempt=1.log|" in text and "RuntimeError" in text
