"""Quality-gate rules: an indicator of build status, a comparison, a threshold and an action.

A DAG author writes a rule in one line::

    latest_status("build", IN, ["SUCCEED"], conf={"branch": "main"})
    node_status("build", "unit_tests", EQ, "SUCCEED")
    success_rate("build", ">=", 0.9, last=20, action=WARN)
    duration_p95("build", "<=", "15m", window="7d")
    failed_count("build", "<=", 2, window="1d", action=AUDIT)

and a file or Airflow params hold the same as plain dicts (:func:`parse_rules`).
A rule is checked when it is made; every problem raises :class:`GateRuleError`
naming the rule and the fix. This module imports nothing heavy: DAG files
import it at parse time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from airflow_bkci.gates.errors import GateRuleError, RuleProblem
from airflow_bkci.gates.terms import (
    FINAL_STATUSES,
    MAX_LAST,
    MAX_WINDOW,
    RUN_TYPES,
    Action,
    Comparison,
    Indicator,
    Threshold,
)
from airflow_bkci.gates.values import (
    BadValue,
    as_number,
    did_you_mean,
    format_duration,
    format_threshold,
    parse_duration,
    read_action,
    read_comparison,
    read_conf,
    read_indicator,
    read_last,
    read_pipeline,
    read_run_type,
    read_threshold,
    read_window,
    threshold_json,
)
from airflow_bkci.model.status import BuildStatus

__all__ = [
    "FINAL_STATUSES",
    "MAX_LAST",
    "MAX_WINDOW",
    "RUN_TYPES",
    "Action",
    "Comparison",
    "Indicator",
    "Rule",
    "Threshold",
    "duration_p95",
    "failed_count",
    "format_duration",
    "latest_status",
    "make_rule",
    "node_status",
    "parse_duration",
    "parse_rule",
    "parse_rules",
    "success_rate",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Rule:
    """One rule of a gate, with normalised values; make one with the functions below.

    The filters choose the builds looked at: ``conf`` (every key with that
    value in the run's conf), ``run_type`` (Airflow's, e.g. ``manual``),
    ``window`` (builds due within it, up to now) and ``last`` (the newest N
    finished builds; not for the status indicators, which look at one build).
    """

    indicator: Indicator
    pipeline: str
    comparison: Comparison
    threshold: Threshold
    action: Action = Action.END
    node: str | None = None
    conf: Mapping[str, Any] = field(default_factory=dict, hash=False)
    run_type: str | None = None
    window: timedelta | None = None
    last: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        problems = _consistency(self)
        if problems:
            raise GateRuleError([RuleProblem(p, f, rule=self.label) for p, f in problems])

    @property
    def label(self) -> str:
        """How messages name the rule: indicator, pipeline and node, after its name if any."""
        return _label(self.indicator.value, self.pipeline, self.node, self.name)

    @property
    def expected(self) -> str:
        """The comparison and threshold as people read them: ``>= 90%``, ``in SUCCEED, SKIP``."""
        return f"{self.comparison.symbol} {format_threshold(self.indicator, self.threshold)}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form that :func:`parse_rule` turns back into an equal rule."""
        data: dict[str, Any] = {
            "indicator": self.indicator.value,
            "pipeline": self.pipeline,
            "comparison": self.comparison.value,
            "threshold": threshold_json(self.threshold),
            "action": self.action.value,
        }
        optional = {
            "node": self.node,
            "conf": dict(self.conf) or None,
            "run_type": self.run_type,
            "window": format_duration(self.window) if self.window is not None else None,
            "last": self.last,
            "name": self.name,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data


# ------------------------------------------------------------ making rules
def make_rule(
    indicator: Indicator | str,
    pipeline: str,
    comparison: Comparison | str,
    threshold: Any,
    *,
    node: str | None = None,
    action: Action | str = Action.END,
    conf: Mapping[str, Any] | None = None,
    run_type: str | None = None,
    window: timedelta | float | str | None = None,
    last: int | None = None,
    name: str | None = None,
) -> Rule:
    """A rule from loose values (names or symbols, ``"15m"``, ``"90%"``), checked."""
    raw_indicator = indicator.value if isinstance(indicator, Indicator) else str(indicator)
    found = _Problems(_label(raw_indicator, pipeline, node, name))
    ind = found.take(read_indicator, indicator)
    comp = found.take(read_comparison, comparison)
    value = found.take(read_threshold, ind, comp, threshold) if ind and comp else None
    act = found.take(read_action, action)
    dag_id = found.take(read_pipeline, pipeline)
    match = found.take(read_conf, conf)
    kind = found.take(read_run_type, run_type)
    span = found.take(read_window, window)
    count = found.take(read_last, last)
    found.raise_any()
    assert ind and comp and act and dag_id and value is not None  # raise_any saw to that
    return Rule(
        indicator=ind,
        pipeline=dag_id,
        comparison=comp,
        threshold=value,
        action=act,
        node=node,
        conf=match or {},
        run_type=kind,
        window=span,
        last=count,
        name=name,
    )


def latest_status(
    pipeline: str,
    comparison: Comparison | str,
    statuses: str | BuildStatus | Sequence[str | BuildStatus],
    *,
    action: Action | str = Action.END,
    conf: Mapping[str, Any] | None = None,
    run_type: str | None = None,
    window: timedelta | float | str | None = None,
    name: str | None = None,
) -> Rule:
    """The latest build of ``pipeline`` matching the filters ended in ``statuses``."""
    return make_rule(
        Indicator.LATEST_STATUS,
        pipeline,
        comparison,
        statuses,
        action=action,
        conf=conf,
        run_type=run_type,
        window=window,
        name=name,
    )


def node_status(
    pipeline: str,
    node: str,
    comparison: Comparison | str,
    statuses: str | BuildStatus | Sequence[str | BuildStatus],
    *,
    action: Action | str = Action.END,
    conf: Mapping[str, Any] | None = None,
    run_type: str | None = None,
    window: timedelta | float | str | None = None,
    name: str | None = None,
) -> Rule:
    """A stage (task group id) or task (task id) of that latest build ended in ``statuses``."""
    return make_rule(
        Indicator.NODE_STATUS,
        pipeline,
        comparison,
        statuses,
        node=node,
        action=action,
        conf=conf,
        run_type=run_type,
        window=window,
        name=name,
    )


def success_rate(
    pipeline: str,
    comparison: Comparison | str,
    rate: float | str,
    *,
    last: int | None = None,
    window: timedelta | float | str | None = None,
    action: Action | str = Action.END,
    conf: Mapping[str, Any] | None = None,
    run_type: str | None = None,
    name: str | None = None,
) -> Rule:
    """SUCCEED / finished over the last N finished builds and/or a window; rate 0..1 or "90%"."""
    return make_rule(
        Indicator.SUCCESS_RATE,
        pipeline,
        comparison,
        rate,
        last=last,
        window=window,
        action=action,
        conf=conf,
        run_type=run_type,
        name=name,
    )


def duration_p95(
    pipeline: str,
    comparison: Comparison | str,
    duration: timedelta | float | str,
    *,
    window: timedelta | float | str | None = None,
    last: int | None = None,
    action: Action | str = Action.END,
    conf: Mapping[str, Any] | None = None,
    run_type: str | None = None,
    name: str | None = None,
) -> Rule:
    """p95 of finished builds' durations; seconds, a timedelta or ``"15m"``."""
    return make_rule(
        Indicator.DURATION_P95,
        pipeline,
        comparison,
        duration,
        window=window,
        last=last,
        action=action,
        conf=conf,
        run_type=run_type,
        name=name,
    )


def failed_count(
    pipeline: str,
    comparison: Comparison | str,
    count: int,
    *,
    window: timedelta | float | str | None = None,
    last: int | None = None,
    action: Action | str = Action.END,
    conf: Mapping[str, Any] | None = None,
    run_type: str | None = None,
    name: str | None = None,
) -> Rule:
    """How many finished builds of the window (and/or the last N) ended FAILED."""
    return make_rule(
        Indicator.FAILED_COUNT,
        pipeline,
        comparison,
        count,
        window=window,
        last=last,
        action=action,
        conf=conf,
        run_type=run_type,
        name=name,
    )


# ------------------------------------------------------------ from dicts
_REQUIRED = ("indicator", "pipeline", "comparison", "threshold")
_OPTIONAL = ("node", "action", "conf", "run_type", "window", "last", "name")


def parse_rule(data: Mapping[str, Any], index: int | None = None) -> Rule:
    """A rule from a dict such as ``{"indicator": "success_rate", "pipeline": "build",
    "comparison": "GE", "threshold": 0.9, "last": 20}``; ``index`` names it in errors."""
    try:
        return _parse_rule(data)
    except GateRuleError as exc:
        raise (exc.at(index) if index is not None else exc) from None


def _parse_rule(data: Mapping[str, Any]) -> Rule:
    if not isinstance(data, Mapping):
        raise GateRuleError.one(
            f"{data!r} is not a rule",
            'write a rule as an object: {"indicator": ..., "pipeline": ..., '
            '"comparison": ..., "threshold": ...}',
        )
    label = _label(str(data.get("indicator", "?")), data.get("pipeline", "?"), data.get("node"))
    known = (*_REQUIRED, *_OPTIONAL)
    problems = [
        RuleProblem(
            f"unknown key {key!r}", f"{did_you_mean(str(key), known)}remove it", None, label
        )
        for key in data
        if key not in known
    ]
    missing = [key for key in _REQUIRED if key not in data]
    problems += [
        RuleProblem(f"{key!r} is missing", f"give {key} ({_KEY_HINTS[key]})", None, label)
        for key in missing
    ]
    rule = None
    if not missing:  # the values can be checked too: report everything at once
        try:
            rule = make_rule(**{k: data[k] for k in known if k in data})
        except GateRuleError as exc:
            problems += exc.problems
    if problems or rule is None:
        raise GateRuleError(problems)
    return rule


def parse_rules(data: str | bytes | Iterable[Rule | Mapping[str, Any]]) -> tuple[Rule, ...]:
    """Rules from JSON text or a list of dicts (or rules); every bad rule is reported at once."""
    items: Any = data
    if isinstance(data, str | bytes):
        try:
            items = json.loads(data)
        except ValueError as exc:
            raise GateRuleError.one(f"the rules are not JSON ({exc})", "fix the JSON") from None
        if isinstance(items, Mapping) and "rules" in items:
            items = items["rules"]
    if isinstance(items, Mapping | str) or not isinstance(items, Iterable):
        raise GateRuleError.one(
            "the rules are not a list", 'give a list of rules: [{"indicator": ...}, ...]'
        )
    rules: list[Rule] = []
    problems: list[RuleProblem] = []
    for index, item in enumerate(items):
        try:
            rules.append(item if isinstance(item, Rule) else parse_rule(item, index))
        except GateRuleError as exc:
            problems.extend(exc.at(index).problems)
    if problems:
        raise GateRuleError(problems)
    if not rules:
        raise GateRuleError.one("the gate has no rules", "give at least one rule")
    return tuple(rules)


_KEY_HINTS = {
    "indicator": ", ".join(i.value for i in Indicator),
    "pipeline": "the DAG id whose builds the rule looks at",
    "comparison": ", ".join(c.value for c in Comparison),
    "threshold": "a status, a list of statuses for IN, a rate 0..1, a duration or a count",
}


class _Problems:
    """Collects the problems of one rule, so one error lists them all."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.items: list[RuleProblem] = []

    def take(self, parse: Callable[..., T], *args: Any) -> T | None:
        try:
            return parse(*args)
        except BadValue as bad:
            self.items.append(RuleProblem(bad.problem, bad.fix, rule=self.label))
            return None

    def raise_any(self) -> None:
        if self.items:
            raise GateRuleError(self.items)


# ------------------------------------------------------------ consistency
_NEVER = {
    (Indicator.SUCCESS_RATE, Comparison.LT, 0.0): "can never pass: no rate is below 0",
    (Indicator.SUCCESS_RATE, Comparison.GT, 1.0): "can never pass: no rate is above 1",
    (Indicator.SUCCESS_RATE, Comparison.GE, 0.0): "can never fail: every rate is at least 0",
    (Indicator.SUCCESS_RATE, Comparison.LE, 1.0): "can never fail: every rate is at most 1",
    (Indicator.FAILED_COUNT, Comparison.LT, 0): "can never pass: no count is below 0",
    (Indicator.FAILED_COUNT, Comparison.GE, 0): "can never fail: every count is at least 0",
    (Indicator.DURATION_P95, Comparison.LT, timedelta(0)): "can never pass",
    (Indicator.DURATION_P95, Comparison.GE, timedelta(0)): "can never fail",
}


def _consistency(rule: Rule) -> list[tuple[str, str]]:
    """What is wrong with a rule's combination of values (each value alone is fine)."""
    problems: list[tuple[str, str]] = []
    ind = rule.indicator
    if ind is Indicator.NODE_STATUS and not (isinstance(rule.node, str) and rule.node.strip()):
        problems.append(
            ("node_status names no stage or task", "give node= a task group id or a task id")
        )
    if ind is not Indicator.NODE_STATUS and rule.node is not None:
        problems.append(
            (f"{ind.value} takes no node", "remove node=, or use node_status for a stage/task")
        )
    if ind.is_status and rule.last is not None:
        problems.append(
            (
                f"{ind.value} looks at one build, the latest, so last= does not apply",
                "remove last=, or use success_rate/failed_count over the last N builds",
            )
        )
    if not ind.is_status and rule.window is None and rule.last is None:
        problems.append(
            (
                f"{ind.value} needs the builds to look at",
                "give window= (e.g. '7d') and/or last= (e.g. 20 finished builds)",
            )
        )
    try:
        never = _NEVER.get((ind, rule.comparison, rule.threshold))
    except TypeError:  # an unhashable threshold: the type check below reports it
        never = None
    if never:
        problems.append((f"{rule.expected} {never}", "change the comparison or the threshold"))
    if not _threshold_fits(ind, rule.comparison, rule.threshold):
        problems.append(
            (
                f"threshold {rule.threshold!r} does not suit {ind.value} {rule.comparison.value}",
                "make the rule with make_rule() or parse_rule(), which convert thresholds",
            )
        )
    return problems


def _threshold_fits(indicator: Indicator, comparison: Comparison, value: Any) -> bool:
    if comparison not in indicator.comparisons:
        return False
    if indicator.is_status:
        if comparison is Comparison.IN:
            return isinstance(value, tuple) and all(isinstance(v, BuildStatus) for v in value)
        return isinstance(value, BuildStatus)
    if indicator is Indicator.SUCCESS_RATE:
        return as_number(value) is not None and 0 <= value <= 1
    if indicator is Indicator.DURATION_P95:
        return isinstance(value, timedelta)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# ------------------------------------------------------------ text
def _label(indicator: str, pipeline: Any, node: Any, name: str | None = None) -> str:
    text = f"{indicator} of {pipeline!r}"
    if node is not None:
        text += f" node {node!r}"
    return f"{name!r}, {text}" if name else text
