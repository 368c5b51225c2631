"""A channel that blocks on each send, on a thread of its own, never holds up the others."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from airflow_bkci.channels.dispatcher import Dispatcher
from airflow_bkci.channels.webhook import Delivery, SendResult
from airflow_bkci.model import BuildStatus
from airflow_bkci.store import Store
from tests.unit.store.builders import event

pytestmark = pytest.mark.timeout(60)


class Recording:
    wants_changes = True
    own_thread = False

    def __init__(self, name: str, hold: threading.Event | None = None) -> None:
        self.name = name
        self.hold = hold  # while clear, every send blocks (a mail server that does not answer)
        self.builds: list[str] = []

    def accepts(self, pipeline_id: str) -> bool:
        return True

    def send(self, events: Sequence[dict[str, Any]]) -> SendResult:
        if self.hold is not None:
            self.hold.wait(30)
        self.builds += [str(e["subject"]) for e in events]
        return SendResult(Delivery.DELIVERED)


def wait_until(check: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())


def test_a_blocked_channel_on_its_own_thread_does_not_hold_up_the_webhooks(store: Store) -> None:
    released = threading.Event()
    slow = Recording("bkci:notify", hold=released)
    slow.own_thread = True
    fast = Recording("hook")
    dispatcher = Dispatcher(store, [slow, fast], batch_wait=0, poll_interval=0.05)
    dispatcher.start()
    try:
        store.apply([event(BuildStatus.RUNNING, run="r1")])
        dispatcher.notify()
        assert wait_until(lambda: len(fast.builds) == 1), "the webhook waited for the mail"
        store.apply([event(BuildStatus.RUNNING, run="r2")])
        dispatcher.notify()
        assert wait_until(lambda: len(fast.builds) == 2)
        assert slow.builds == []  # still inside its first send
        names = {t.name for t in threading.enumerate()}
        assert {"bkci-dispatcher", "bkci-dispatcher-bkci:notify"} <= names
    finally:
        released.set()
        assert wait_until(lambda: len(slow.builds) == 2)  # and it catches up once released
        dispatcher.stop(5.0)
    assert not any(t.name.startswith("bkci-dispatcher") for t in threading.enumerate())
