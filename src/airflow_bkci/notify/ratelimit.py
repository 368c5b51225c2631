"""Per-pipeline rate limit: a few messages per window, then one digest of the rest.

Windows are fixed and aligned to the epoch (an hour window runs 10:00-11:00
in UTC), so every process and every restart agrees on which window a moment
belongs to, and a digest's dedupe key names its pipeline and window.

Within a window a pipeline gets at most :attr:`RateLimit.messages` messages.
FAILED and CANCELED notices beyond that are held; once the window is over,
:meth:`RateLimiter.due` offers one :class:`Digest` of them until
:meth:`RateLimiter.sent` says it went out, and then it counts as a message of
the window it went out in. A RECOVERED notice is never held: "it works
again" is what people waiting out a storm want to hear at once, so it goes
out (counted) and takes the held notices with it as a digest to send just
before it.

The counts and the held notices are kept by a :class:`Ledger` (the status
store's :class:`~airflow_bkci.store.notice_ledger.NoticeLedger`), not in this
object: every dispatcher shares the limit, and held notices outlive the
process that held them. The clock is injected; nothing here sleeps or sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from airflow_bkci.exceptions import ConfigError
from airflow_bkci.model.event import utcnow
from airflow_bkci.notify.decide import Notice, NoticeKind

__all__ = [
    "MAX_DIGEST_NOTICES",
    "NOTIFY_RATE_LIMIT_OPTION",
    "NOTIFY_RATE_WINDOW_OPTION",
    "Admission",
    "Digest",
    "HeldNotices",
    "Ledger",
    "RateLimit",
    "RateLimiter",
]

NOTIFY_RATE_LIMIT_OPTION = "notify_rate_limit"
"""``[bkci]`` option (integer, default 3): messages per pipeline per window."""
NOTIFY_RATE_WINDOW_OPTION = "notify_rate_window"
"""``[bkci]`` option (seconds, default 3600): length of a rate-limit window."""

MAX_DIGEST_NOTICES = 200
"""Notices a digest carries in full; beyond that it only counts them (memory stays bounded)."""

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
class HeldNotices:
    """A ledger's notices of one pipeline held in ``[first_window, last_window]``, oldest first."""

    pipeline_id: str
    first_window: datetime
    last_window: datetime
    notices: tuple[Notice, ...]  # at most the number asked for
    count: int  # all of them
    first_id: int  # the ledger's rows, to forget exactly these
    last_id: int


class Ledger(Protocol):
    """Where the counts and held notices live; every method is one transaction."""

    def count(self, pipeline_id: str, window_start: datetime, below: int | None = None) -> bool: ...
    def sent(self, pipeline_id: str, window_start: datetime) -> int: ...
    def hold(self, notice: Notice, window_start: datetime) -> None: ...
    def held_count(self, pipeline_id: str) -> int: ...
    def ended(self, before: datetime, keep: int) -> list[HeldNotices]: ...
    def of_pipeline(self, pipeline_id: str, keep: int) -> HeldNotices | None: ...
    def forget(self, held: HeldNotices) -> int: ...


@dataclass(frozen=True, slots=True)
class Digest:
    """The notices of one pipeline held back in one window (or up to a recovery)."""

    pipeline_id: str
    window_start: datetime
    window_end: datetime
    notices: tuple[Notice, ...]
    held: int  # how many were held; more than len(notices) past MAX_DIGEST_NOTICES
    source: HeldNotices | None = None  # the ledger's rows, forgotten once it went out

    @property
    def dedupe_key(self) -> str:
        # A recovery can send a window's digest early and more notices can be
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


class RateLimiter:
    """Admits notices per pipeline under a :class:`RateLimit`, with the books in ``ledger``."""

    def __init__(
        self,
        ledger: Ledger,
        limit: RateLimit | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.ledger = ledger
        self.limit = limit or RateLimit()
        self.clock = clock

    def admit(self, notice: Notice) -> Admission:
        """Count ``notice`` against its pipeline's window, or hold it for the digest."""
        now = self.clock()
        window = self.limit.window_start(now)
        pipeline_id = notice.pipeline_id
        if notice.kind is NoticeKind.RECOVERED:
            held = self.ledger.of_pipeline(pipeline_id, MAX_DIGEST_NOTICES)
            self.ledger.count(pipeline_id, window)
            return Admission(send=True, digest=None if held is None else _digest(held, now))
        if self.ledger.count(pipeline_id, window, below=self.limit.messages):
            return Admission(send=True)
        self.ledger.hold(notice, window)
        return Admission(send=False)

    def due(self) -> list[Digest]:
        """Digests of the windows that are over, oldest first, until each is :meth:`sent`."""
        current = self.limit.window_start(self.clock())
        return [
            _digest(held, held.first_window + self.limit.window)
            for held in self.ledger.ended(current, MAX_DIGEST_NOTICES)
        ]

    def sent(self, digest: Digest) -> None:
        """``digest`` went out: forget its notices, count it in the window it went out in."""
        if digest.source is not None:
            self.ledger.forget(digest.source)
        self.ledger.count(digest.pipeline_id, self.limit.window_start(self.clock()))

    def next_due(self) -> datetime:
        """When the window now running ends: no digest can fall due before that."""
        return self.limit.window_start(self.clock()) + self.limit.window

    def held(self, pipeline_id: str) -> int:
        """Notices of the pipeline waiting for a digest."""
        return self.ledger.held_count(pipeline_id)


def _digest(held: HeldNotices, end: datetime) -> Digest:
    return Digest(held.pipeline_id, held.first_window, end, held.notices, held.count, held)
