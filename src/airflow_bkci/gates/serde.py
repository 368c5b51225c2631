"""A gate's result as plain JSON and back, so it survives a deferral, an approval wait and XCom.

A deferred gate's trigger judges the builds in the triggerer and the task resumes
on a worker; the result travels in the trigger event (and in the task's
``next_kwargs`` while a person is asked), which hold only JSON values.
:func:`result_from_json` gives back an equal :class:`GateResult`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from airflow_bkci.gates.builds import BuildSummary, NodeHit
from airflow_bkci.gates.evaluate import GateResult, Outcome, RuleResult
from airflow_bkci.gates.rules import parse_rule
from airflow_bkci.model.status import BuildStatus

__all__ = ["FORMAT", "result_from_json", "result_to_json"]

FORMAT = 1
"""Bumped when the shape changes; a task resumed by a newer trigger reads what it knows."""


def result_to_json(result: GateResult) -> dict[str, Any]:
    """Only str, int, float, bool, None, lists and dicts: what a trigger event may carry."""
    return {
        "format": FORMAT,
        "checked_at": result.checked_at.isoformat(),
        "results": [_rule_result(r) for r in result.results],
    }


def _rule_result(r: RuleResult) -> dict[str, Any]:
    node = r.node
    return {
        "index": r.index,
        "rule": r.rule.to_dict(),
        "outcome": r.outcome.value,
        "expected": r.expected,
        "actual": r.actual,
        "build": dict(r.build) if r.build is not None else None,
        "node": None
        if node is None
        else {
            "name": node.name,
            "kind": node.kind,
            "status": node.status.value,
            "task_id": node.task_id,
            "map_index": node.map_index,
        },
        "reason": r.reason,
    }


def result_from_json(data: Mapping[str, Any]) -> GateResult:
    """The :class:`GateResult` :func:`result_to_json` was given."""
    return GateResult(
        tuple(_read_rule_result(item) for item in data["results"]),
        datetime.fromisoformat(data["checked_at"]),
    )


def _read_rule_result(item: Mapping[str, Any]) -> RuleResult:
    node = item.get("node")
    return RuleResult(
        index=int(item["index"]),
        rule=parse_rule(item["rule"]),
        outcome=Outcome(item["outcome"]),
        expected=str(item["expected"]),
        actual=str(item["actual"]),
        build=cast(BuildSummary, dict(item["build"])) if item.get("build") else None,
        node=None
        if not node
        else NodeHit(
            name=node["name"],
            kind=node["kind"],
            status=BuildStatus(node["status"]),
            task_id=node.get("task_id"),
            map_index=node.get("map_index"),
        ),
        reason=item.get("reason"),
    )
