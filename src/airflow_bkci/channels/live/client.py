"""One live client: what it follows, what it has, what it still needs, and its sender.

The tailer only moves a client's ``want`` (a build's head) and never waits for
it; the client's own sender task turns want-minus-have into frames and is the
only one that sends, so a client that does not read blocks nothing but
itself. When what it still needs passes ``buffer`` events, it is cut loose:
told to resync and closed, never silently left behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_bkci.channels.live.protocol import control, now_iso
from airflow_bkci.channels.live.tail import Head

if TYPE_CHECKING:
    from airflow_bkci.channels.live.hub import LiveHub

__all__ = ["ClientGone", "LiveClient"]

log = logging.getLogger(__name__)

MAX_BATCH = 100
"""Most events in one WebSocket message."""

STALL_SECONDS = 1.0
"""A client over its buffer that took nothing for this long is cut loose."""


class ClientGone(Exception):
    """The sender stopped for a reason the connection handler acts on."""

    def __init__(self, code: int, reason: str, frame: str | None = None) -> None:
        self.code = code
        self.reason = reason
        self.frame = frame
        super().__init__(reason)


@dataclass
class _Want:
    head: Head
    snapshot: bool


class LiveClient:
    """State of one WebSocket connection; every method runs on the event loop."""

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        *,
        name: str,
        buffer: int = 1000,
        heartbeat: float = 15.0,
        expires_at: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.buffer = max(1, buffer)
        self.heartbeat = heartbeat
        self.expires_at = expires_at
        self.pipelines: set[str] = set()
        self.builds: set[str] = set()
        self.have: dict[str, int] = {}
        self._send = send
        self._wants: dict[str, _Want] = {}
        self._pipeline_of: dict[str, str] = {}
        self._controls: deque[str] = deque()
        self._wake = asyncio.Event()
        self._behind = 0
        self._gone: ClientGone | None = None
        self._pump: asyncio.Task[None] | None = None
        self._clock = clock
        self.sent_events = 0
        self._last_progress = clock()

    # -- what it follows --------------------------------------------------------

    def follows(self, head: Head) -> bool:
        return head.build_id in self.builds or head.pipeline_id in self.pipelines

    def holds(self, build_id: str) -> bool:
        """The client has, or is being sent, something of this build."""
        return build_id in self.have or build_id in self._wants

    def forget_unfollowed(self) -> None:
        """Stop sending builds no subscription covers any more (after an unsubscribe)."""
        for build_id, pipeline_id in list(self._pipeline_of.items()):
            if build_id in self.builds or pipeline_id in self.pipelines:
                continue
            self._drop_want(build_id)
            self.have.pop(build_id, None)
            del self._pipeline_of[build_id]

    # -- moved by the tailer and the subscribe handler ----------------------------

    def need(self, head: Head, *, have: int | None = None, snapshot: bool = False) -> None:
        """The client should reach ``head``; from ``have`` if given, by a snapshot if asked."""
        if self._gone is not None:
            return
        self._pipeline_of[head.build_id] = head.pipeline_id
        if have is not None:
            self.have[head.build_id] = have
        current = self.have.get(head.build_id)
        old = self._wants.get(head.build_id)
        snapshot = snapshot or (old is not None and old.snapshot)
        if current is None and not snapshot and head.sequence > 1:
            snapshot = True  # it has nothing of a build already under way
        if not snapshot and current is not None and head.sequence <= current:
            return
        if old is not None and not snapshot and head.sequence <= old.head.sequence:
            return
        self._drop_want(head.build_id)
        want = _Want(head, snapshot)
        self._wants[head.build_id] = want
        self._behind += self._cost(want)
        if self._behind > self.buffer and (
            # A burst may pass the buffer while the client keeps reading; twice the
            # buffer, or any excess while nothing was taken for a while, may not.
            self._behind > 2 * self.buffer or self._clock() - self._last_progress > STALL_SECONDS
        ):
            self._fell_behind()
            return
        self._wake.set()

    def tell(self, frame: str) -> None:
        """Queue a control frame; it goes before any event still waiting."""
        if self._gone is None:
            self._controls.append(frame)
            self._wake.set()

    def end(self, gone: ClientGone) -> None:
        """Stop the sender with ``gone`` (token expired, overflow); the handler closes."""
        if self._gone is None:
            self._gone = gone
            self._wants.clear()
            self._controls.clear()
            self._behind = 0
        self._wake.set()
        pump = self._pump
        if pump is not None and not pump.done() and pump is not asyncio.current_task():
            # The sender may be stuck in a send to a client that does not read.
            pump.cancel()

    @property
    def behind(self) -> int:
        """Events (a snapshot counts one) this client still needs."""
        return self._behind

    def _cost(self, want: _Want) -> int:
        if want.snapshot:
            return 1
        return max(0, want.head.sequence - self.have.get(want.head.build_id, 0))

    def _drop_want(self, build_id: str) -> None:
        old = self._wants.pop(build_id, None)
        if old is not None:
            self._behind -= self._cost(old)

    def _fell_behind(self) -> None:
        reason = (
            f"{self._behind} events behind, over the buffer of {self.buffer} "
            "([bkci] live_client_buffer); reconnect and subscribe with the sequences you have"
        )
        log.warning("bkci live: client %s %s; telling it to resync", self.name, reason)
        have = dict(sorted(self.have.items()))
        self.end(ClientGone(4409, "resync", control("resync", reason=reason, have=have)))

    # -- the sender ---------------------------------------------------------------

    def start(self, hub: LiveHub) -> asyncio.Task[None]:
        self._pump = asyncio.get_running_loop().create_task(
            self._run(hub), name=f"bkci-live-{self.name}"
        )
        return self._pump

    @property
    def gone(self) -> ClientGone | None:
        return self._gone

    async def _run(self, hub: LiveHub) -> None:
        last_sent = self._clock()
        while self._gone is None:
            if self._expired():
                self.end(
                    ClientGone(
                        4401,
                        "token expired",
                        control(
                            "error",
                            code="token_expired",
                            message="your token expired; reconnect with a fresh one, or send "
                            '{"op": "auth", "token": ...} before it expires',
                        ),
                    )
                )
                break
            if self._controls:
                await self._send(self._controls.popleft())
                last_sent = self._clock()
                continue
            if self._wants:
                await self._send_ready(hub)
                last_sent = self._clock()
                continue
            self._wake.clear()
            timeout = self._idle_timeout(last_sent)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                if self.heartbeat and self._clock() - last_sent >= self.heartbeat:
                    await self._send(control("heartbeat", at=now_iso()))
                    last_sent = self._clock()

    async def _send_ready(self, hub: LiveHub) -> None:
        """Everything ready, up to :data:`MAX_BATCH` events, in one message.

        One event goes as itself; several as a JSON array (the batch mode of
        the webhook's CloudEvents): a send per event would cost the server a
        frame per client per change set.
        """
        batch: list[str] = []
        while self._wants and len(batch) < MAX_BATCH:
            batch.extend(await self._take(hub, next(iter(self._wants))))
        if not batch:
            return
        await self._send(batch[0] if len(batch) == 1 else "[" + ",".join(batch) + "]")
        self.sent_events += len(batch)
        self._last_progress = self._clock()

    async def _take(self, hub: LiveHub, build_id: str) -> list[str]:
        """The frames that bring one build to its want; ``have`` moves as if they were sent."""
        want = self._wants.pop(build_id)
        self._behind -= self._cost(want)
        frames, reached = await hub.frames(
            want.head, self.have.get(build_id, 0), snapshot=want.snapshot
        )
        # No await from here on: the tailer may have moved this build's want
        # while we read, and its cost must be counted against the new have.
        newer = self._wants.get(build_id)
        if newer is not None:
            self._behind -= self._cost(newer)
        if frames:
            self.have[build_id] = max(reached, self.have.get(build_id, 0))
        if newer is not None:
            if newer.head.sequence <= self.have.get(build_id, -1):
                del self._wants[build_id]
            else:
                newer.snapshot = newer.snapshot and not frames
                self._behind += self._cost(newer)
        return frames

    def _expired(self) -> bool:
        return self.expires_at is not None and self._clock() >= self.expires_at

    def _idle_timeout(self, last_sent: float) -> float | None:
        waits = []
        if self.heartbeat:
            waits.append(max(0.0, last_sent + self.heartbeat - self._clock()))
        if self.expires_at is not None:
            waits.append(max(0.0, self.expires_at - self._clock()))
        return min(waits) if waits else None
