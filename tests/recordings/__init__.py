"""Status event streams recorded from a real Airflow run (see record.py), for replay."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from airflow_bkci.model.event import StatusEvent
from airflow_bkci.store import Store
from airflow_bkci.store.recording import read_recording

EXAMPLES = Path(__file__).resolve().parent / "examples.jsonl.gz"


@cache
def example_batches() -> tuple[tuple[StatusEvent, ...], ...]:
    """Every batch the store applied while the example DAGs ran, in order."""
    return tuple(tuple(batch) for batch in read_recording(EXAMPLES))


@cache
def example_builds() -> tuple[str, ...]:
    """The recorded builds, in the order they first appear."""
    seen: dict[str, None] = {}
    for batch in example_batches():
        for event in batch:
            seen.setdefault(event.node.build_id, None)
    return tuple(seen)


def steps(builds: Sequence[str] | None = None) -> list[list[StatusEvent]]:
    """The recorded batches cut down to ``builds`` (all if None), empty ones left out."""
    wanted = set(example_builds() if builds is None else builds)
    out = [[e for e in batch if e.node.build_id in wanted] for batch in example_batches()]
    return [batch for batch in out if batch]


def replay(
    store: Store,
    builds: Sequence[str] | None = None,
    after_each: Callable[[], object] | None = None,
) -> None:
    """Apply the recorded stream of ``builds`` to ``store`` as the collectors did."""
    for batch in steps(builds):
        store.apply(batch)
        if after_each is not None:
            after_each()
