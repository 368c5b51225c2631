"""Plain snapshots of Airflow rows, taken at the edge so the rest is plain data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class CancelMark:
    """Why and by whom a run was canceled (our marker next to Airflow's rows)."""

    cancel_id: str
    reason: str
    canceled_by: str | None
    canceled_at: datetime

    @property
    def summary(self) -> str:
        return f"canceled by {self.canceled_by or 'unknown user'}: {self.reason}"


@dataclass(frozen=True, slots=True)
class RunRow:
    dag_id: str
    run_id: str
    state: str | None
    clear_number: int
    run_type: str | None
    triggered_by: str | None
    triggering_user: str | None
    logical_date: datetime | None
    run_after: datetime | None
    queued_at: datetime | None
    start_date: datetime | None
    end_date: datetime | None
    note: str | None = None
    dag_version_id: object = None  # Airflow's UUID, passed back as is
    canceled: CancelMark | None = None  # canceled in this clear of the run


@dataclass(frozen=True, slots=True)
class TaskRow:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str | None
    try_number: int
    max_tries: int | None
    scheduled_dttm: datetime | None
    queued_dttm: datetime | None
    start_date: datetime | None
    end_date: datetime | None
    hostname: str | None
    queue: str | None
    pool: str | None
    operator: str | None
    executor: str | None = None
    label: str | None = None
    resuming: bool = False  # ran already in this try: deferral or reschedule
    try_closed: bool = False  # task_instance_history holds this try: cleared since
    canceled: bool = False  # this try was ended by a cancel (bkci_cancel_task)

    @property
    def ti_key(self) -> tuple[str, str, str, int]:
        return (self.dag_id, self.run_id, self.task_id, self.map_index)
