"""Per-pipeline rate limit: a few messages per window, then one digest of the rest.

Windows are fixed and aligned to the epoch (an hour window runs 10:00-11:00
in UTC), so every process and every restart agrees on which window a moment
belongs to, and a digest's dedupe key names its pipeline and window.

Within a window a pipeline gets at most :attr:`RateLimit.messages` messages.
FAILED and CANCELED notices beyond that are held; when the window is over,
:meth:`RateLimiter.due` hands out one :class:`Digest` of them, which counts
as a message of the window it is sent in. A RECOVERED notice is never held:
"it works again" is what people waiting out a storm want to hear at once,
so it goes out (counted) and takes the held notices with it as a digest to
send just before it. The clock is injected; nothing here sleeps or sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from airflow_bkci.exceptions import ConfigError
from airflow_bkci.model.event import utcnow
from airflow_bkci.notify.decide import Notice, NoticeKind

__all__ = [
    "MAX_DIGEST_NOTICES",
    "NOTIFY_RATE_LIMIT_OPTION",
    "NOTIFY_RATE_WINDOW_OPTION",
    "Admission",
    "Digest",
    "RateLimit",
    "RateLimiter",
]

NOTIFY_RATE_LIMIT_OPTION = "notify_rate_limit"
"""``[bkci]`` option (integer, default 3): messages per pipeline per window."""
NOTIFY_RATE_WINDOW_OPTION = "notify_rate_window"
"""``[bkci]`` option (seconds, default 3600): length of a rate-limit window."""

MAX_DIGEST_NOTICES = 200
"""Notices a digest keeps in full; beyond that it only counts them (memory stays bounded)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class RateLimit:
    messages: int = 3
    window: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.messages < 1:
            raise ConfigError(
                f"[bkci] {NOTIFY_RATE_LIMIT_OPTION} is {self.messages}; it must be at least 1 "
                "(a digest is a message too)"
            )
        if self.window <= timedelta(0):
            raise ConfigError(
                f"[bkci] {NOTIFY_RATE_WINDOW_OPTION} is {self.window.total_seconds():g} s; "
                "it must be a positive number of seconds"
            )

    def window_start(self, moment: datetime) -> datetime:
        """Start of the window ``moment`` falls in."""
        return _EPOCH + ((moment - _EPOCH) // self.window) * self.window


@dataclass(frozen=True, slots=True)
class Digest:
    """The notices of one pipeline held back in one window."""

    pipeline_id: str
    window_start: datetime
    window_end: datetime
    notices: tuple[Notice, ...]
    held: int  # how many were held; more than len(notices) past MAX_DIGEST_NOTICES

    @property
    def dedupe_key(self) -> str:
        # A recovery can flush a window's digest early and more notices can be
        # held after it: the first held notice tells the two digests apart.
        first = self.notices[0].dedupe_key if self.notices else "-"
        return f"bkci-digest/{self.pipeline_id}/{self.window_start.isoformat()}/{first}"

    @property
    def omitted(self) -> int:
        return self.held - len(self.notices)


@dataclass(frozen=True, slots=True)
class Admission:
    """What to do with one notice: send it now or not; send ``digest`` first if set."""

    send: bool
    digest: Digest | None = None


@dataclass(slots=True)
class _Window:
    start: datetime
    sent: int = 0
    held: list[Notice] = field(default_factory=list)
    held_count: int = 0


class RateLimiter:
    """Admits notices per pipeline under a :class:`RateLimit`; one instance per process."""

    def __init__(
        self, limit: RateLimit | None = None, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.limit = limit or RateLimit()
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._due: list[Digest] = []

    def admit(self, notice: Notice) -> Admission:
        """Count ``notice`` against its pipeline's window, or hold it for the digest."""
        now = self.clock()
        window = self._current(notice.pipeline_id, now)
        if notice.kind is NoticeKind.RECOVERED:
            flushed = self._digest(notice.pipeline_id, window, now) if window.held_count else None
            window.held, window.held_count = [], 0
            window.sent += 1
            return Admission(send=True, digest=flushed)
        if window.sent < self.limit.messages:
            window.sent += 1
            return Admission(send=True)
        window.held_count += 1
        if len(window.held) < MAX_DIGEST_NOTICES:
            window.held.append(notice)
        return Admission(send=False)

    def due(self) -> list[Digest]:
        """Digests of the windows that are over; each is handed out once."""
        now = self.clock()
        for pipeline_id, window in list(self._windows.items()):
            if window.start + self.limit.window <= now:
                self._roll(pipeline_id, window, now)
        due, self._due = self._due, []
        return due

    def take_held(self) -> list[Digest]:
        """Every digest due, and one of each window's held notices though it still runs.

        For a process that stops: what it holds would otherwise be lost with it.
        The windows keep their counts, so the limit stays in force until they end.
        """
        now = self.clock()
        taken, self._due = self._due, []
        for pipeline_id, window in self._windows.items():
            if window.held_count:
                taken.append(self._digest(pipeline_id, window, now))
                window.held, window.held_count = [], 0
        return taken

    def held(self, pipeline_id: str) -> int:
        """Notices of the pipeline waiting for the digest of the current window."""
        window = self._windows.get(pipeline_id)
        return 0 if window is None else window.held_count

    def _current(self, pipeline_id: str, now: datetime) -> _Window:
        window = self._windows.get(pipeline_id)
        if window is not None and window.start + self.limit.window <= now:
            self._roll(pipeline_id, window, now)
            window = self._windows.get(pipeline_id)
        if window is None:
            window = self._windows[pipeline_id] = _Window(self.limit.window_start(now))
        return window

    def _roll(self, pipeline_id: str, window: _Window, now: datetime) -> None:
        """Close an ended window: queue its digest, which counts in the window it goes out in."""
        if not window.held_count:
            del self._windows[pipeline_id]  # nothing to carry over; forget the pipeline
            return
        self._due.append(self._digest(pipeline_id, window, window.start + self.limit.window))
        self._windows[pipeline_id] = _Window(self.limit.window_start(now), sent=1)

    def _digest(self, pipeline_id: str, window: _Window, end: datetime) -> Digest:
        return Digest(pipeline_id, window.start, end, tuple(window.held), window.held_count)
