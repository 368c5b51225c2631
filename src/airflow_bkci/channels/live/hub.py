"""The live hub of one API server worker: tails the store and moves its clients along.

Every worker process has its own hub and tails the store itself, so a client
sees every change whichever worker it landed on. One poll reads the heads
of the builds updated in a trailing window (``overlap``: a transaction that
committed late carries an older ``updated_at``), compares each with the
sequence the hub last saw, reads the new change sets once into a shared
cache of encoded frames, and tells the clients that follow those builds.
The hub never sends: each client's own task does (:mod:`.client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta

import msgspec

from airflow_bkci.channels.envelope import change_event, encode_event, snapshot_event
from airflow_bkci.channels.live.client import LiveClient
from airflow_bkci.channels.live.tail import ChangeSet, Head, StoreTail
from airflow_bkci.model.event import utcnow

__all__ = ["LiveHub"]

log = logging.getLogger(__name__)

_PREFETCH = 50
"""Change sets read ahead for a build the hub had not seen (older ones are read on demand)."""


class LiveHub:
    """Clients of one process and the tailer that feeds them; runs on one event loop."""

    def __init__(
        self,
        tail: StoreTail,
        *,
        source: str,
        poll_interval: float = 0.1,
        overlap: float = 30.0,
        cache_size: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tail = tail
        self.source = source
        self.poll_interval = poll_interval
        self.overlap = timedelta(seconds=overlap)
        self.cache_size = cache_size
        self.clients: set[LiveClient] = set()
        self._known: dict[str, tuple[int, float]] = {}
        self._frames: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._snapshots: dict[str, tuple[int, str]] = {}
        self._snapshot_locks: dict[str, asyncio.Lock] = {}
        self._watermark: datetime | None = None
        self._primed = False
        self._has_clients = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._clock = clock
        self.polls = 0

    # -- clients ----------------------------------------------------------------

    def add(self, client: LiveClient) -> None:
        self.clients.add(client)
        self._has_clients.set()
        self.ensure_running()

    def remove(self, client: LiveClient) -> None:
        self.clients.discard(client)

    def known_head(self, build_id: str) -> int | None:
        seen = self._known.get(build_id)
        return seen[0] if seen is not None else None

    # -- the tailer -------------------------------------------------------------

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="bkci-live-tail")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self.clients:
                # Nobody listens: stop polling, and forget, since changes go unseen now.
                self._primed = False
                self._has_clients.clear()
                await self._has_clients.wait()
            try:
                await self.poll_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(10.0, self.poll_interval * 2**failures)
                log.warning(
                    "bkci live: cannot read the status store (%s); clients wait, retry in %.1fs",
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            await asyncio.sleep(self.poll_interval)

    async def poll_once(self) -> int:
        """One look at the store; returns how many builds moved."""
        now = utcnow()
        since = (self._watermark or now) - self.overlap
        heads = await asyncio.to_thread(self.tail.changed_since, since)
        self._watermark = now
        self.polls += 1
        seen = self._clock()
        moved = [h for h in heads if h.sequence > self._known.get(h.build_id, (-1, 0.0))[0]]
        if not self._primed:
            # What changed before anyone listened reaches clients by their subscribe;
            # only builds a client already holds may have moved since it read them.
            self._primed = True
            for head in heads:
                for client in self.clients:
                    if client.holds(head.build_id):
                        client.need(head)
            moved = []
        elif moved:
            after = {
                h.build_id: self._known[h.build_id][0]
                if h.build_id in self._known
                else max(0, h.sequence - _PREFETCH)
                for h in moved
            }
            upto = {h.build_id: h.sequence for h in moved}
            pipelines = {h.build_id: h.pipeline_id for h in moved}
            rows = await asyncio.to_thread(self.tail.changes, after, upto)
            for row in rows:
                self._remember(row, pipelines[row.build_id])
        for head in heads:
            self._known[head.build_id] = (head.sequence, seen)
        self._forget_old(seen)
        for head in moved:
            for client in self.clients:
                if client.follows(head):
                    client.need(head)
        return len(moved)

    def _forget_old(self, now: float) -> None:
        horizon = now - 2 * self.overlap.total_seconds()
        if len(self._known) > 1000 or self.polls % 100 == 0:
            for build_id in [b for b, (_, at) in self._known.items() if at < horizon]:
                del self._known[build_id]

    # -- frames -----------------------------------------------------------------

    async def frames(self, head: Head, have: int, *, snapshot: bool) -> tuple[list[str], int]:
        """What takes a client from ``have`` to ``head``: change sets, or one snapshot.

        Returns the frames and the sequence they reach. Change sets come from
        the shared cache, else the store; a snapshot when asked for, when the
        client has nothing of a build under way (the client decides those two),
        or when a change set it needs is no longer stored. ``have`` is 0 for nothing.
        """
        if not snapshot:
            if have >= head.sequence:
                return [], have
            frames = self._cached(head.build_id, have, head.sequence)
            if frames is None:
                rows = await asyncio.to_thread(
                    self.tail.changes, {head.build_id: have}, {head.build_id: head.sequence}
                )
                if [r.sequence for r in rows] == list(range(have + 1, head.sequence + 1)):
                    frames = [self._remember(r, head.pipeline_id) for r in rows]
            if frames is not None:
                return frames, head.sequence
        return await self._snapshot(head)

    def _cached(self, build_id: str, have: int, upto: int) -> list[str] | None:
        frames = []
        for sequence in range(have + 1, upto + 1):
            frame = self._frames.get((build_id, sequence))
            if frame is None:
                return None
            frames.append(frame)
        return frames

    def _remember(self, row: ChangeSet, pipeline_id: str) -> str:
        key = (row.build_id, row.sequence)
        frame = self._frames.get(key)
        if frame is None:
            event = change_event(
                source=self.source,
                pipeline_id=pipeline_id,
                build_id=row.build_id,
                sequence=row.sequence,
                patch=msgspec.Raw(row.patch_json.encode()),
                time=row.created_at,
            )
            frame = encode_event(event).decode()
            self._frames[key] = frame
            while len(self._frames) > self.cache_size:
                self._frames.popitem(last=False)
        return frame

    async def _snapshot(self, head: Head) -> tuple[list[str], int]:
        build_id = head.build_id
        lock = self._snapshot_locks.setdefault(build_id, asyncio.Lock())
        async with lock:  # many clients asking at once read the store once
            cached = self._snapshots.get(build_id)
            if cached is None or cached[0] < head.sequence:
                snap = await asyncio.to_thread(self.tail.snapshot, build_id)
                if snap is None:
                    return [], 0
                event = snapshot_event(
                    source=self.source,
                    pipeline_id=snap["pipeline_id"],
                    build_id=build_id,
                    sequence=snap["sequence"],
                    document=snap["document"],
                    time=utcnow(),
                )
                cached = (snap["sequence"], encode_event(event).decode())
                self._snapshots[build_id] = cached
                if len(self._snapshots) > self.cache_size // 10:
                    self._snapshots.pop(next(iter(self._snapshots)))
        if not lock.locked():
            self._snapshot_locks.pop(build_id, None)
        return [cached[1]], cached[0]
