"""The event sink applies in order, keeps events while the store is away, never holds up a stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from airflow_bkci.listeners.sink import EventSink
from airflow_bkci.model import BuildStatus, StatusEvent
from tests.unit.store.builders import event


class FlakyStore:
    """A store stand-in that fails until told to work."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.applied: list[StatusEvent] = []

    def apply(self, events: Sequence[StatusEvent]) -> None:
        if not self.up.is_set():
            raise ConnectionError("store unreachable")
        self.applied.extend(events)


def wait_until(check: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_events_wait_for_the_store_and_arrive_in_order() -> None:
    store = FlakyStore()
    sink = EventSink(lambda: store, idle_wait=0.01)
    sink._backoff = lambda _state: 0.05  # type: ignore[assignment,method-assign]
    events = [event(BuildStatus.QUEUE, f"t{i}") for i in range(5)]
    sink.put(events)
    assert wait_until(lambda: sink.failing)
    assert store.applied == [] and sink.pending() == 5
    store.up.set()
    assert sink.flush(5.0) is True
    assert store.applied == events and not sink.failing
    sink.stop(1.0)


def test_stop_does_not_wait_while_the_store_is_failing() -> None:
    store = FlakyStore()
    sink = EventSink(lambda: store, idle_wait=0.01)
    sink.put([event(BuildStatus.RUNNING)])
    assert wait_until(lambda: sink.failing)
    started = time.monotonic()
    sink.stop(timeout=5.0)
    # The queued event is in Airflow's database too: the next catch-up reads it.
    assert time.monotonic() - started < 2.5  # not the 5 s a wait for the store would take
    assert store.applied == []


def test_stop_applies_what_is_queued_when_the_store_works() -> None:
    store = FlakyStore()
    store.up.set()
    sink = EventSink(lambda: store, idle_wait=0.01)
    events = [event(BuildStatus.SUCCEED, f"t{i}") for i in range(3)]
    sink.put(events)
    sink.stop(timeout=5.0)
    assert store.applied == events
