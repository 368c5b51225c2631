"""A gate's result as people and XCom read it: a plain-text table with links, and a JSON dict.

Links point at Airflow 3's UI (routes of the 3.3 UI bundle): a run is
``/dags/{dag_id}/runs/{run_id}``, a task ``…/tasks/{task_id}`` (a mapped
instance ``…/tasks/{task_id}/mapped/{map_index}``), a task group
``…/tasks/group/{group_id}``, a DAG's runs ``/dags/{dag_id}/runs``. The base
URL is Airflow's ``[api] base_url``; without one the links are paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_bkci.gates.builds import BuildSummary, NodeHit
from airflow_bkci.gates.evaluate import Decision, GateResult, Outcome, RuleResult
from airflow_bkci.gates.terms import Action
from airflow_bkci.model.tree import UNGROUPED_STAGE
from airflow_bkci.ui_links import group_url, run_url, runs_url, task_url

__all__ = [
    "node_url",
    "pipeline_url",
    "render_report",
    "report_dict",
    "rule_url",
    "run_url",
    "summary_line",
]

MAX_SUMMARY = 500
"""Characters of :func:`summary_line`; the build tree keeps it on the gate's task node."""


def pipeline_url(base_url: str | None, dag_id: str) -> str:
    """The DAG's runs in the UI."""
    return runs_url(base_url, dag_id)


def node_url(base_url: str | None, dag_id: str, run_id: str, node: NodeHit) -> str:
    """The stage, group or task of a build in the UI; the run for the ungrouped stage."""
    if node.kind in ("stage", "group"):
        if node.name == UNGROUPED_STAGE:
            return run_url(base_url, dag_id, run_id)
        return group_url(base_url, dag_id, run_id, node.name)
    task_id = node.task_id or node.name
    if node.kind == "mapped":  # the mapped task as a whole
        return f"{task_url(base_url, dag_id, run_id, task_id)}/mapped"
    index = -1 if node.map_index is None else node.map_index
    return task_url(base_url, dag_id, run_id, task_id, index)


def rule_url(base_url: str | None, result: RuleResult) -> str:
    """Where to look for a rule: its node, else its build, else the pipeline's runs."""
    build = result.build
    if build is None:
        return pipeline_url(base_url, result.rule.pipeline)
    if result.node is not None:
        return node_url(base_url, build["pipeline_id"], build["run_id"], result.node)
    return run_url(base_url, build["pipeline_id"], build["run_id"])


def _names(results: Sequence[RuleResult]) -> str:
    return ", ".join(f"rules[{r.index}]" for r in results)


def headline(result: GateResult) -> str:
    """One line: the decision and the rules that made it."""
    total = len(result.results)
    decision = result.decision
    if decision is Decision.FAIL:
        text = f"Quality gate failed: {len(result.failures)} of {total} rules failed the gate"
        text += f" ({_names(result.failures)})"
        others = result.audits + result.warnings
        if others:
            text += "; also failed: " + ", ".join(
                f"rules[{r.index}] ({r.rule.action.value})" for r in others
            )
    elif decision is Decision.WAIT:
        builds = ", ".join(
            f"#{b['build_num']} of {b['pipeline_id']!r} ({b['run_id']})" for b in result.waiting_on
        )
        text = f"Quality gate waiting for {builds or 'builds to end'}"
    elif decision is Decision.AUDIT:
        text = (
            f"Quality gate needs approval: {len(result.audits)} of {total} AUDIT rules failed "
            f"({_names(result.audits)})"
        )
    else:
        text = f"Quality gate passed: {total - len(result.warnings)} of {total} rules held"
    if result.warnings and decision is not Decision.FAIL:
        text += f"; warnings: {_names(result.warnings)}"
    return text


def summary_line(result: GateResult) -> str:
    """One line for the build tree: ``2/3 rules passed; failed: <rule> <expected> (actual …)``.

    Failures are named with their action when it is not END, so a reader of the
    stream tells a blocking rule from an approval or a warning.
    """
    total = len(result.results)
    held = sum(1 for r in result.results if r.outcome is Outcome.PASSED)
    parts = [f"{held}/{total} rules passed"]
    failed = [r for r in result.results if r.counts_as_failed or r.outcome is Outcome.ERROR]
    if failed:
        parts.append("failed: " + "; ".join(_failed_text(r) for r in failed))
    if result.pending:
        parts.append("waiting for " + ", ".join(_waiting_text(b) for b in result.waiting_on))
    text = "; ".join(parts)
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


def _failed_text(r: RuleResult) -> str:
    action = (
        ""
        if r.rule.action is Action.END or r.outcome is Outcome.ERROR
        else f" [{r.rule.action.value}]"
    )
    return f"{r.rule.label} {r.expected} (actual {r.actual}){action}"


def _waiting_text(build: BuildSummary) -> str:
    return f"#{build['build_num']} of {build['pipeline_id']!r}"


_COLUMNS = ("rule", "indicator", "expected", "actual", "outcome", "action")


def _row(r: RuleResult) -> tuple[str, ...]:
    return (
        f"rules[{r.index}]",
        r.rule.label,
        r.expected,
        r.actual,
        r.outcome.value.upper(),
        r.rule.action.value,
    )


def render_report(result: GateResult, base_url: str | None = None) -> str:
    """The headline, then every rule as a row, each followed by why (if any) and a link."""
    rows = [_COLUMNS, *(_row(r) for r in result.results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [headline(result), ""]
    for number, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if number == 0:
            continue
        r = result.results[number - 1]
        indent = " " * (widths[0] + 2)
        if r.reason:
            lines.append(f"{indent}why:  {r.reason}")
        lines.append(f"{indent}link: {rule_url(base_url, r)}")
    return "\n".join(lines)


def report_dict(result: GateResult, base_url: str | None = None) -> dict[str, Any]:
    """The result as JSON-able data (for XCom): decision, headline, every rule, builds waited on."""
    return {
        "decision": result.decision.value,
        "quality_check": result.decision.quality_check,
        "headline": headline(result),
        "checked_at": result.checked_at.isoformat(),
        "rules": [_rule_dict(r, base_url) for r in result.results],
        "waiting_on": [
            {
                "build_id": b["id"],
                "pipeline_id": b["pipeline_id"],
                "run_id": b["run_id"],
                "build_num": b["build_num"],
                "status": b["status"],
                "url": run_url(base_url, b["pipeline_id"], b["run_id"]),
            }
            for b in result.waiting_on
        ],
    }


def _rule_dict(r: RuleResult, base_url: str | None) -> dict[str, Any]:
    build = r.build
    return {
        "index": r.index,
        "label": r.rule.label,
        "rule": r.rule.to_dict(),
        "outcome": r.outcome.value,
        "action": r.rule.action.value,
        "expected": r.expected,
        "actual": r.actual,
        "reason": r.reason,
        "build_id": build["id"] if build else None,
        "run_id": build["run_id"] if build else None,
        "build_num": build["build_num"] if build else None,
        "node": r.node.name if r.node else None,
        "url": rule_url(base_url, r),
    }
