"""The store signal wakes a waiter when another connection commits, on both backends."""

from __future__ import annotations

import threading
import time

from airflow_bkci.model import BuildStatus
from airflow_bkci.store import Store
from airflow_bkci.store.signal import StoreSignal
from tests.unit.store.builders import build_event


def test_a_commit_by_another_connection_wakes_the_waiter(store: Store, store_url: str) -> None:
    signal = StoreSignal(store.engine)
    other = Store(store_url)  # another process, as far as the store can tell
    try:
        idle = threading.Event()
        assert signal.wait(0.3, idle) is False  # nothing happened: the full timeout
        timer = threading.Timer(0.2, other.apply, [[build_event(BuildStatus.QUEUE)]])
        timer.start()
        started = time.monotonic()
        assert signal.wait(20.0, idle) is True
        assert time.monotonic() - started < 15.0  # woken by the commit, not by the timeout
        timer.join()
    finally:
        signal.close()
        other.dispose()


def test_the_in_process_wake_still_works_and_a_dead_signal_falls_back_to_polling(
    store: Store,
) -> None:
    wake = threading.Event()
    wake.set()
    broken = StoreSignal(store.engine)
    broken.url = broken.url.set(database="/nonexistent/dir/status.db")
    assert broken.wait(5.0, wake) is True
    wake.clear()
    started = time.monotonic()
    assert broken.wait(0.2, wake) is False
    assert time.monotonic() - started >= 0.2
    broken.close()
