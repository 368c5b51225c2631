"""The scheduler's spool reader: worker records reach the store while tasks run, none lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from airflow_bkci.listeners.sink import EventSink
from airflow_bkci.listeners.spool_reader import SpoolReader
from airflow_bkci.model import StatusEvent
from airflow_bkci.model.event import build_id_for
from airflow_bkci.spool.spool import Spool
from airflow_bkci.store import Store
from tests.records import worker_record
from tests.unit.listeners.test_sink import wait_until

BUILD = build_id_for("etl", "r1")


class SwitchableStore:
    """A real store behind a switch: off, it fails as an unreachable database does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.up = threading.Event()
        self.up.set()

    def apply(self, events: Sequence[StatusEvent]) -> object:
        if not self.up.is_set():
            raise ConnectionError("store unreachable")
        return self.store.apply(events)


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    opened = Spool(tmp_path / "spool.db")
    yield opened
    opened.close()


def _reader(spool: Spool, target: object, **kwargs: object) -> tuple[SpoolReader, EventSink]:
    sink = EventSink(lambda: target, idle_wait=0.01)
    sink._backoff = lambda _state: 0.05  # type: ignore[assignment,method-assign]
    return SpoolReader(lambda: Spool(spool.path), sink, **kwargs), sink  # type: ignore[arg-type]


def _status(store: Store, task_id: str) -> str | None:
    state = store.node_states(BUILD).get(task_id)
    return None if state is None else state.status.value


def test_a_running_record_reaches_the_store_and_leaves_the_spool(spool: Spool, store: Store):
    spool.append(worker_record("extract", state="running"))
    reader, sink = _reader(spool, store)
    assert reader.run_once() == 1
    assert _status(store, "extract") == "RUNNING"
    assert spool.pending_count() == 0
    sink.stop(1.0)


def test_a_bad_row_is_quarantined_with_its_reason_and_the_rest_applied(spool: Spool, store: Store):
    spool.append_text("{not json")
    spool.append(worker_record("extract", state="no-such-state"))
    spool.append(worker_record("load", state="running"))
    reader, sink = _reader(spool, store)
    assert reader.run_once() == 1
    assert _status(store, "load") == "RUNNING"
    reasons = [why for _, _, why in spool.quarantined()]
    assert len(reasons) == 2
    assert reasons[0].startswith("not JSON")
    assert "no-such-state" in reasons[1]
    assert spool.pending_count() == 0 and reader.quarantined == 2
    sink.stop(1.0)


def test_records_stay_spooled_while_the_store_is_away(spool: Spool, store: Store):
    target = SwitchableStore(store)
    target.up.clear()
    spool.append(worker_record("extract", state="running"))
    reader, sink = _reader(spool, target, apply_timeout=0.3)
    with pytest.raises(TimeoutError, match="stay in"):
        reader.run_once()
    assert spool.pending_count() == 1, "given back, not lost"
    assert _status(store, "extract") is None
    target.up.set()
    # The sink kept the batch too and applies it; the row is read again and
    # applied once more, which the store takes as the same step.
    assert wait_until(lambda: reader.run_once() == 1, timeout=5.0)
    assert _status(store, "extract") == "RUNNING"
    assert spool.pending_count() == 0
    assert [t.to_status for t in store.history(BUILD, "extract")].count("RUNNING") == 1
    sink.stop(1.0)


def test_the_thread_reads_new_records_until_stopped(spool: Spool, store: Store):
    reader, sink = _reader(spool, store, interval=0.02)
    reader.start()
    try:
        spool.append(worker_record("extract", seq=1, state="running"))
        assert wait_until(lambda: _status(store, "extract") == "RUNNING")
        spool.append(worker_record("extract", seq=2, state="success"))
        assert wait_until(lambda: _status(store, "extract") == "SUCCEED")
    finally:
        reader.stop(2.0)
        sink.stop(1.0)
    assert reader.read == 2
    spool.append(worker_record("load", seq=3, state="running"))
    assert not wait_until(lambda: _status(store, "load") is not None, timeout=0.3)
    assert spool.pending_count() == 1, "a stopped reader leaves the spool alone"


def test_a_store_outage_does_not_hold_the_readers_stop(spool: Spool, store: Store):
    target = SwitchableStore(store)
    target.up.clear()
    spool.append(worker_record("extract", state="running"))
    reader, sink = _reader(spool, target, interval=0.02, apply_timeout=60.0)
    reader.start()
    try:
        assert wait_until(lambda: sink.failing, timeout=5.0)
        assert spool.pending_count() == 1
    finally:
        started = time.monotonic()
        reader.stop(30.0)
        stopped_after = time.monotonic() - started
        sink.stop(1.0)
    assert stopped_after < 5.0, f"the reader held the stop for {stopped_after:.1f}s"
    assert spool.pending_count() == 1 and spool.claim(10) != [], "given back for the next reader"
    assert _status(store, "extract") is None
