"""Worker records: the plain dicts task runners spool, and their strict validation.

A record is one observation of one task try by one task runner::

    {"v": 1, "dag_id": "etl", "run_id": "manual__...", "task_id": "load",
     "map_index": -1, "try_number": 1, "clear_number": 0, "state": "running",
     "source": "worker@host:123", "seq": 1, "at": "2025-01-01T00:00:00+00:00",
     "start_date": "...", "end_date": null, "hostname": "host", "queue": "default",
     "pool": "default_pool", "operator": "PythonOperator", "max_tries": 0,
     "label": null, "error": null}

A quality gate's task adds ``quality_check`` (one of :data:`QUALITY_CHECKS`) and
``quality_summary``. Keys not listed here are ignored, so an older server
accepts a newer worker.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from airflow_bkci.exceptions import InvalidEvent
from airflow_bkci.model.event import NodeRef, StatusEvent
from airflow_bkci.model.mapping import map_task_state

__all__ = ["QUALITY_CHECKS", "RECORD_VERSION", "event_from_text", "record_to_event"]

RECORD_VERSION = 1
MAX_ID_LEN = 250  # Airflow's ID_LEN for dag_id, task_id, run_id
MAX_TEXT_LEN = 4000

# record key -> StatusEvent field name; values are strings or null
_TEXT_FIELDS = {
    "hostname": "host",
    "queue": "queue",
    "pool": "pool",
    "operator": "operator",
    "label": "label",
    "error": "error",
    "quality_summary": "quality_summary",
}
QUALITY_CHECKS = frozenset({"QUALITY_CHECK_WAIT", "QUALITY_CHECK_PASS", "QUALITY_CHECK_FAIL"})
"""BK-CI's quality-gate states, which a gate task's records may carry as ``quality_check``."""
# Airflow's database keeps the times the build tree shows (the scheduler side
# reports them); the task runner's own clock goes beside them, never over them.
_TIME_FIELDS = {"start_date": "runner_started_at", "end_date": "runner_ended_at"}


def _fail(record: object, name: str, problem: str) -> InvalidEvent:
    return InvalidEvent(f"field {name!r} {problem}", record)


def _str(record: Mapping[str, Any], name: str, *, max_len: int = MAX_ID_LEN) -> str:
    if name not in record:
        raise _fail(record, name, "is missing")
    value = record[name]
    if not isinstance(value, str):
        raise _fail(record, name, f"must be a string, got {type(value).__name__}")
    if not value:
        raise _fail(record, name, "must not be empty")
    if len(value) > max_len:
        raise _fail(record, name, f"is {len(value)} characters long; the limit is {max_len}")
    return value


def _int(record: Mapping[str, Any], name: str, *, minimum: int) -> int:
    if name not in record:
        raise _fail(record, name, "is missing")
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(record, name, f"must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise _fail(record, name, f"must be >= {minimum}, got {value}")
    return value


def _time(record: Mapping[str, Any], name: str, *, required: bool) -> datetime | None:
    if name not in record or record[name] is None:
        if required:
            raise _fail(record, name, "is missing")
        return None
    raw = record[name]
    if not isinstance(raw, str):
        raise _fail(record, name, f"must be an ISO 8601 string, got {type(raw).__name__}")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise _fail(record, name, f"is not an ISO 8601 time: {raw[:40]!r}") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise _fail(record, name, f"has no time zone: {raw[:40]!r}; send UTC, e.g. '+00:00'")
    return value


def _optional_text(record: Mapping[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(record, name, f"must be a string or null, got {type(value).__name__}")
    if len(value) > MAX_TEXT_LEN:
        raise _fail(record, name, f"is {len(value)} characters long; the limit is {MAX_TEXT_LEN}")
    return value


def record_to_event(record: object) -> StatusEvent:
    """Validate one worker record and turn it into a :class:`StatusEvent`.

    Raises :class:`~airflow_bkci.exceptions.InvalidEvent` naming the first
    field that is missing, of the wrong type or out of range.
    """
    if not isinstance(record, Mapping):
        raise InvalidEvent(f"a record must be a JSON object, got {type(record).__name__}", record)
    version = record.get("v", RECORD_VERSION)
    if version != RECORD_VERSION:
        raise _fail(record, "v", f"is {version!r}; this server reads version {RECORD_VERSION}")
    node = NodeRef(
        dag_id=_str(record, "dag_id"),
        run_id=_str(record, "run_id"),
        task_id=_str(record, "task_id"),
        map_index=_int(record, "map_index", minimum=-1),
    )
    try_number = _int(record, "try_number", minimum=0)
    clear_number = _int(record, "clear_number", minimum=0)
    source = _str(record, "source")
    seq = _int(record, "seq", minimum=0)
    at = _time(record, "at", required=True)
    assert at is not None
    state = _str(record, "state", max_len=64)
    try:
        mapped = map_task_state(state)
    except ValueError:
        raise _fail(record, "state", f"is not an Airflow task state: {state!r}") from None
    fields: dict[str, Any] = {}
    for key, name in _TIME_FIELDS.items():
        value = _time(record, key, required=False)
        if value is not None:
            fields[name] = value.astimezone(timezone.utc).isoformat()
    for key, name in _TEXT_FIELDS.items():
        text = _optional_text(record, key)
        if text is not None:
            fields[name] = text
    if record.get("max_tries") is not None:
        fields["max_tries"] = _int(record, "max_tries", minimum=-1)
    check = _optional_text(record, "quality_check")
    if check is not None:
        if check not in QUALITY_CHECKS:
            raise _fail(record, "quality_check", f"must be one of {sorted(QUALITY_CHECKS)}")
        fields["quality_check"] = check
    return StatusEvent(
        node=node,
        status=mapped.status,
        clear_number=clear_number,
        try_number=try_number,
        source=source,
        seq=seq,
        at=at,
        airflow_state=state,
        detail=mapped.detail,
        rank=mapped.rank,
        removed=mapped.removed,
        fields=fields,
    )


def event_from_text(text: str) -> StatusEvent:
    """A spooled row as an event; :class:`InvalidEvent` with the reason when it is none."""
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    try:
        return record_to_event(record)
    except InvalidEvent:
        raise
    except Exception as exc:  # a record the model itself refuses
        raise InvalidEvent(f"{type(exc).__name__}: {exc}", record) from exc
