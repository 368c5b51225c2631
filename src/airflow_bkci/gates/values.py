"""Reading what rule authors write (names, symbols, "90%", "15m", statuses) and writing it back.

Each reader returns the normalised value or raises :class:`BadValue` with the
problem and its fix; :mod:`airflow_bkci.gates.rules` collects them per rule.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

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
from airflow_bkci.model.status import BuildStatus

__all__ = [
    "BadValue",
    "as_number",
    "did_you_mean",
    "format_duration",
    "format_rate",
    "format_threshold",
    "parse_duration",
    "read_action",
    "read_comparison",
    "read_conf",
    "read_indicator",
    "read_last",
    "read_pipeline",
    "read_run_type",
    "read_threshold",
    "read_window",
    "threshold_json",
]

_DAG_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_DURATION = re.compile(
    r"^\s*(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m)?"
    r"\s*(?:(?P<s>\d+(?:\.\d+)?)\s*s)?\s*$"
)
# Airflow's names for what BK-CI calls otherwise: people write the ones they know.
_AIRFLOW_STATES = {
    "SUCCESS": BuildStatus.SUCCEED,
    "SKIPPED": BuildStatus.SKIP,
    "UPSTREAM_FAILED": BuildStatus.UNEXEC,
    "CANCELLED": BuildStatus.CANCELED,
    "QUEUED": BuildStatus.QUEUE,
    "UP_FOR_RETRY": BuildStatus.RETRY,
}
_BY_SYMBOL = {"=": Comparison.EQ, **{c.symbol: c for c in Comparison}}


class BadValue(Exception):
    """A value a rule cannot use; never escapes the package (rules make it a RuleProblem)."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix


def did_you_mean(word: str, choices: Iterable[str], then: str = "or ") -> str:
    """``did you mean 'x'? or `` for the closest of ``choices``, else nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? {then}" if close else ""


def _one_of(value: Any, what: str, choices: Sequence[str]) -> BadValue:
    hint = did_you_mean(str(value), choices) if isinstance(value, str) else ""
    return BadValue(f"{value!r} is not {what}", f"{hint}use one of {', '.join(choices)}")


def read_indicator(value: Any) -> Indicator:
    if isinstance(value, Indicator):
        return value
    names = [i.value for i in Indicator]
    if isinstance(value, str) and value.strip().lower() in names:
        return Indicator(value.strip().lower())
    raise _one_of(value, "a known indicator", names)


def read_comparison(value: Any) -> Comparison:
    if isinstance(value, Comparison):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.upper() in Comparison.__members__:
            return Comparison[text.upper()]
        if text.lower() in _BY_SYMBOL:
            return _BY_SYMBOL[text.lower()]
    raise _one_of(value, "a comparison", [*Comparison.__members__, "<", "<=", "==", ">=", ">"])


def read_action(value: Any) -> Action:
    if isinstance(value, Action):
        return value
    if isinstance(value, str) and value.strip().upper() in Action.__members__:
        return Action[value.strip().upper()]
    raise _one_of(value, "an action", list(Action.__members__))


def read_pipeline(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadValue(
            f"pipeline {value!r} is empty or not a string", "give the DAG id whose builds to check"
        )
    if not _DAG_ID.match(value):
        raise BadValue(
            f"pipeline {value!r} is not a DAG id",
            "give the DAG id itself (letters, digits, '_', '.', '-'); rules are checked when "
            "the DAG file is parsed, so they cannot be Jinja templates",
        )
    return value


def _status(value: Any) -> BuildStatus:
    if isinstance(value, BuildStatus):
        status = value
    elif isinstance(value, str) and value.strip().upper() in BuildStatus.__members__:
        status = BuildStatus[value.strip().upper()]
    elif isinstance(value, str) and value.strip().upper() in _AIRFLOW_STATES:
        named = _AIRFLOW_STATES[value.strip().upper()]
        raise BadValue(
            f"{value!r} is Airflow's name, not a BK-CI status", f"write {named.value!r} instead"
        )
    else:
        hint = did_you_mean(str(value).upper(), list(BuildStatus.__members__))
        raise BadValue(
            f"{value!r} is not a BK-CI status",
            f"{hint}use one of {', '.join(s.value for s in FINAL_STATUSES)}",
        )
    if status not in FINAL_STATUSES:
        raise BadValue(
            f"{status.value} is not a status a build or task ends in; the gate waits while the "
            "build runs",
            f"compare with final statuses: {', '.join(s.value for s in FINAL_STATUSES)}",
        )
    return status


def _statuses(comparison: Comparison, value: Any) -> BuildStatus | tuple[BuildStatus, ...]:
    many = isinstance(value, list | tuple | set | frozenset)
    if comparison is Comparison.EQ:
        if many:
            raise BadValue(
                "EQ takes one status, not a list",
                f"to allow several write IN {_json_list(value)}; for one write EQ 'SUCCEED'",
            )
        return _status(value)
    if not many:
        raise BadValue("IN takes a list of statuses", f"write IN [{json.dumps(str(value))}]")
    if not value:
        raise BadValue("IN has an empty list", "name at least one status, e.g. IN ['SUCCEED']")
    errors: list[str] = []
    found: list[BuildStatus] = []
    for item in value:
        try:
            found.append(_status(item))
        except BadValue as bad:
            errors.append(f"{bad.problem} ({bad.fix})")
    if errors:
        raise BadValue("; ".join(errors), "use BK-CI status names")
    return tuple(dict.fromkeys(found))


def _json_list(value: Iterable[Any]) -> str:
    return json.dumps([str(v.value if isinstance(v, BuildStatus) else v) for v in value])


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _rate(value: Any) -> float:
    rate = as_number(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            rate = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            rate = None
    if rate is None:
        raise BadValue(f"{value!r} is not a rate", "give a fraction between 0 and 1, e.g. 0.9")
    if not 0 <= rate <= 1:
        fix = f"write {rate / 100:g} or '{rate:g}%'" if 1 < rate <= 100 else "give 0..1"
        raise BadValue(f"rate {value!r} is not between 0 and 1", fix)
    return rate


def _count(value: Any) -> int:
    number = as_number(value)
    if number is None or not number.is_integer():
        raise BadValue(f"{value!r} is not a whole number of builds", "give a count such as 0 or 3")
    if number < 0:
        raise BadValue(f"count {value!r} is negative", "give 0 or more")
    return int(number)


def parse_duration(value: Any, what: str = "duration") -> timedelta:
    """Seconds, a timedelta, or text such as ``"90s"``, ``"15m"``, ``"1h30m"``, ``"7d"``."""
    if isinstance(value, timedelta):
        return value
    seconds = as_number(value)
    if seconds is None and isinstance(value, str):
        match = _DURATION.match(value)
        if match and any(match.groupdict().values()):
            parts = {k: float(v) for k, v in match.groupdict().items() if v}
            seconds = (
                parts.get("d", 0) * 86400
                + parts.get("h", 0) * 3600
                + parts.get("m", 0) * 60
                + parts.get("s", 0)
            )
        else:
            try:
                seconds = float(value)
            except ValueError:
                seconds = None
    if seconds is None or not math.isfinite(seconds):
        raise BadValue(
            f"{what} {value!r} is not a duration",
            "give seconds, a timedelta, or text such as '90s', '15m', '1h30m', '7d'",
        )
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """``1d2h3m4.5s``; :func:`parse_duration` reads it back to the microsecond."""
    if value < timedelta(0):
        return "-" + format_duration(-value)
    days, rest = value.days, value - timedelta(days=value.days)
    hours, rest_s = divmod(rest.total_seconds(), 3600)
    minutes, seconds = divmod(rest_s, 60)
    text = "".join(
        f"{int(n)}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n
    )
    secs = f"{round(seconds, 6):.6f}".rstrip("0").rstrip(".")
    if secs != "0" or not text:
        text += f"{secs}s"
    return text


def _duration_threshold(value: Any) -> timedelta:
    duration = parse_duration(value)
    if duration < timedelta(0):
        raise BadValue(f"duration {value!r} is negative", "give 0 or more")
    return duration


def read_threshold(indicator: Indicator, comparison: Comparison, value: Any) -> Threshold:
    if comparison not in indicator.comparisons:
        allowed = ", ".join(c.value for c in indicator.comparisons)
        why = "a status has no order" if indicator.is_status else "IN compares statuses"
        raise BadValue(f"{comparison.value} does not apply to {indicator.value} ({why})", allowed)
    if indicator.is_status:
        return _statuses(comparison, value)
    if indicator is Indicator.SUCCESS_RATE:
        return _rate(value)
    if indicator is Indicator.DURATION_P95:
        return _duration_threshold(value)
    return _count(value)


_CONF_KEY = re.compile(r"[A-Za-z0-9_.-]{1,100}")
MAX_CONF_KEYS = 10
"""Most conf keys one rule matches: the query API's limit on conf filters."""
MAX_CONF_TEXT = 1000
"""Longest conf value the query API matches."""


def read_conf(value: Any) -> dict[str, Any] | None:
    """A conf filter the query API can apply: top-level keys, scalar values."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise BadValue(f"conf {value!r} is not a mapping of names", 'give e.g. {"branch": "main"}')
    for key, item in value.items():
        if not _CONF_KEY.fullmatch(key):
            raise BadValue(
                f"conf key {key!r} is not one the query API filters on",
                "name a top-level key of the run's conf: 1-100 of A-Z a-z 0-9 _ . -",
            )
        if not _matchable(item):
            raise BadValue(
                f"conf {key}={item!r} cannot be matched (not a string, number or boolean)",
                "match strings (up to 1000 characters), numbers or booleans; lists, objects "
                "and null cannot be filtered on",
            )
    if len(value) > MAX_CONF_KEYS:
        raise BadValue(
            f"conf names {len(value)} keys", f"match at most {MAX_CONF_KEYS}, the telling ones"
        )
    return dict(value)


def _matchable(item: Any) -> bool:
    if isinstance(item, str):
        return len(item) <= MAX_CONF_TEXT
    if isinstance(item, float):
        return math.isfinite(item)
    return isinstance(item, int)  # bool is an int


def read_run_type(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in RUN_TYPES:
        return value.strip().lower()
    raise _one_of(value, "a run type", RUN_TYPES)


def read_window(value: Any) -> timedelta | None:
    if value is None:
        return None
    window = parse_duration(value, "window")
    if not timedelta(0) < window <= MAX_WINDOW:
        raise BadValue(
            f"window {value!r} is not between 0 and {MAX_WINDOW.days} days",
            "give a positive window of at most a year, e.g. '7d' or timedelta(hours=12)",
        )
    return window


def read_last(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LAST:
        raise BadValue(
            f"last={value!r} is not a number of builds from 1 to {MAX_LAST}",
            "give the number of newest finished builds to look at, e.g. last=20",
        )
    return value


def format_rate(value: float) -> str:
    return f"{value * 100:.4g}%"


def format_threshold(indicator: Indicator, value: Threshold) -> str:
    if isinstance(value, tuple):
        return ", ".join(s.value for s in value)
    if isinstance(value, BuildStatus):
        return value.value
    if isinstance(value, timedelta):
        return format_duration(value)
    if indicator is Indicator.SUCCESS_RATE:
        return format_rate(float(value))
    return str(value)


def threshold_json(value: Threshold) -> Any:
    if isinstance(value, tuple):
        return [s.value for s in value]
    if isinstance(value, BuildStatus):
        return value.value
    if isinstance(value, timedelta):
        return format_duration(value)
    return value
