"""The tasks whose own failure ended a build: the ones to tell their owners about.

The build document keeps Airflow's own state next to the BK-CI status, and
the mapping keeps the two failures apart: a task Airflow marked ``failed``
is FAILED, a task that never ran because an upstream failed
(``upstream_failed``) is UNEXEC. Only the first are root causes: a task
downstream of a failure has nothing to fix. A task that will retry is RETRY,
a task stopped by a cancel is CANCELED; neither is a root cause.

What the document cannot tell: a task a user marked failed by hand (or that
Airflow's "mark run failed" stopped) is FAILED like any other, so it is
reported as a root cause too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_bkci.model.status import BuildStatus

__all__ = ["FailedTask", "iter_tasks", "parse_time", "root_causes", "upstream_failed"]

_FAILED = "failed"
_UPSTREAM_FAILED = "upstream_failed"
# Unknown end times sort after every known one: a task whose end we never
# saw did not demonstrably fail first.
_NEVER = datetime.max.replace(tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class FailedTask:
    """One failed task instance (a mapped task's instances count one by one)."""

    node_id: str  # "load" or "load[2]" for map index 2
    task_id: str
    map_index: int
    stage_id: str
    stage_name: str
    try_number: int
    max_tries: int | None  # Airflow's max_tries: retries allowed in this run
    error: str | None
    started_at: datetime | None
    ended_at: datetime | None
    operator: str | None = None
    label: str | None = None  # Airflow's rendered map index, when the DAG sets one

    @property
    def tries_allowed(self) -> int | None:
        """How many tries the task had (``max_tries + 1``), when the document says."""
        if self.max_tries is None or self.max_tries < 0:
            return None
        return max(self.max_tries + 1, self.try_number)


StageAndTask = tuple[Mapping[str, Any], Mapping[str, Any]]


def iter_tasks(document: Mapping[str, Any]) -> Iterator[StageAndTask]:
    """(stage, task) pairs of a build document, in stage order then DAG order."""
    stages = document.get("stages") or {}
    for stage in sorted(stages.values(), key=lambda s: s.get("order", 0)):
        for task in (stage.get("tasks") or {}).values():
            yield stage, task


def root_causes(document: Mapping[str, Any]) -> list[FailedTask]:
    """Tasks that failed on their own, the first to fail first.

    Ties (and unknown end times) keep the DAG's order, so the list is stable.
    """
    found = [
        (position, _failed_task(stage, task))
        for position, (stage, task) in enumerate(iter_tasks(document))
        if _is_root_cause(task)
    ]
    found.sort(key=lambda item: (item[1].ended_at or _NEVER, item[0]))
    return [task for _, task in found]


def upstream_failed(document: Mapping[str, Any]) -> list[str]:
    """Node ids of the tasks that never ran because something upstream failed."""
    return [
        str(task["id"])
        for _, task in iter_tasks(document)
        if task.get("status") == BuildStatus.UNEXEC.value
        and _UPSTREAM_FAILED in (task.get("airflow_state"), task.get("detail"))
    ]


def _is_root_cause(task: Mapping[str, Any]) -> bool:
    if task.get("status") != BuildStatus.FAILED.value:
        return False
    # FAILED always comes from Airflow's "failed"; a record without Airflow's
    # state (an enrichment-only source) is still a failure of the task itself.
    return task.get("airflow_state") in (None, _FAILED)


def _failed_task(stage: Mapping[str, Any], task: Mapping[str, Any]) -> FailedTask:
    node_id = str(task["id"])
    return FailedTask(
        node_id=node_id,
        task_id=str(task.get("task_id") or node_id.split("[", 1)[0]),
        map_index=int(task.get("map_index", -1)),
        stage_id=str(stage.get("id", "")),
        stage_name=str(stage.get("name") or stage.get("id", "")),
        try_number=int(task.get("try_number") or 1),
        max_tries=_int_or_none(task.get("max_tries")),
        error=task.get("error") or None,
        started_at=parse_time(task.get("started_at")),
        ended_at=parse_time(task.get("ended_at")),
        operator=task.get("operator"),
        label=task.get("label"),
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def parse_time(value: Any) -> datetime | None:
    """A document time (ISO 8601 text) as an aware datetime; None when absent or unreadable."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
