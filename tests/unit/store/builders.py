"""Small builders for status events in store tests."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_bkci.model import BuildStatus, NodeRef, Rank, StatusEvent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
DAG = "etl"

_seq = itertools.count(1)


def event(
    status: BuildStatus | None,
    task: str | None = "extract",
    *,
    run: str = "run-1",
    dag: str = DAG,
    try_number: int = 1,
    clear: int = 0,
    at: float = 0.0,
    source: str = "scheduler",
    seq: int | None = None,
    detail: str | None = None,
    rank: Rank | None = None,
    removed: bool = False,
    map_index: int = -1,
    **fields: Any,
) -> StatusEvent:
    """One event; ``at`` is seconds after :data:`T0`."""
    return StatusEvent(
        node=NodeRef(dag, run, task, map_index),
        status=status,
        clear_number=clear,
        try_number=try_number,
        source=source,
        seq=next(_seq) if seq is None else seq,
        at=T0 + timedelta(seconds=at),
        airflow_state=status.value.lower() if status else None,
        detail=detail,
        rank=rank,
        removed=removed,
        fields=fields,
    )


def build_event(status: BuildStatus | None, *, run: str = "run-1", **kw: Any) -> StatusEvent:
    return event(status, None, run=run, **kw)


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()
