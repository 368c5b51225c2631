"""The words of quality-gate rules: indicators, comparisons, actions, and the statuses they use."""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from airflow_bkci.model.status import BuildStatus

__all__ = [
    "FINAL_STATUSES",
    "MAX_LAST",
    "MAX_WINDOW",
    "RUN_TYPES",
    "Action",
    "Comparison",
    "Indicator",
    "Threshold",
]

FINAL_STATUSES = tuple(s for s in BuildStatus if s.is_finished and s is not BuildStatus.RETRY)
"""Statuses a build or node ends in; RETRY ends a try, and another try follows."""

RUN_TYPES = (
    "backfill",
    "scheduled",
    "manual",
    "operator_triggered",
    "asset_triggered",
    "asset_materialization",
)
"""Airflow's ``DagRunType`` values (a test keeps them equal to Airflow's enum)."""

MAX_WINDOW = timedelta(days=366)
"""As the query API's metrics: a gate over more than a year reads too many builds."""

MAX_LAST = 1000
"""The most builds ``last=`` may name; two pages of the query API's longest list."""


class Comparison(str, enum.Enum):
    """How an indicator's actual value is compared with the rule's threshold."""

    LT = "LT"
    LE = "LE"
    EQ = "EQ"
    GE = "GE"
    GT = "GT"
    IN = "IN"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    def holds(self, actual: Any, threshold: Any) -> bool:
        """True when ``actual <comparison> threshold``; IN means ``actual in threshold``."""
        if self is Comparison.IN:
            return bool(actual in threshold)
        return bool(_COMPARE[self](actual, threshold))


_SYMBOLS = {
    Comparison.LT: "<",
    Comparison.LE: "<=",
    Comparison.EQ: "==",
    Comparison.GE: ">=",
    Comparison.GT: ">",
    Comparison.IN: "in",
}
_COMPARE: dict[Comparison, Callable[[Any, Any], bool]] = {
    Comparison.LT: lambda a, t: a < t,
    Comparison.LE: lambda a, t: a <= t,
    Comparison.EQ: lambda a, t: a == t,
    Comparison.GE: lambda a, t: a >= t,
    Comparison.GT: lambda a, t: a > t,
}


class Action(str, enum.Enum):
    """What a failed rule does to the gate."""

    END = "END"
    """Fail the gate task."""
    AUDIT = "AUDIT"
    """Wait for a person to approve or reject."""
    WARN = "WARN"
    """Pass, and record the failure as a warning."""


class Indicator(str, enum.Enum):
    """What a rule measures, over the builds of one pipeline (a DAG)."""

    LATEST_STATUS = "latest_status"
    """The status of the latest build that matches the filters."""
    NODE_STATUS = "node_status"
    """The status of a stage (task group) or task of that latest build."""
    SUCCESS_RATE = "success_rate"
    """SUCCEED / finished builds, 0..1 (a canceled build counts as not successful)."""
    DURATION_P95 = "duration_p95"
    """Nearest-rank 95th percentile of finished builds' durations."""
    FAILED_COUNT = "failed_count"
    """How many finished builds ended FAILED."""

    @property
    def is_status(self) -> bool:
        return self in (Indicator.LATEST_STATUS, Indicator.NODE_STATUS)

    @property
    def comparisons(self) -> tuple[Comparison, ...]:
        if self.is_status:
            return (Comparison.EQ, Comparison.IN)
        return (Comparison.LT, Comparison.LE, Comparison.EQ, Comparison.GE, Comparison.GT)


Threshold = BuildStatus | tuple[BuildStatus, ...] | float | int | timedelta
"""A status (EQ), statuses (IN), a rate 0..1, a duration, or a count, by indicator."""
