"""Plain snapshots of Airflow rows, taken at the edge so the rest is plain data."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

MAX_CONF_BYTES = 16 * 1024
"""Largest run conf the status store keeps, as compact UTF-8 JSON; a larger one is left out."""


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
    # kept_conf() of the run's conf; None when there is none to keep or it was not read.
    conf: Mapping[str, Any] | None = field(default=None, hash=False)


def kept_conf(conf: Any, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The run's conf as the status store keeps it, or None.

    Only a non-empty JSON object of at most :data:`MAX_CONF_BYTES` is kept:
    the store filters builds on it, and a conf can be large. The copy is
    plain JSON, so nothing of Airflow's object leaves with it.
    """
    if not conf:  # Airflow stores {} for a run triggered without conf
        return None
    if not isinstance(conf, Mapping):
        log.debug("bkci: conf of %s/%s is not a JSON object; not kept", dag_id, run_id)
        return None
    try:
        text = json.dumps(conf, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        log.debug("bkci: conf of %s/%s is not JSON; not kept", dag_id, run_id)
        return None
    size = len(text.encode())
    if size > MAX_CONF_BYTES:
        log.debug(
            "bkci: conf of %s/%s is %d bytes of JSON, over %d; not kept, so conf filters "
            "of the query API and of quality gates do not match this build",
            dag_id,
            run_id,
            size,
            MAX_CONF_BYTES,
        )
        return None
    kept: dict[str, Any] = json.loads(text)
    return kept


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
