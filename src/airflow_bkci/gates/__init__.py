"""Quality gates: rules over build status, their evaluation, and the report of a gate's result.

    from airflow_bkci.gates import GE, IN, WARN, latest_status, success_rate

    rules = [
        latest_status("build", IN, ["SUCCEED"], conf={"branch": "main"}),
        success_rate("build", GE, 0.9, last=20, action=WARN),
    ]

The REST reader lives in :mod:`airflow_bkci.gates.reader` and is not imported
here: a DAG file that writes rules stays light at parse time (no httpx).
"""

from airflow_bkci.gates.builds import (
    AsyncBuildReader,
    BuildQuery,
    BuildReader,
    BuildSummary,
    NodeHit,
    Snapshot,
)
from airflow_bkci.gates.errors import (
    BuildNotFound,
    GateConnectionError,
    GateError,
    GateReadError,
    GateRuleError,
    PipelineAccessDenied,
    PipelineNotFound,
    ReadUnavailable,
    RuleProblem,
)
from airflow_bkci.gates.evaluate import (
    Decision,
    GateResult,
    Outcome,
    RuleResult,
    evaluate,
    evaluate_async,
    stop_waiting,
)
from airflow_bkci.gates.references import check_references, check_references_async
from airflow_bkci.gates.report import render_report, report_dict, run_url, summary_line
from airflow_bkci.gates.rules import (
    Action,
    Comparison,
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
from airflow_bkci.gates.serde import result_from_json, result_to_json

LT, LE, EQ, GE, GT, IN = (
    Comparison.LT,
    Comparison.LE,
    Comparison.EQ,
    Comparison.GE,
    Comparison.GT,
    Comparison.IN,
)
END, AUDIT, WARN = Action.END, Action.AUDIT, Action.WARN

__all__ = [
    "AUDIT",
    "END",
    "EQ",
    "GE",
    "GT",
    "IN",
    "LE",
    "LT",
    "WARN",
    "Action",
    "AsyncBuildReader",
    "BuildNotFound",
    "BuildQuery",
    "BuildReader",
    "BuildSummary",
    "Comparison",
    "Decision",
    "GateConnectionError",
    "GateError",
    "GateReadError",
    "GateResult",
    "GateRuleError",
    "Indicator",
    "NodeHit",
    "Outcome",
    "PipelineAccessDenied",
    "PipelineNotFound",
    "ReadUnavailable",
    "Rule",
    "RuleProblem",
    "RuleResult",
    "Snapshot",
    "check_references",
    "check_references_async",
    "duration_p95",
    "evaluate",
    "evaluate_async",
    "failed_count",
    "latest_status",
    "make_rule",
    "node_status",
    "parse_rule",
    "parse_rules",
    "render_report",
    "report_dict",
    "result_from_json",
    "result_to_json",
    "run_url",
    "stop_waiting",
    "success_rate",
    "summary_line",
]
