"""Checks that every pipeline, stage and task the rules name exists, before a gate waits on them.

A gate that names a DAG nobody runs, or a task that was renamed, would wait or
fail for a reason nobody sees; this turns it into a :class:`GateRuleError` with
the fix ("did you mean"), raised when the gate starts. Pipelines are those the
reader's user may read; stages and tasks are those of each pipeline's latest
build.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from airflow_bkci.gates.builds import (
    AsyncBuildReader,
    BuildQuery,
    BuildReader,
    find_node,
    names_in,
    node_ids,
)
from airflow_bkci.gates.errors import GateRuleError, RuleProblem
from airflow_bkci.gates.rules import Rule
from airflow_bkci.gates.terms import Indicator
from airflow_bkci.gates.values import did_you_mean

__all__ = ["check_references", "check_references_async", "reference_problems"]


def reference_problems(
    rules: Sequence[Rule],
    pipelines: Collection[str],
    trees: Mapping[str, Mapping[str, Any] | None],
) -> list[RuleProblem]:
    """Problems of names the rules use; ``trees`` maps a pipeline to its latest build's tree."""
    problems = []
    for index, rule in enumerate(rules):
        if rule.pipeline not in pipelines:
            problems.append(
                RuleProblem(
                    f"pipeline {rule.pipeline!r} is unknown: the status store has no build of "
                    "it, or the gate's user may not read it",
                    f"{did_you_mean(rule.pipeline, pipelines)}check the DAG id, and that the "
                    "gate's connection user may read that DAG",
                    index,
                    rule.label,
                )
            )
            continue
        tree = trees.get(rule.pipeline)
        if rule.indicator is not Indicator.NODE_STATUS or tree is None:
            continue
        node = str(rule.node)
        if find_node(tree, node) is None:
            stages, tasks = node_ids(tree)
            problems.append(
                RuleProblem(
                    f"the latest build of {rule.pipeline!r} has no stage or task {node!r}",
                    f"{did_you_mean(node, names_in(tree))}name a task group id or a task id "
                    f"(stages: {', '.join(stages) or 'none'}; tasks: {', '.join(tasks) or 'none'})",
                    index,
                    rule.label,
                )
            )
    return problems


def _tree_pipelines(rules: Sequence[Rule], known: Collection[str]) -> list[str]:
    wanted = {r.pipeline for r in rules if r.indicator is Indicator.NODE_STATUS}
    return sorted(wanted & set(known))


def check_references(rules: Sequence[Rule], reader: BuildReader) -> None:
    """Raise :class:`GateRuleError` listing every unknown pipeline, stage or task."""
    known = set(reader.pipelines())
    trees: dict[str, Mapping[str, Any] | None] = {}
    for pipeline in _tree_pipelines(rules, known):
        builds = reader.builds(BuildQuery(pipeline, limit=1))
        trees[pipeline] = reader.snapshot(builds[0]["id"])["document"] if builds else None
    problems = reference_problems(rules, known, trees)
    if problems:
        raise GateRuleError(problems)


async def check_references_async(rules: Sequence[Rule], reader: AsyncBuildReader) -> None:
    """:func:`check_references` for asyncio."""
    known = set(await reader.pipelines())
    trees: dict[str, Mapping[str, Any] | None] = {}
    for pipeline in _tree_pipelines(rules, known):
        builds = await reader.builds(BuildQuery(pipeline, limit=1))
        trees[pipeline] = (await reader.snapshot(builds[0]["id"]))["document"] if builds else None
    problems = reference_problems(rules, known, trees)
    if problems:
        raise GateRuleError(problems)
