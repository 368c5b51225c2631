"""Checks that every pipeline, stage and task the rules name exists, before a gate waits on them.

A gate that names a DAG nobody runs, or a task that was renamed, would wait or
fail for a reason nobody sees; this turns it into a :class:`GateRuleError` with
the fix ("did you mean"), raised when the gate starts. Pipelines are those the
reader's user may read; stages and tasks are those of each pipeline's latest
build. A pipeline missing from that list is asked for once more by name, since
the list leaves out, without saying so, the DAGs the user may not read: the
answer tells a missing permission (403) from a DAG id that is wrong (404).
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
from airflow_bkci.gates.errors import (
    GateReadError,
    GateRuleError,
    PipelineAccessDenied,
    PipelineNotFound,
    RuleProblem,
)
from airflow_bkci.gates.rules import Rule
from airflow_bkci.gates.terms import Indicator
from airflow_bkci.gates.values import did_you_mean

__all__ = ["check_references", "check_references_async", "reference_problems"]


def reference_problems(
    rules: Sequence[Rule],
    pipelines: Collection[str],
    trees: Mapping[str, Mapping[str, Any] | None],
    refused: Mapping[str, GateReadError] | None = None,
) -> list[RuleProblem]:
    """Problems of names the rules use; ``trees`` maps a pipeline to its latest build's tree.

    ``refused`` maps a pipeline missing from ``pipelines`` to why a read of it by
    name failed; a missing pipeline without an entry is unknown.
    """
    problems = []
    for index, rule in enumerate(rules):
        if rule.pipeline not in pipelines:
            reason = (refused or {}).get(rule.pipeline)
            problems.append(_missing_pipeline(index, rule, pipelines, reason))
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


def _missing_pipeline(
    index: int, rule: Rule, pipelines: Collection[str], reason: GateReadError | None
) -> RuleProblem:
    if isinstance(reason, PipelineAccessDenied):
        if reason.status == 401:
            fix = "give the gate's connection a valid token, or a login and password"
        else:
            fix = (
                f"give the user of the gate's connection read access to DAG {rule.pipeline!r} "
                "(or use a connection whose user has it), or remove the rule"
            )
        return RuleProblem(
            f"the gate's connection may not read pipeline {rule.pipeline!r} "
            f"(HTTP {reason.status} from the query API)",
            fix,
            index,
            rule.label,
        )
    # A 404 says no more than "unknown"; any other refusal is worth showing.
    why = "" if reason is None or isinstance(reason, PipelineNotFound) else f" ({reason})"
    return RuleProblem(
        f"pipeline {rule.pipeline!r} is unknown: the status store has no build of it{why}",
        f"{did_you_mean(rule.pipeline, pipelines)}check the DAG id, or run the pipeline once",
        index,
        rule.label,
    )


def _unlisted(rules: Sequence[Rule], known: Collection[str]) -> list[str]:
    return sorted({r.pipeline for r in rules} - set(known))


def _tree_pipelines(rules: Sequence[Rule], known: Collection[str]) -> list[str]:
    wanted = {r.pipeline for r in rules if r.indicator is Indicator.NODE_STATUS}
    return sorted(wanted & set(known))


def check_references(rules: Sequence[Rule], reader: BuildReader) -> None:
    """Raise :class:`GateRuleError` listing every unknown pipeline, stage or task."""
    known = set(reader.pipelines())
    refused: dict[str, GateReadError] = {}
    for pipeline in _unlisted(rules, known):
        try:
            if reader.builds(BuildQuery(pipeline, limit=1)):
                known.add(pipeline)  # its first build landed after the list was read
        except GateReadError as exc:
            refused[pipeline] = exc
    trees: dict[str, Mapping[str, Any] | None] = {}
    for pipeline in _tree_pipelines(rules, known):
        builds = reader.builds(BuildQuery(pipeline, limit=1))
        trees[pipeline] = reader.snapshot(builds[0]["id"])["document"] if builds else None
    problems = reference_problems(rules, known, trees, refused)
    if problems:
        raise GateRuleError(problems)


async def check_references_async(rules: Sequence[Rule], reader: AsyncBuildReader) -> None:
    """:func:`check_references` for asyncio."""
    known = set(await reader.pipelines())
    refused: dict[str, GateReadError] = {}
    for pipeline in _unlisted(rules, known):
        try:
            if await reader.builds(BuildQuery(pipeline, limit=1)):
                known.add(pipeline)
        except GateReadError as exc:
            refused[pipeline] = exc
    trees: dict[str, Mapping[str, Any] | None] = {}
    for pipeline in _tree_pipelines(rules, known):
        builds = await reader.builds(BuildQuery(pipeline, limit=1))
        trees[pipeline] = (await reader.snapshot(builds[0]["id"]))["document"] if builds else None
    problems = reference_problems(rules, known, trees, refused)
    if problems:
        raise GateRuleError(problems)
