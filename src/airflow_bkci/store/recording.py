"""Recordings of what a status store applied: one JSON line per batch, replayable.

Turned on with ``[bkci] record_events_to``. Every process that applies
batches (the scheduler's collector, each API server worker) appends to the
same file under an exclusive lock, so lines never interleave. A recording
replayed into an empty store (:func:`replay`) rebuilds the same builds and
change sets: it is how a problem seen in production is brought to a laptop,
and how our fault tests get real Airflow event streams without running Airflow.
"""

from __future__ import annotations

import fcntl
import gzip
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from airflow_bkci.exceptions import InvalidEvent
from airflow_bkci.model.codec import dump_event, load_event
from airflow_bkci.model.event import StatusEvent

__all__ = ["Recorder", "read_recording"]


class Recorder:
    """Appends each applied batch to ``path`` (JSON Lines)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def record(self, events: Sequence[StatusEvent], applied_at: datetime) -> None:
        line = json.dumps(
            {"applied_at": applied_at.isoformat(), "events": [dump_event(e) for e in events]},
            separators=(",", ":"),
            default=str,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            fcntl.flock(out, fcntl.LOCK_EX)  # other processes append to the same file
            out.write(line + "\n")


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_recording(path: str | Path) -> Iterator[list[StatusEvent]]:
    """The recorded batches, in the order they were applied (``.gz`` files too)."""
    path = Path(path)
    with _open(path) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                raw: Any = json.loads(line)
                yield [load_event(e) for e in raw["events"]]
            except (ValueError, KeyError, TypeError, InvalidEvent) as exc:
                raise InvalidEvent(f"{path}:{number}: not a recorded batch: {exc}") from exc
