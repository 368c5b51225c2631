"""Query parameters of the dashboard's data routes that FastAPI cannot check alone."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from fastapi import status

from airflow_bkci.api.errors import problem
from airflow_bkci.conf import MAX_DASHBOARD_WINDOW
from airflow_bkci.dashboard.selection import split_ids
from airflow_bkci.store.dashboard import Bucket

__all__ = ["MAX_BUCKETS", "MAX_NAMED", "check_buckets", "named_pipelines", "window_seconds"]

MAX_NAMED = 200
"""Most pipelines one wall may name."""
MAX_BUCKETS = 1000
"""Most buckets one chart series may have."""
MAX_DAG_ID = 250

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_WINDOW = re.compile(r"(\d{1,12})([smhdw]?)")


def window_seconds(raw: str | None) -> int | None:
    """``window`` as seconds (a number, or one with s, m, h, d or w: ``7d``); None if not given."""
    if raw is None or not raw.strip():
        return None
    found = _WINDOW.fullmatch(raw.strip())
    seconds = int(found[1]) * _UNITS[found[2] or "s"] if found else 0
    if found is None or not 1 <= seconds <= MAX_DASHBOARD_WINDOW:
        raise problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"window={raw[:40]!r} is not a window the wall can show: give seconds (604800) or "
            "a number with s, m, h, d or w (7d), from 1 second to 366 days",
        )
    return seconds


def named_pipelines(values: Sequence[str] | None) -> tuple[str, ...]:
    """``?pipelines=`` (repeated or comma-separated) as DAG ids; 422 for too many or too long."""
    dag_ids = split_ids(values or ())
    too_long = [d for d in dag_ids if len(d) > MAX_DAG_ID]
    problems = [f"pipeline {d[:60]!r}… is longer than {MAX_DAG_ID} characters" for d in too_long]
    if len(dag_ids) > MAX_NAMED:
        problems.append(
            f"{len(dag_ids)} pipelines named; a wall shows at most {MAX_NAMED}: name fewer, "
            "or give them a DAG tag and use ?tag="
        )
    if problems:
        raise problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"bad pipelines: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems,
        )
    return dag_ids


def check_buckets(bucket: Bucket, since: datetime, until: datetime) -> None:
    """422 unless ``since < until``, the window is at most 366 days and has ≤ 1000 buckets."""
    if since >= until:
        raise problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"since={since.isoformat()} is not before until={until.isoformat()}: the time "
            "range is empty; give since < until (since is inclusive, until exclusive)",
        )
    if until - since > timedelta(seconds=MAX_DASHBOARD_WINDOW):
        raise problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the window {since.isoformat()} to {until.isoformat()} is longer than 366 days; "
            "ask for several shorter windows",
        )
    count = len(bucket.starts(since, until))
    if count > MAX_BUCKETS:
        raise problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"bucket={bucket.name} over {since.isoformat()} to {until.isoformat()} makes "
            f"{count} buckets; a series has at most {MAX_BUCKETS}: use bucket=day or a "
            "shorter window",
        )
