"""Status events as plain JSON values and back: for recordings of what a store applied."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow_bkci.exceptions import InvalidEvent
from airflow_bkci.model.event import NodeRef, StatusEvent
from airflow_bkci.model.status import BuildStatus, Rank

__all__ = ["dump_event", "load_event"]


def dump_event(event: StatusEvent) -> dict[str, Any]:
    """``event`` as a JSON-able dict; :func:`load_event` gives back an equal event."""
    out: dict[str, Any] = {
        "dag_id": event.node.dag_id,
        "run_id": event.node.run_id,
        "task_id": event.node.task_id,
        "map_index": event.node.map_index,
        "status": event.status.value if event.status is not None else None,
        "clear_number": event.clear_number,
        "try_number": event.try_number,
        "source": event.source,
        "seq": event.seq,
        "at": event.at.isoformat(),
    }
    if event.airflow_state is not None:
        out["airflow_state"] = event.airflow_state
    if event.detail is not None:
        out["detail"] = event.detail
    if event.rank is not None:
        out["rank"] = int(event.rank)
    if event.removed:
        out["removed"] = True
    if event.fields:
        out["fields"] = dict(event.fields)
    return out


def load_event(raw: dict[str, Any]) -> StatusEvent:
    """The event :func:`dump_event` wrote; a malformed one raises :class:`InvalidEvent`."""
    try:
        status = raw["status"]
        rank = raw.get("rank")
        return StatusEvent(
            node=NodeRef(raw["dag_id"], raw["run_id"], raw["task_id"], int(raw["map_index"])),
            status=BuildStatus(status) if status is not None else None,
            clear_number=int(raw["clear_number"]),
            try_number=int(raw["try_number"]),
            source=str(raw["source"]),
            seq=int(raw["seq"]),
            at=datetime.fromisoformat(raw["at"]),
            airflow_state=raw.get("airflow_state"),
            detail=raw.get("detail"),
            rank=Rank(rank) if rank is not None else None,
            removed=bool(raw.get("removed", False)),
            fields=dict(raw.get("fields") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"not a recorded status event ({exc!r}): {raw!r:.200}", raw) from exc
