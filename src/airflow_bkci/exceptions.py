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


class OwnersFileError(BkciError):
    """The notification owners file cannot be read or has a line that is not a rule."""

    def __init__(
        self, source: str, line_number: int | None, line: str | None, problem: str, fix: str
    ) -> None:
        self.source = source
        self.line_number = line_number
        self.line = line
        self.problem = problem
        self.fix = fix
        where = source if line_number is None else f"{source}, line {line_number}"
        if line is not None:
            where += f" ({line.strip()!r})"
        super().__init__(f"{where}: {problem}. {fix}")


class NotifierError(BkciError):
    """A notification could not go out through a notifier: ``target`` names the connection.

    ``permanent`` is True when retrying cannot help until someone fixes the
    configuration (a connection that does not exist or has the wrong type).
    """

    def __init__(self, target: str, problem: str, fix: str, *, permanent: bool = False) -> None:
        self.target = target
        self.problem = problem
        self.fix = fix
        self.permanent = permanent
        super().__init__(f"{target}: {problem}. {fix}")
