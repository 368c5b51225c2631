"""Builds written into a real status store, as the collectors write them.

Each task and the run are one status event applied by :meth:`Store.apply`,
with Airflow states mapped as in :mod:`tests.unit.notify.builds`, so the
documents the dispatcher hands the notification channel are the real thing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from airflow_bkci.channels.envelope import snapshot_event
from airflow_bkci.model.event import NodeRef, StatusEvent, build_id_for
from airflow_bkci.store import Store
from tests.unit.notify.builds import DAG, RUN_STATES, T0, TASK_STATES

_seq = itertools.count(1_000_000)


@dataclass(frozen=True)
class Task:
    """One task instance; ``ended`` is minutes after the build's start."""

    task_id: str
    state: str | None
    error: str | None = None
    try_number: int = 1
    max_tries: int = 0
    ended: float = 5.0


def store_build(
    store: Store,
    *tasks: Task,
    state: str = "failed",
    dag_id: str = DAG,
    run_id: str = "run-1",
    start: datetime = T0,
    ended: float | None = 10.0,
    clear: int = 0,
    **build_fields: Any,
) -> str:
    """Write the run in Airflow ``state`` with ``tasks``; its build id."""
    events = []
    for order, task in enumerate(tasks):
        status, rank, detail = TASK_STATES[task.state]
        end = start + timedelta(minutes=task.ended)
        fields = {
            "task_id": task.task_id,
            "map_index": -1,
            "order": order,
            "started_at": start.isoformat(),
            "ended_at": end.isoformat() if rank.is_final else None,
            "error": task.error,
            "max_tries": task.max_tries,
            "operator": "PythonOperator",
        }
        events.append(
            _event(
                NodeRef(dag_id, run_id, task.task_id),
                status,
                rank,
                detail,
                task.state,
                end,
                try_number=task.try_number,
                clear=clear,
                fields=fields,
            )
        )
    status, rank, detail = RUN_STATES[state]
    end = start + timedelta(minutes=ended or 0)
    fields = {
        "run_type": "manual",
        "trigger_type": "manual",
        "started_at": start.isoformat(),
        "ended_at": end.isoformat() if rank.is_final and ended is not None else None,
        **build_fields,
    }
    airflow_state = "failed" if state == "canceled" else state
    events.append(
        _event(
            NodeRef(dag_id, run_id),
            status,
            rank,
            detail,
            airflow_state,
            end,
            try_number=0,
            clear=clear,
            fields=fields,
        )
    )
    result = store.apply(events)
    assert result.rejected == [], result.rejected
    return build_id_for(dag_id, run_id)


def _event(
    ref: NodeRef,
    status: Any,
    rank: Any,
    detail: str | None,
    airflow_state: str | None,
    at: datetime,
    *,
    try_number: int,
    clear: int,
    fields: dict[str, Any],
) -> StatusEvent:
    return StatusEvent(
        node=ref,
        status=status,
        clear_number=clear,
        try_number=try_number,
        source="db@scheduler",
        seq=next(_seq),
        at=at,
        airflow_state=airflow_state,
        detail=detail,
        rank=rank,
        fields={k: v for k, v in fields.items() if v is not None},
    )


def snapshot_of(store: Store, build_id: str) -> dict[str, Any]:
    """The snapshot event the dispatcher would hand a channel for this build now."""
    snap = store.snapshot(build_id)
    assert snap is not None
    return snapshot_event(
        source="/test",
        pipeline_id=snap["pipeline_id"],
        build_id=build_id,
        sequence=snap["sequence"],
        document=snap["document"],
        time=T0,
    )
