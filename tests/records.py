"""A valid worker record, as task runners spool it, for tests to vary."""

from __future__ import annotations

from typing import Any


def worker_record(
    task_id: str = "t", seq: int = 1, state: str = "running", **extra: Any
) -> dict[str, Any]:
    return {
        "dag_id": "etl",
        "run_id": "r1",
        "task_id": task_id,
        "map_index": -1,
        "try_number": 1,
        "clear_number": 0,
        "state": state,
        "source": "worker@h:1",
        "seq": seq,
        "at": "2026-01-01T00:00:00+00:00",
        **extra,
    }
