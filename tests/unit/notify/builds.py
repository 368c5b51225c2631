"""Build documents for the notification tests, made the way the store makes them.

Each node is one status event applied through the real state machine and
rendered by the real :func:`build_document`, so the tests read the same shape
users get. Airflow states map as in ``model/mapping.py`` (checked by
``test_root_cause.py``), without importing Airflow here.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_bkci.model.event import NodeRef, StatusEvent, build_id_for
from airflow_bkci.model.fsm import NodeState, apply
from airflow_bkci.model.status import BuildStatus, Rank
from airflow_bkci.model.tree import build_document

S = BuildStatus
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=timezone.utc)
DAG = "etl_daily"
BASE_URL = "https://airflow.example.com"
_seq = itertools.count(1)

TASK_STATES: dict[str | None, tuple[BuildStatus, Rank, str | None]] = {
    None: (S.QUEUE, Rank.PENDING, "pending"),
    "scheduled": (S.QUEUE, Rank.SCHEDULED, None),
    "queued": (S.PREPARE_ENV, Rank.QUEUED, None),
    "running": (S.RUNNING, Rank.RUNNING, None),
    "up_for_retry": (S.RETRY, Rank.FINISHED, None),
    "success": (S.SUCCEED, Rank.FINISHED, None),
    "failed": (S.FAILED, Rank.FINISHED, None),
    "skipped": (S.SKIP, Rank.FINISHED, None),
    "upstream_failed": (S.UNEXEC, Rank.FINISHED, "upstream_failed"),
}
RUN_STATES: dict[str, tuple[BuildStatus, Rank, str | None]] = {
    "queued": (S.QUEUE, Rank.SCHEDULED, None),
    "running": (S.RUNNING, Rank.RUNNING, None),
    "success": (S.SUCCEED, Rank.FINISHED, None),
    "failed": (S.FAILED, Rank.FINISHED, None),
    "canceled": (S.CANCELED, Rank.CANCELED, "canceled"),  # our cancel marker
}


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def _node(
    ref: NodeRef,
    mapped: tuple[BuildStatus, Rank, str | None],
    state: str | None,
    *,
    try_number: int,
    clear_number: int,
    moment: datetime,
    fields: dict[str, Any],
) -> NodeState:
    status, rank, detail = mapped
    if rank is Rank.CANCELED:
        state = "failed"  # Airflow's own row says failed; the cancel marker says why
    event = StatusEvent(
        node=ref,
        status=status,
        clear_number=clear_number,
        try_number=try_number,
        source="db@scheduler",
        seq=next(_seq),
        at=moment,
        airflow_state=state,
        detail=detail,
        rank=rank,
        fields={k: v for k, v in fields.items() if v is not None},
    )
    node, _ = apply(None, event)
    assert node is not None
    return node


def task(
    task_id: str,
    state: str | None,
    *,
    ended: float | None = 5,
    started: float | None = None,
    try_number: int = 1,
    max_tries: int | None = 0,
    map_index: int = -1,
    error: str | None = None,
    stage: str | None = None,
    stage_name: str | None = None,
    order: int = 0,
    run_id: str = "run",
    label: str | None = None,
) -> tuple[str, NodeState]:
    """One task instance in Airflow ``state``; times are minutes after :data:`T0`."""
    ref = NodeRef(DAG, run_id, task_id, map_index)
    finished = TASK_STATES[state][1].is_final
    fields = {
        "task_id": task_id,
        "map_index": map_index,
        "started_at": at(started if started is not None else 0).isoformat(),
        "ended_at": at(ended).isoformat() if finished and ended is not None else None,
        "error": error,
        "max_tries": max_tries,
        "stage": stage,
        "stage_name": stage_name,
        "order": order,
        "operator": "PythonOperator",
        "label": label,
    }
    node = _node(
        ref,
        TASK_STATES[state],
        state,
        try_number=try_number,
        clear_number=0,
        moment=at(ended or 0),
        fields=fields,
    )
    return ref.node_id, node


def document(
    *tasks: tuple[str, NodeState],
    state: str = "failed",
    dag_id: str = DAG,
    run_id: str = "scheduled__2025-03-01T10:00:00+00:00",
    build_num: int | None = 42,
    clear_number: int = 0,
    ended: float | None = 10,
    **build_fields: Any,
) -> dict[str, Any]:
    """A build document: the run in Airflow ``state`` (or ``canceled``) with ``tasks``."""
    mapped = RUN_STATES[state]
    fields = {
        "run_type": "scheduled",
        "trigger_type": "timetable",
        "started_at": T0.isoformat(),
        "ended_at": at(ended).isoformat() if mapped[1].is_final and ended is not None else None,
        **build_fields,
    }
    build = _node(
        NodeRef(dag_id, run_id),
        mapped,
        state,
        try_number=0,
        clear_number=clear_number,
        moment=at(ended or 0),
        fields=fields,
    )
    return build_document(
        build_id_for(dag_id, run_id), dag_id, run_id, build_num, build, dict(tasks)
    )


def failed_build(
    number: int, *, minute: float, error: str = "ValueError: bad row"
) -> dict[str, Any]:
    """Build ``number`` of the pipeline, failed by its ``load`` task at ``minute``."""
    run_id = f"scheduled__{at(minute).isoformat()}"
    return document(
        task("extract", "success", ended=minute - 0.5, run_id=run_id),
        task("load", "failed", ended=minute, error=error, run_id=run_id),
        task("report", "upstream_failed", ended=minute, run_id=run_id),
        run_id=run_id,
        build_num=number,
        ended=minute + 0.1,
    )


def good_build(number: int, *, minute: float) -> dict[str, Any]:
    run_id = f"scheduled__{at(minute).isoformat()}"
    return document(
        task("extract", "success", ended=minute - 0.5, run_id=run_id),
        task("load", "success", ended=minute, run_id=run_id),
        state="success",
        run_id=run_id,
        build_num=number,
        ended=minute + 0.1,
    )
