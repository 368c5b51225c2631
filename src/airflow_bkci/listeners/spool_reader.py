"""The scheduler reads its host's spool, so a task's RUNNING is reported while it runs.

A task runner only appends to the host's spool while its task runs, and sends
what is left at its exit. Where the scheduler shares the host with its task
runners (LocalExecutor, the embedded default) it reads that spool itself every
``[bkci] spool_poll_interval`` seconds and hands the records to the sink, so a
worker hook's record reaches the store and the receivers within a poll, not at
the task's end. Task runners on other hosts (Celery, Kubernetes) still send
through the ingest route; rows are leased, so the two never take the same one.

A row leaves the spool only once the sink applied it; a store that is away, or
a crash in between, leaves it for the next reader. A row that is not a valid
record is moved to the spool's quarantine with the reason, as a forwarder does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tenacity import wait_exponential_jitter

from airflow_bkci.exceptions import InvalidEvent
from airflow_bkci.forksafe import sqlite_section
from airflow_bkci.listeners.background import BackgroundLoop
from airflow_bkci.listeners.sink import EventSink
from airflow_bkci.model.event import StatusEvent
from airflow_bkci.spool.forwarder import backoff_delay
from airflow_bkci.spool.records import event_from_text
from airflow_bkci.spool.spool import Spool

log = logging.getLogger(__name__)

# The spool is always an SQLite file: every touch of it keeps forks out.
_SPOOL = "sqlite"
_WAIT_SLICE = 0.05


class SpoolReader(BackgroundLoop):
    """Moves spooled worker records into the sink, on a thread of its own."""

    thread_name = "bkci-spool-reader"

    def __init__(
        self,
        spool_factory: Callable[[], Spool],
        sink: EventSink,
        *,
        interval: float = 0.1,
        batch_size: int = 500,
        apply_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self._spool_factory = spool_factory
        self._spool: Spool | None = None
        self.sink = sink
        self.interval = max(0.01, interval)
        self.batch_size = max(1, batch_size)
        self.apply_timeout = apply_timeout
        self._backoff = wait_exponential_jitter(multiplier=0.5, max=30.0)
        self.read = 0
        self.quarantined = 0

    def run_once(self) -> int:
        """Read one batch into the store; the number of records applied.

        Raises when the spool cannot be read or the sink did not apply the
        batch in time; the rows are then given back.
        """
        with sqlite_section(_SPOOL):
            if self._spool is None:
                self._spool = self._spool_factory()
            spool = self._spool
            rows = spool.claim(self.batch_size)
        if not rows:
            return 0
        ids: list[int] = []
        events: list[StatusEvent] = []
        for row_id, text in rows:
            try:
                events.append(event_from_text(text))
                ids.append(row_id)
            except InvalidEvent as exc:
                with sqlite_section(_SPOOL):
                    spool.quarantine(row_id, exc.reason)
                self.quarantined += 1
                log.warning("bkci: spool row %d quarantined in %s: %s", row_id, spool.path, exc)
        if not events:
            return 0
        self.sink.put(events)
        if not self._applied():
            with sqlite_section(_SPOOL):
                spool.release(ids)
            if self._stop.is_set():
                return 0  # stopping: the rows wait in the spool for the next reader
            raise TimeoutError(
                f"the status store did not take {len(events)} spooled records within "
                f"{self.apply_timeout:.0f}s; they stay in {spool.path}"
            )
        with sqlite_section(_SPOOL):
            spool.ack(ids)
        self.read += len(events)
        return len(events)

    def _applied(self) -> bool:
        """Wait for the sink to apply what it was given, at most ``apply_timeout`` s.

        Waits in slices, so a stop does not wait for the rest of that time: during
        a store outage it would hold the component's shutdown.
        """
        deadline = time.monotonic() + self.apply_timeout
        while not self.sink.flush(_WAIT_SLICE):
            if self._stop.is_set() or time.monotonic() >= deadline:
                return False
        return True

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        with sqlite_section(_SPOOL):
            if self._spool is not None:
                self._spool.close()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                applied = self.run_once()
            except Exception as exc:
                failures += 1
                delay = backoff_delay(self._backoff, failures)
                if failures == 1 or failures % 20 == 0:  # a store that is down says so once
                    log.warning(
                        "bkci: cannot read the spool into the store (%s); retry %d in %.1fs",
                        exc,
                        failures,
                        delay,
                    )
                self._stop.wait(delay)
                continue
            failures = 0
            if applied < self.batch_size:
                self._stop.wait(self.interval)
