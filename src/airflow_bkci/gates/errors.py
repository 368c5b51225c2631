"""Errors of quality gates: a bad rule (permanent), and reads that failed (permanent or not).

Callers match on the type, never on the text: :class:`GateRuleError` means the
rules must change, :class:`GateReadError` that a read was refused for good, and
:class:`ReadUnavailable` that the same read may work later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from airflow_bkci.exceptions import BkciError

__all__ = [
    "BuildNotFound",
    "GateConnectionError",
    "GateError",
    "GateReadError",
    "GateRuleError",
    "PipelineAccessDenied",
    "PipelineNotFound",
    "ReadUnavailable",
    "RuleProblem",
]


class GateError(BkciError):
    """Root of the quality-gate errors."""


@dataclass(frozen=True)
class RuleProblem:
    """One thing wrong with one rule: what, and how to fix it.

    ``index`` is the rule's position in the gate's list (None for a rule made
    on its own); ``rule`` names it, e.g. ``success_rate of 'build'``.
    """

    problem: str
    fix: str
    index: int | None = None
    rule: str | None = None

    def __str__(self) -> str:
        text = f"{self.problem}. Fix: {self.fix}"
        if self.index is None and self.rule is None:
            return text  # about the rules as a whole
        where = f"rules[{self.index}]" if self.index is not None else "rule"
        return f"{where} ({self.rule}): {text}" if self.rule else f"{where}: {text}"


class GateRuleError(GateError):
    """Rules that cannot be checked as written; the message lists every problem and its fix."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems = tuple(problems)
        lines = [str(p) for p in self.problems]
        text = lines[0] if len(lines) == 1 else "\n".join(["rules have problems:", *lines])
        super().__init__(text)

    @classmethod
    def one(cls, problem: str, fix: str, rule: str | None = None) -> GateRuleError:
        return cls([RuleProblem(problem, fix, rule=rule)])

    def at(self, index: int) -> GateRuleError:
        """The same problems, naming the rule by its position in the gate's list."""
        return GateRuleError([replace(p, index=index) for p in self.problems])


class GateReadError(GateError):
    """A read of build status that was refused or failed for good; retrying will not help."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class PipelineAccessDenied(GateReadError):
    """The reader's user may not read the pipeline (HTTP 403), or its token was refused (401)."""

    def __init__(self, pipeline: str, status: int, detail: str) -> None:
        self.pipeline = pipeline
        if status == 401:
            why = (
                "the API server refused the token (missing, expired or forged); give the "
                "gate's connection a valid token or a login and password"
            )
        else:
            why = "ask an admin for read permission on that DAG for the gate's connection user"
        super().__init__(f"no permission to read pipeline {pipeline!r}: {why} ({detail})", status)


class PipelineNotFound(GateReadError):
    """The status store has no build of the pipeline: a wrong DAG id, or it never ran."""

    def __init__(self, pipeline: str, detail: str = "") -> None:
        self.pipeline = pipeline
        super().__init__(
            f"no build of pipeline {pipeline!r} in the status store: check the DAG id, or "
            "run the pipeline once" + (f" ({detail})" if detail else ""),
            404,
        )


class BuildNotFound(GateReadError):
    """A build listed a moment ago is gone (cleaned up, or another store)."""

    def __init__(self, build_id: str, detail: str = "") -> None:
        self.build_id = build_id
        super().__init__(
            f"build {build_id!r} is not in the status store" + (f" ({detail})" if detail else ""),
            404,
        )


class ReadUnavailable(GateError):
    """The API server or the status store cannot answer now; read again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class GateConnectionError(GateError):
    """The gate's Airflow connection cannot be used: missing, incomplete, or its login refused."""

    def __init__(self, conn_id: str, reason: str) -> None:
        self.conn_id = conn_id
        self.reason = reason
        super().__init__(
            f"connection {conn_id!r} cannot reach the BK-CI query API: {reason}. Fix the "
            "connection: host = the API server's URL, and a token in extra "
            '({"token": "<jwt>"}) or a login and password'
        )
