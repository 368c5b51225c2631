"""The dispatcher writes its circuit to the store when it changes, for the query API to report."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_bkci.channels.dispatcher import Dispatcher
from airflow_bkci.channels.webhook import Delivery, SendResult
from airflow_bkci.model import BuildStatus
from airflow_bkci.model.event import utcnow
from airflow_bkci.store import Store
from airflow_bkci.store.outbox import Outbox
from tests.unit.store.builders import event

pytestmark = pytest.mark.timeout(60)


class Switch:
    """A channel whose every send answers ``result``; counts the sends."""

    name = "hook"
    wants_changes = True

    def __init__(self) -> None:
        self.result = SendResult(Delivery.RETRY, error="connection refused")
        self.sends = 0

    def accepts(self, pipeline_id: str) -> bool:
        return True

    def send(self, events: Sequence[dict[str, Any]]) -> SendResult:
        self.sends += 1
        return self.result


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    store.migrate()
    store.apply([event(BuildStatus.RUNNING, run=f"r{i}") for i in range(3)])
    yield store
    store.dispose()


def circuit(store: Store) -> dict[str, Any]:
    (health,) = Outbox(store, "reader").health(include_idle=True)
    return dict(health["circuit"])


def test_the_circuit_is_recorded_as_it_opens_half_opens_and_closes(store: Store) -> None:
    channel, clock = Switch(), Clock()
    d = Dispatcher(
        store,
        [channel],
        owner="sched:42",
        schedule=(0,) * 20,
        circuit_threshold=2,
        circuit_cooldown=30,
        clock=clock,
    )
    d.run_once()
    assert circuit(store)["state"] == "closed" and circuit(store)["failures"] == 1
    d.run_once()
    opened = circuit(store)
    assert (opened["state"], opened["failures"], opened["owner"]) == ("open", 2, "sched:42")
    assert opened["open_until"] is not None
    until = utcnow() + timedelta(seconds=30)
    assert abs(_seconds(opened["open_until"]) - until.timestamp()) < 5  # wall time, not monotonic

    sends = channel.sends
    d.run_once()  # open: nothing is tried, nothing changes
    assert channel.sends == sends and circuit(store) == opened

    clock.now += 31  # the cooldown is over: one lane is tried
    channel.result = SendResult(Delivery.DELIVERED)
    d.run_once()
    closed = circuit(store)
    assert (closed["state"], closed["failures"], closed["open_until"]) == ("closed", 0, None)


def test_a_half_open_circuit_is_recorded_before_its_trial(store: Store) -> None:
    channel, clock = Switch(), Clock()
    d = Dispatcher(
        store, [channel], schedule=(0,) * 20, circuit_threshold=1, circuit_cooldown=30, clock=clock
    )
    d.run_once()
    assert circuit(store)["state"] == "open"
    clock.now += 31
    writes: list[str] = []
    save = d.outbox.save_circuit

    def spy(endpoint: str, state: str, *args: Any) -> None:
        writes.append(state)
        save(endpoint, state, *args)

    d.outbox.save_circuit = spy  # type: ignore[method-assign]
    d.run_once()  # half-open: tried once, failed again
    assert writes == ["half_open", "open"]
    d.run_once()  # open again: no write while nothing changes
    assert writes == ["half_open", "open"]


def test_a_store_that_refuses_the_circuit_write_never_stops_delivery(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    channel = Switch()
    channel.result = SendResult(Delivery.DELIVERED)
    d = Dispatcher(store, [channel])

    def refuse(*args: Any) -> None:
        raise RuntimeError("no such column: circuit_state")

    d.outbox.save_circuit = refuse  # type: ignore[method-assign]
    report = d.run_once()
    assert report.delivered_lanes == 3
    assert "cannot record the circuit of hook" in caplog.text


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
