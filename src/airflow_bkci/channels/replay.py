"""Replaying dead letters: send set-aside change sets to their endpoint again, as they were.

The events keep their ids, so a consumer that already has one drops it, and
one that moved past it (a snapshot followed the dead letter) sees a stale
sequence and ignores it: a replay can never undo a newer state. A dead
letter is marked replayed only when its endpoint took all of its events; the
first failure stops the replay, so it can be run again later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_bkci.channels.webhook import Delivery, SendResult
from airflow_bkci.store.outbox import Outbox

__all__ = ["ReplayReport", "replay_dead_letters"]


class ReplayChannel(Protocol):
    """What a replay needs of a channel: a ``WebhookChannel`` has it."""

    @property
    def name(self) -> str: ...

    def send(self, events: Sequence[Mapping[str, Any]]) -> SendResult: ...


@dataclass
class ReplayReport:
    replayed: list[int] = field(default_factory=list)
    events: int = 0
    failed_id: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed_id is None


def replay_dead_letters(
    outbox: Outbox,
    channels: Mapping[str, ReplayChannel],
    letters: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 100,
    progress: Callable[[int], None] = lambda events: None,
) -> ReplayReport:
    """Send each dead letter's events to its endpoint in batches; stop at the first failure.

    ``channels`` by endpoint name: a letter whose endpoint has no channel
    stops the replay with the reason. ``progress`` gets the number of events
    each sent batch carried.
    """
    report = ReplayReport()
    for letter in letters:
        channel = channels.get(letter["endpoint"])
        if channel is None:
            report.failed_id = letter["id"]
            report.error = (
                f"endpoint {letter['endpoint']!r} is not configured "
                "([bkci] webhook_conn_ids): nothing to send it to"
            )
            return report
        events = list(letter["events"])
        for start in range(0, len(events), max(1, batch_size)):
            chunk = events[start : start + batch_size]
            result = channel.send(chunk)
            if result.delivery is not Delivery.DELIVERED:
                report.failed_id = letter["id"]
                report.error = f"{result.delivery.value}: {result.error}"
                return report
            report.events += len(chunk)
            progress(len(chunk))
        # One letter at a time: a replay stopped half-way leaves no letter marked
        # that its endpoint did not take in full.
        outbox.mark_replayed([letter["id"]])
        report.replayed.append(letter["id"])
    return report
