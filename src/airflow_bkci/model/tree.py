"""The build tree: build -> stages -> tasks, as the JSON document users see.

Children are objects keyed by id, never arrays, so JSON Patch paths such as
``/stages/<stage>/tasks/<task>/status`` stay stable as the tree grows.

Stages are the top-level task groups of the DAG, in DAG order. Tasks outside
any group go to one stage, :data:`UNGROUPED_STAGE`, placed where its first
task stands in the DAG.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from airflow_bkci.model.fsm import NodeState
from airflow_bkci.model.status import BuildStatus

S = BuildStatus
UNGROUPED_STAGE = "__ungrouped__"

_TASK_FIELDS = (
    "operator",
    "label",
    "host",
    "queue",
    "pool",
    "scheduled_at",
    "queued_at",
    "started_at",
    "ended_at",
    "error",
    "max_tries",
)
# Only a quality gate's task has these, so other tasks' documents leave them out:
# its state (QUALITY_CHECK_WAIT, _PASS or _FAIL) and one line on its rules.
_GATE_FIELDS = ("quality_check", "quality_summary")
_BUILD_FIELDS = (
    "run_type",
    "trigger_type",
    "triggering_user",
    "logical_date",
    "run_after",
    "queued_at",
    "started_at",
    "ended_at",
    "note",
    "executor",
    "cancel_reason",
    "canceled_by",
    "cancel_id",
)


def duration_ms(started: Any, ended: Any) -> int | None:
    if not started or not ended:
        return None
    delta = datetime.fromisoformat(str(ended)) - datetime.fromisoformat(str(started))
    return max(0, int(delta.total_seconds() * 1000))


def stage_status(statuses: Iterable[BuildStatus]) -> BuildStatus:
    """A stage's status from its tasks' statuses.

    Waiting tasks beside finished or running ones make the stage RUNNING; a
    finished stage is FAILED if any task failed, else CANCELED, UNEXEC, SKIP
    (only when every task was skipped) and SUCCEED, in that order.
    """
    counts = Counter(statuses)
    if not counts:
        return S.QUEUE
    if counts[S.REVIEWING]:
        return S.REVIEWING
    unfinished = sum(n for s, n in counts.items() if not s.is_finished or s is S.RETRY)
    if unfinished:
        if counts[S.QUEUE] == sum(counts.values()):
            return S.QUEUE
        return S.RUNNING
    for status in (S.FAILED, S.CANCELED, S.UNEXEC):
        if counts[status]:
            return status
    if counts[S.SKIP] == sum(counts.values()):
        return S.SKIP
    return S.SUCCEED


def progress(statuses: Iterable[BuildStatus]) -> dict[str, int]:
    counts = Counter(statuses)
    total = sum(counts.values())
    return {
        "total": total,
        "finished": sum(n for s, n in counts.items() if s.is_finished and s is not S.RETRY),
        "succeeded": counts[S.SUCCEED],
        "failed": counts[S.FAILED],
        "skipped": counts[S.SKIP],
        "unexec": counts[S.UNEXEC],
        "canceled": counts[S.CANCELED],
        "running": counts[S.RUNNING] + counts[S.PREPARE_ENV] + counts[S.REVIEWING],
        "waiting": counts[S.QUEUE] + counts[S.RETRY],
    }


def _task_document(node_id: str, state: NodeState) -> dict[str, Any]:
    values = state.values()
    task_id, _, index = node_id.partition("[")  # mapped tasks are "task[2]"
    doc: dict[str, Any] = {
        "id": node_id,
        "task_id": values.get("task_id", task_id),
        "map_index": values.get("map_index", int(index.rstrip("]")) if index else -1),
        "status": state.status.value,
        "detail": state.detail,
        "airflow_state": state.airflow_state,
        "try_number": state.key.try_number,
        "execute_count": int(values.get("clear_number") or 0) + 1,
    }
    for name in _TASK_FIELDS:
        doc[name] = values.get(name)
    for name in _GATE_FIELDS:
        if values.get(name) is not None:
            doc[name] = values[name]
    # Airflow's own times when the scheduler side has reported them; until
    # then the task runner's clock is the best estimate there is.
    doc["started_at"] = doc["started_at"] or values.get("runner_started_at")
    doc["ended_at"] = doc["ended_at"] or values.get("runner_ended_at")
    doc["duration_ms"] = duration_ms(doc["started_at"], doc["ended_at"])
    return doc


def _live_tasks(tasks: Mapping[str, NodeState]) -> dict[str, NodeState]:
    """Tasks to show: not removed, and a mapped task only by its expanded instances.

    Airflow turns the placeholder ``t`` (map_index -1) into ``t[0]`` when it
    expands a mapped task, so the placeholder is never reported as gone.
    """
    expanded = {nid.split("[", 1)[0] for nid in tasks if nid.endswith("]")}
    return {nid: st for nid, st in tasks.items() if not st.removed and nid not in expanded}


def build_document(
    build_id: str,
    dag_id: str,
    run_id: str,
    build_num: int | None,
    build: NodeState,
    tasks: Mapping[str, NodeState],
) -> dict[str, Any]:
    """Render the build tree as a JSON-ready document."""
    values = build.values()
    stages: dict[str, dict[str, Any]] = {}
    stage_pos: dict[str, float] = {}
    live = _live_tasks(tasks)
    for node_id in sorted(live, key=lambda n: (live[n].values().get("order", 1e9), n)):
        state = live[node_id]
        tv = state.values()
        stage_id = tv.get("stage") or UNGROUPED_STAGE
        stage = stages.setdefault(
            stage_id,
            {
                "id": stage_id,
                "name": "(ungrouped)"
                if stage_id == UNGROUPED_STAGE
                else tv.get("stage_name") or stage_id,
                "tasks": {},
            },
        )
        stage["tasks"][node_id] = _task_document(node_id, state)
        pos = tv.get("stage_order", tv.get("order", 1e9))
        stage_pos[stage_id] = min(stage_pos.get(stage_id, 1e9), float(pos))
    for position, stage_id in enumerate(sorted(stages, key=lambda s: (stage_pos[s], s))):
        stage = stages[stage_id]
        statuses = [BuildStatus(t["status"]) for t in stage["tasks"].values()]
        stage["order"] = position
        stage["status"] = stage_status(statuses).value
        stage["progress"] = progress(statuses)
    doc: dict[str, Any] = {
        "id": build_id,
        "pipeline_id": dag_id,
        "run_id": run_id,
        "build_num": build_num,
        "status": build.status.value,
        "airflow_state": build.airflow_state,
        "detail": build.detail,
        "execute_count": build.key.clear_number + 1,
    }
    for name in _BUILD_FIELDS:
        doc[name] = values.get(name)
    doc["duration_ms"] = duration_ms(values.get("started_at"), values.get("ended_at"))
    doc["progress"] = progress(BuildStatus(st.status) for st in live.values())
    doc["stages"] = stages
    return doc
