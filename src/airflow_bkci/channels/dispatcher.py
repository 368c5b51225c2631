"""The dispatcher: claims outbox lanes and sends their change sets, in order, batched.

One pass per channel: open lanes for builds that changed, claim a batch of
lanes with something due, turn each into events (its pending change sets, or
one snapshot at the build's current sequence when the lane needs one, its
backlog is longer than ``snapshot_threshold``, or its next change set is no
longer stored), post them in batches of at most ``batch_size`` events, and
record the outcome per lane. Batching never merges or renumbers change sets:
every change set is its own event with its own id and sequence.

Failures back off per lane on a schedule in the spirit of Standard Webhooks
(seconds, then minutes, then hours), never sooner than ``Retry-After``; when
the schedule runs out the lane's events become dead letters and the lane
goes on with a snapshot. A per-endpoint circuit stops claiming for a dead
endpoint after a few failures in a row, so it costs nothing until it is
tried again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import msgspec
from tenacity import wait_chain, wait_fixed, wait_random
from tenacity.wait import wait_base

from airflow_bkci.channels.envelope import change_event, plain, snapshot_event
from airflow_bkci.channels.webhook import Delivery, SendResult
from airflow_bkci.model.event import utcnow
from airflow_bkci.spool.forwarder import WaitStrategy, backoff_delay
from airflow_bkci.store.outbox import Lane, Outbox
from airflow_bkci.store.signal import StoreSignal
from airflow_bkci.store.store import Store

__all__ = ["DEFAULT_SCHEDULE", "Channel", "Dispatcher", "PassReport", "retry_wait"]

log = logging.getLogger(__name__)

DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
"""Seconds before each retry (Standard Webhooks: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h)."""

DEFAULT_SOURCE = "/airflow-bkci"


class Channel(Protocol):
    """What the dispatcher needs of a channel (the webhook, the message queue).

    A channel may also have ``idle()``: called on a pass that found nothing to
    send, on the thread that sends for it, for work due by time rather than by
    a change (the notification channel's digests). It must be cheap when there
    is nothing to do: it runs every poll interval.
    """

    @property
    def name(self) -> str: ...

    @property
    def wants_changes(self) -> bool: ...

    def accepts(self, pipeline_id: str) -> bool: ...

    def send(self, events: Sequence[dict[str, Any]]) -> SendResult: ...


def retry_wait(schedule: Sequence[float]) -> WaitStrategy:
    """The schedule as a tenacity wait, each step with up to 10 % jitter."""
    steps: list[wait_base] = [wait_fixed(s) + wait_random(0, s * 0.1) for s in schedule]
    return wait_chain(*(steps or [wait_fixed(0)]))


@dataclass
class PassReport:
    """What one pass did, per outcome, over every channel."""

    claimed: int = 0
    sent_events: int = 0
    delivered_lanes: int = 0
    failed_lanes: int = 0
    dead_lettered: int = 0
    snapshots: int = 0
    postponed_lanes: int = 0  # the channel asked for them again later (Delivery.LATER)
    skipped: list[str] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return self.claimed > 0


@dataclass
class _Circuit:
    failures: int = 0
    open_until: float = 0.0
    cooldown: float = 0.0
    # (state, failures, open_until) as last written to the store, None before.
    saved: tuple[str, int, float] | None = None


@dataclass
class _Item:
    lane: Lane
    events: list[dict[str, Any]]
    last_seq: int
    snapshot: bool


class Dispatcher:
    """Delivers the outbox to ``channels``; ``run_once`` or a daemon thread (``start``)."""

    def __init__(
        self,
        store: Store,
        channels: Sequence[Channel],
        *,
        source: str = DEFAULT_SOURCE,
        owner: str | None = None,
        batch_size: int = 100,
        batch_wait: float = 0.05,
        snapshot_threshold: int = 200,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        circuit_threshold: int = 5,
        circuit_cooldown: float = 30.0,
        lease: float = 120.0,
        retention: timedelta = timedelta(days=7),
        poll_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.channels = list(channels)
        self.source = source
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.outbox = Outbox(store, self.owner, lease=lease)
        self.batch_size = max(1, batch_size)
        self.batch_wait = max(0.0, batch_wait)
        self.snapshot_threshold = max(1, snapshot_threshold)
        self.schedule = tuple(schedule)
        self.wait = retry_wait(self.schedule)
        self.circuit_threshold = max(1, circuit_threshold)
        self.circuit_cooldown = circuit_cooldown
        self.retention = retention
        self.poll_interval = poll_interval
        self._clock = clock
        self._circuits = {c.name: _Circuit() for c in self.channels}
        self._watermark: dict[str, datetime] = {}
        self._gone: dict[str, tuple[float, str | None]] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None  # the one for the shared channels
        self._threads: list[tuple[threading.Thread, threading.Event]] = []
        self._last_clean = 0.0

    # -- one pass -------------------------------------------------------------

    def run_once(self, channels: Sequence[Channel] | None = None) -> PassReport:
        """One pass over ``channels`` (every channel). Raises only if the store is unreachable."""
        report = PassReport()
        for channel in self.channels if channels is None else channels:
            self._pass(channel, report)
        if self._clock() - self._last_clean > 600:
            self._last_clean = self._clock()
            deleted = self.outbox.clean(self.retention)
            if deleted:
                log.info("bkci outbox: deleted %d delivered change sets past retention", deleted)
        return report

    @staticmethod
    def _call_optional(channels: Sequence[Channel], method: str) -> None:
        """``channel.<method>()`` of each channel that has it (``idle``)."""
        for channel in channels:
            call = getattr(channel, method, None)
            if call is None:
                continue
            try:
                call()
            except Exception:  # the channel's business; the dispatcher goes on
                log.warning("bkci dispatcher: %s %s failed", channel.name, method, exc_info=True)

    def drain(self, timeout: float = 60.0) -> PassReport:
        """Pass until nothing is due (or ``timeout``): for tests, the relay and the CLI."""
        total = PassReport()
        end = self._clock() + timeout
        while self._clock() < end:
            report = self.run_once()
            for name in vars(total):
                value = getattr(report, name)
                if isinstance(value, int):
                    setattr(total, name, getattr(total, name) + value)
            if not report.busy:
                break
        return total

    def _pass(self, channel: Channel, report: PassReport) -> None:
        name = channel.name
        circuit = self._circuits.setdefault(name, _Circuit())
        if circuit.open_until > self._clock():
            report.skipped.append(f"{name}: circuit open")
            return
        if self._is_gone(name):
            report.skipped.append(f"{name}: gone")
            return
        self._open_lanes(channel)
        half_open = circuit.failures >= self.circuit_threshold
        self._save_circuit(name)
        lanes = self.outbox.claim(name, 1 if half_open else self.batch_size)
        report.claimed += len(lanes)
        if not lanes:
            self._call_optional([channel], "idle")
            return
        wanted = [lane for lane in lanes if self._wants_changes(channel, lane)]
        pending = self.outbox.pending(wanted, self.batch_size)
        items = [self._item(lane, pending.get(lane.build_id, [])) for lane in lanes]
        # A channel may take fewer events per send (the notification channel takes one
        # build at a time, so one build's wait or failure is that build's alone).
        limit = min(self.batch_size, getattr(channel, "max_batch_events", None) or self.batch_size)
        batches: list[list[_Item]] = [[]]
        size = 0
        for item in items:
            if size and size + len(item.events) > limit:
                batches.append([])
                size = 0
            batches[-1].append(item)
            size += len(item.events)
        # Acks are written once per pass, not per request: a crash before that
        # write only resends what was delivered (consumers drop it by id).
        acks: list[_Item] = []
        started = self._clock()
        try:
            for i, batch in enumerate(batches):
                events = [e for item in batch for e in item.events]
                rest = [item.lane for later in batches[i + 1 :] for item in later]
                if not self._settle(channel, batch, channel.send(events), report, acks):
                    self.outbox.release(rest)  # the endpoint is failing: give the rest back
                    return
                if rest and self._clock() - started > self.outbox.lease.total_seconds() / 2:
                    # A slow endpoint must not outlast our lease: another dispatcher
                    # would take the lanes while we still send them.
                    self.outbox.release(rest)
                    return
        finally:
            if acks:
                self.outbox.delivered([(item.lane, item.last_seq) for item in acks])
            self._save_circuit(name)

    def _open_lanes(self, channel: Channel) -> None:
        # Builds changed since the last pass, with a minute's overlap: a
        # transaction that committed late carries an older updated_at.
        since = self._watermark.get(channel.name)
        now = utcnow()
        self.outbox.open_lanes(channel.name, channel.accepts, since)
        self._watermark[channel.name] = now - timedelta(seconds=60)

    def _circuit_state(self, circuit: _Circuit) -> str:
        if circuit.failures < self.circuit_threshold:
            return "closed"
        return "open" if circuit.open_until > self._clock() else "half_open"

    def _save_circuit(self, name: str) -> None:
        """Write the circuit to the store when it changed: the query API runs elsewhere.

        Only failures and recoveries change it, so a healthy endpoint costs one
        write per dispatcher start. A failed write is tried again next pass and
        never stops delivery.
        """
        circuit = self._circuits[name]
        state = self._circuit_state(circuit)
        seen = (state, circuit.failures, circuit.open_until if state == "open" else 0.0)
        if seen == circuit.saved:
            return
        open_until = None
        if state == "open":  # our clock is monotonic; readers want wall time
            open_until = utcnow() + timedelta(seconds=circuit.open_until - self._clock())
        try:
            self.outbox.save_circuit(name, state, circuit.failures, open_until)
        except Exception:
            log.warning("bkci dispatcher: cannot record the circuit of %s", name, exc_info=True)
            return
        circuit.saved = seen

    def _is_gone(self, name: str) -> bool:
        checked, reason = self._gone.get(name, (-1e18, None))
        if self._clock() - checked > 30:
            reason = self.outbox.gone(name)
            self._gone[name] = (self._clock(), reason)
        return reason is not None

    def _wants_changes(self, channel: Channel, lane: Lane) -> bool:
        """False when the lane gets a snapshot instead of its change sets."""
        return (
            channel.wants_changes
            and not lane.needs_snapshot
            and lane.backlog <= self.snapshot_threshold
        )

    def _item(self, lane: Lane, changes: list[dict[str, Any]]) -> _Item:
        """The lane's change sets as events, or one snapshot when they do not follow on."""
        if changes and changes[0]["sequence"] == lane.acked_seq + 1:
            events = [
                change_event(
                    source=self.source,
                    pipeline_id=lane.dag_id,
                    build_id=lane.build_id,
                    sequence=c["sequence"],
                    patch=msgspec.Raw(c["patch_json"].encode()),
                    time=c["created_at"],
                )
                for c in changes
            ]
            return _Item(lane, events, changes[-1]["sequence"], snapshot=False)
        snap = self.store.snapshot(lane.build_id)
        sequence = snap["sequence"] if snap is not None else lane.head_seq
        document = snap["document"] if snap is not None else {}
        event = snapshot_event(
            source=self.source,
            pipeline_id=lane.dag_id,
            build_id=lane.build_id,
            sequence=sequence,
            document=document,
            time=utcnow(),
        )
        return _Item(lane, [event], sequence, snapshot=True)

    def _settle(
        self,
        channel: Channel,
        batch: list[_Item],
        result: SendResult,
        report: PassReport,
        acks: list[_Item],
    ) -> bool:
        """Record what one batch's send did; delivered items go to ``acks``. False: stop."""
        events = sum(len(item.events) for item in batch)
        circuit = self._circuits[channel.name]
        if result.delivery is Delivery.DELIVERED:
            acks.extend(batch)
            circuit.failures, circuit.cooldown = 0, 0.0
            report.sent_events += events
            report.delivered_lanes += len(batch)
            report.snapshots += sum(item.snapshot for item in batch)
            return True
        if result.delivery is Delivery.REJECTED:
            circuit.failures = 0  # it answered: alive, just refusing these
            # A refused snapshot asks for no other: the next change set shows the gap.
            self._bury(batch, f"rejected: {result.error}", snapshot_next=lambda i: not i.snapshot)
            report.dead_lettered += len(batch)
            log.warning(
                "bkci channel %s permanently rejected %d events of %d builds (%s); they are dead "
                "letters now (`airflow-bkci outbox dead-letters`); each build gets a snapshot next",
                channel.name,
                events,
                len(batch),
                result.error,
            )
            return True
        if result.delivery is Delivery.LATER:
            # Not a failure: no circuit count, no warning; the lanes come back later.
            later = result.retry_after if result.retry_after is not None else 1.0
            self.outbox.failed(
                [item.lane for item in batch], result.error or "later", lambda _: later
            )
            report.postponed_lanes += len(batch)
            log.debug(
                "bkci channel %s postponed %d builds: %s", channel.name, len(batch), result.error
            )
            return True
        if result.delivery is Delivery.GONE:
            reason = (
                f"{result.error}. Delivery to {channel.name!r} is stopped; nothing is lost. "
                f"Fix the endpoint, then run `airflow-bkci outbox resume {channel.name}`."
            )
            self.outbox.set_gone(channel.name, reason)
            self._gone[channel.name] = (self._clock(), reason)
            self.outbox.release([item.lane for item in batch])
            log.error("bkci channel %s: %s", channel.name, reason)
            return False
        self._failed(channel, batch, result, report)
        return False

    def _failed(
        self, channel: Channel, batch: list[_Item], result: SendResult, report: PassReport
    ) -> None:
        circuit = self._circuits[channel.name]
        circuit.failures += 1
        if circuit.failures >= self.circuit_threshold:
            circuit.cooldown = min(300.0, max(self.circuit_cooldown, circuit.cooldown * 2))
            circuit.open_until = self._clock() + circuit.cooldown
        floor = result.retry_after or 0.0
        exhausted = [i for i in batch if i.lane.attempts + 1 > len(self.schedule)]
        retrying = [i for i in batch if i not in exhausted]
        for item in exhausted:
            reason = f"gave up after {item.lane.attempts + 1} attempts: {result.error}"
            self._bury([item], reason, snapshot_next=lambda _: True)
        report.dead_lettered += len(exhausted)
        self.outbox.failed(
            [i.lane for i in retrying],
            result.error or "unknown error",
            lambda lane: max(backoff_delay(self.wait, lane.attempts + 1), floor),
        )
        report.failed_lanes += len(retrying)
        log.warning(
            "bkci channel %s: could not deliver %d events of %d builds (%s); retrying with "
            "backoff%s",
            channel.name,
            sum(len(i.events) for i in batch),
            len(batch),
            result.error,
            f"; circuit open for {circuit.cooldown:.0f}s"
            if circuit.open_until > self._clock()
            else "",
        )

    def _bury(
        self, items: list[_Item], reason: str, snapshot_next: Callable[[_Item], bool]
    ) -> None:
        """Set the items' events aside as dead letters (raw patches decoded for storage)."""
        for item in items:
            self.outbox.dead_letter(
                item.lane,
                [plain(e) for e in item.events],
                item.last_seq,
                reason,
                snapshot_next=snapshot_next(item),
            )

    # -- background thread ----------------------------------------------------

    def start(self) -> None:
        """One thread for the shared channels, one for each channel with ``own_thread``.

        A channel that may block for long on each send (the notification channel's
        mail server) gets a thread of its own, so it never holds up the webhooks.
        """
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        shared = [c for c in self.channels if not getattr(c, "own_thread", False)]
        groups = [shared] if shared else []
        groups += [[c] for c in self.channels if getattr(c, "own_thread", False)]
        self._threads = []
        for group in groups:
            wake = self._wake if group is shared else threading.Event()
            name = "bkci-dispatcher" if group is shared else f"bkci-dispatcher-{group[0].name}"
            thread = threading.Thread(target=self._run, args=(group, wake), name=name, daemon=True)
            self._threads.append((thread, wake))
            thread.start()
        self._thread = self._threads[0][0] if self._threads else None

    def notify(self) -> None:
        """New change sets were stored: look now rather than at the next poll."""
        self._wake.set()
        for _, wake in self._threads:
            wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.notify()
        for thread, _ in self._threads:
            thread.join(timeout)

    def _run(self, channels: Sequence[Channel], wake: threading.Event) -> None:
        # Another process (the API server, a relay) stores change sets too: be told.
        signal = StoreSignal(self.store.engine)
        try:
            self._loop(signal, channels, wake)
        finally:
            signal.close()

    def _loop(
        self, signal: StoreSignal, channels: Sequence[Channel], wake: threading.Event
    ) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                report = self.run_once(channels)
                failures = 0
            except Exception as exc:
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                log.warning("bkci dispatcher: store unavailable (%s); retry in %.1fs", exc, delay)
                self._stop.wait(delay)
                continue
            if report.busy:
                if self.batch_wait:
                    self._stop.wait(self.batch_wait)
                continue
            signal.wait(self.poll_interval, wake)
            wake.clear()
