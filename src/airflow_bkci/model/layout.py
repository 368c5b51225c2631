"""Stage layout of a DAG, read from Airflow's serialized DAG document.

Plain dict walking, no Airflow import: the serialized form is what the
scheduler side has in the database, and deserialising whole DAGs every
poll would cost far more than we need (stage, order, label, operator).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TaskPlace:
    """Where one task sits in the build tree."""

    stage: str | None  # top-level task group id; None for ungrouped tasks
    stage_name: str | None
    order: int  # position in a topological order of the DAG
    operator: str | None


def _walk(children: dict[str, Any], stage: tuple[str, str] | None) -> Iterator[tuple[str, Any]]:
    for label, (kind, value) in children.items():
        if kind == "operator":
            yield value, stage
        elif kind == "taskgroup":
            group_stage = stage or (label, value.get("group_display_name") or label)
            yield from _walk(value.get("children", {}), group_stage)


def _topological(tasks: list[dict[str, Any]], declared: list[str]) -> list[str]:
    downstream = {t["task_id"]: list(t.get("downstream_task_ids") or []) for t in tasks}
    indegree = dict.fromkeys(downstream, 0)
    for targets in downstream.values():
        for target in targets:
            if target in indegree:
                indegree[target] += 1
    rank = {task_id: i for i, task_id in enumerate(declared)}
    ready = sorted((t for t, n in indegree.items() if n == 0), key=lambda t: rank.get(t, 1 << 30))
    order: list[str] = []
    while ready:
        task_id = ready.pop(0)
        order.append(task_id)
        for target in downstream[task_id]:
            if target in indegree:
                indegree[target] -= 1
                if indegree[target] == 0:
                    ready.append(target)
        ready.sort(key=lambda t: rank.get(t, 1 << 30))
    order.extend(t for t in declared if t not in order)  # cycles cannot happen; be safe
    return order


def dag_layout(serialized: dict[str, Any]) -> dict[str, TaskPlace]:
    """Map task_id -> :class:`TaskPlace` for a serialized DAG (``{"dag": {...}}``)."""
    dag = serialized.get("dag", serialized)
    tasks = [t.get("__var", t) for t in dag.get("tasks", [])]
    group = dag.get("task_group") or {"children": {}}
    stages = dict(_walk(group.get("children", {}), None))
    order = _topological(tasks, [t["task_id"] for t in tasks])
    position = {task_id: i for i, task_id in enumerate(order)}
    operators = {t["task_id"]: t.get("task_type") or t.get("_task_type") for t in tasks}
    return {
        task_id: TaskPlace(
            stage=stages[task_id][0] if stages.get(task_id) else None,
            stage_name=stages[task_id][1] if stages.get(task_id) else None,
            order=position[task_id],
            operator=operators.get(task_id),
        )
        for task_id in position
    }


def teardown_tasks(serialized: dict[str, Any]) -> frozenset[str]:
    """Task ids of the teardown tasks of a serialized DAG (mapped ones included).

    A mapped task keeps ``is_teardown`` in its ``partial_kwargs``.
    """
    dag = serialized.get("dag", serialized)
    found: set[str] = set()
    for raw in dag.get("tasks", []):
        task = raw.get("__var", raw)
        partial = task.get("partial_kwargs") or {}
        if task.get("is_teardown") or partial.get("is_teardown"):
            found.add(task["task_id"])
    return frozenset(found)
