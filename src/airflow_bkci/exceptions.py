"""One exception root for the project, with branches callers can match on."""

from __future__ import annotations


class BkciError(Exception):
    """Root of every error this package raises on purpose."""


class InvalidTransition(BkciError):
    """A status change that the state machine does not allow."""

    def __init__(self, node: str, current: str, new: str, reason: str) -> None:
        self.node = node
        self.current = current
        self.new = new
        self.reason = reason
        super().__init__(f"{node}: {current} -> {new} is not allowed: {reason}")


class InvalidEvent(BkciError):
    """An event record that cannot be applied (bad shape or values)."""

    def __init__(self, reason: str, record: object = None) -> None:
        self.reason = reason
        self.record = record
        super().__init__(reason)


class StoreUnavailable(BkciError):
    """The status store cannot be reached; the caller should retry later."""


class ConfigError(BkciError):
    """A [bkci] option has a value the package cannot use."""
