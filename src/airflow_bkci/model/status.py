"""BK-CI statuses and the rank each has within one try of a node."""

from __future__ import annotations

import enum


class BuildStatus(str, enum.Enum):
    """The BK-CI status names used for builds, stages and tasks."""

    QUEUE = "QUEUE"
    PREPARE_ENV = "PREPARE_ENV"
    RUNNING = "RUNNING"
    REVIEWING = "REVIEWING"
    RETRY = "RETRY"
    SUCCEED = "SUCCEED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    SKIP = "SKIP"
    UNEXEC = "UNEXEC"

    @property
    def is_finished(self) -> bool:
        """True when nothing more will happen in this try (RETRY ends a try)."""
        return self in _FINISHED

    @property
    def is_success(self) -> bool:
        return self in (BuildStatus.SUCCEED, BuildStatus.SKIP)

    @property
    def is_failure(self) -> bool:
        return self in (BuildStatus.FAILED, BuildStatus.UNEXEC)

    @property
    def is_cancel(self) -> bool:
        return self is BuildStatus.CANCELED

    @property
    def is_running(self) -> bool:
        return self in (BuildStatus.PREPARE_ENV, BuildStatus.RUNNING, BuildStatus.REVIEWING)

    @property
    def is_waiting(self) -> bool:
        return self in (BuildStatus.QUEUE, BuildStatus.RETRY)


_FINISHED = frozenset(
    {
        BuildStatus.RETRY,
        BuildStatus.SUCCEED,
        BuildStatus.FAILED,
        BuildStatus.CANCELED,
        BuildStatus.SKIP,
        BuildStatus.UNEXEC,
    }
)


class Rank(enum.IntEnum):
    """Position of a status inside one try; events of a try are ordered by it.

    Deferral, reschedule and awaiting input all rank as RUNNING, so the loops
    they make (running -> deferred -> scheduled -> queued -> running) never look
    like a step backwards.

    A cancel outranks every other end of its try: a task killed by a cancel
    reports FAILED from its own process (and the run may end failed when its
    teardowns finish), but the cancel is what happened. A new try or a clear
    of the run still reopens the node.
    """

    PENDING = 0
    SCHEDULED = 1
    QUEUED = 2
    RUNNING = 3
    FINISHED = 4
    CANCELED = 5

    @property
    def is_final(self) -> bool:
        """True for the ranks that end a try."""
        return self >= Rank.FINISHED


STATUS_RANK: dict[BuildStatus, Rank] = {
    BuildStatus.QUEUE: Rank.SCHEDULED,
    BuildStatus.PREPARE_ENV: Rank.QUEUED,
    BuildStatus.RUNNING: Rank.RUNNING,
    BuildStatus.REVIEWING: Rank.RUNNING,
    BuildStatus.RETRY: Rank.FINISHED,
    BuildStatus.SUCCEED: Rank.FINISHED,
    BuildStatus.FAILED: Rank.FINISHED,
    BuildStatus.CANCELED: Rank.CANCELED,
    BuildStatus.SKIP: Rank.FINISHED,
    BuildStatus.UNEXEC: Rank.FINISHED,
}
