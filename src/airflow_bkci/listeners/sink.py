"""In-process queue of status events, applied to the store by one background thread.

Hooks and the reconciler only append here; the store's I/O happens on the
sink's thread, so a slow or unreachable store never slows the scheduler or an
API request. Events stay queued until applied; if the store stays away so long
that the queue would outgrow its bound, the queue is dropped and the
``on_overflow`` callback asks the producers to resend everything from
Airflow's database, which is the truth anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from tenacity import wait_exponential_jitter

from airflow_bkci.forksafe import sqlite_section
from airflow_bkci.model.event import StatusEvent
from airflow_bkci.spool.forwarder import backoff_delay

log = logging.getLogger(__name__)

StoreFactory = Callable[[], "object"]


class EventSink:
    """Collects events and applies them to the store in batches, in order."""

    def __init__(
        self,
        store_factory: Callable[[], object],
        *,
        max_queued: int = 200_000,
        batch_size: int = 2_000,
        idle_wait: float = 0.2,
        on_overflow: Callable[[], None] | None = None,
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        self._store_factory = store_factory
        self._store: object | None = None
        self._queue: deque[StatusEvent] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._max_queued = max_queued
        self._batch_size = batch_size
        self._idle_wait = idle_wait
        self._on_overflow = on_overflow
        self._on_applied = on_applied
        self._backoff = wait_exponential_jitter(multiplier=0.5, max=30.0)
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.applied = 0
        self.failures = 0
        self.failing = False  # the last apply failed and the thread is backing off
        self.last_success: float | None = None  # time.time() of the last applied batch

    def put(self, events: Iterable[StatusEvent]) -> None:
        batch = list(events)
        if not batch:
            return
        overflow = False
        with self._lock:
            self._queue.extend(batch)
            self._idle.clear()
            if len(self._queue) > self._max_queued:
                self._queue.clear()
                overflow = True
        if overflow:
            log.warning(
                "bkci: %d events queued while the status store was away; "
                "dropped them and asked for a resync from Airflow's database",
                self._max_queued,
            )
            if self._on_overflow is not None:
                self._on_overflow()
        self._ensure_thread()
        self._wake.set()

    def _store_url(self) -> object:
        engine = getattr(self._store, "engine", None)
        # Before the store is open its URL is unknown: guard the opening too.
        return engine.url if engine is not None else "sqlite"

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is applied, at most ``timeout`` s."""
        self._wake.set()
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Apply what is queued (at most ``timeout`` s), then stop the thread.

        While the store is failing there is no wait at all: what is queued is
        in Airflow's database too, and the next collector's catch-up reads it
        from there. Waiting would only hold up the component's shutdown.
        """
        if not self.failing:
            self.flush(timeout)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and not self.failing:
            self._thread.join(timeout)

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # forked (LocalExecutor workers): start afresh
            self._pid = os.getpid()
            self._thread = None
            self._store = None
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="bkci-sink", daemon=True)
            self._thread.start()

    def _take(self) -> list[StatusEvent]:
        with self._lock:
            n = min(self._batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _give_back(self, batch: list[StatusEvent]) -> None:
        with self._lock:
            self._queue.extendleft(reversed(batch))

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            batch = self._take()
            if not batch:
                self._idle.set()
                self._wake.wait(self._idle_wait)
                self._wake.clear()
                continue
            try:
                with sqlite_section(self._store_url()):
                    if self._store is None:
                        self._store = self._store_factory()
                    result = self._store.apply(batch)  # type: ignore[attr-defined]
            except Exception as exc:
                self._give_back(batch)
                attempt += 1
                self.failures += 1
                self.failing = True
                delay = backoff_delay(self._backoff, attempt)
                log.warning(
                    "bkci: status store unavailable (%s); %d events kept, retry %d in %.1fs",
                    exc,
                    self.pending(),
                    attempt,
                    delay,
                )
                self._stopping.wait(delay)
                continue
            attempt = 0
            self.failing = False
            self.applied += len(batch)
            if self._on_applied is not None:
                self._on_applied()
            self.last_success = time.time()
            for event, reason in getattr(result, "rejected", ()):
                log.warning(
                    "bkci: rejected event for %s/%s: %s",
                    event.node.build_id,
                    event.node.node_id,
                    reason,
                )
