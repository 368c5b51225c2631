"""What a caller asks to cancel, and what came of it, as plain data."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow_bkci.exceptions import BkciError
from airflow_bkci.model.event import build_id_for

RunKey = tuple[str, str]
"""(dag_id, run_id) of one build."""

CANCELABLE_RUN_STATES = ("queued", "running")
MAX_REASON = 500
MAX_USER = 250


class CancelRejected(BkciError):
    """The request was refused before anything changed; ``problems`` says why."""

    def __init__(self, problems: Sequence[str], *, status: int = 400) -> None:
        self.problems = list(problems)
        self.status = status
        super().__init__("; ".join(self.problems))


class CancelForbidden(CancelRejected):
    """The caller may not change some of the DAGs the cancel would touch; nothing changed."""

    def __init__(self, message: str, dags: Sequence[str]) -> None:
        self.dags = sorted(dags)
        super().__init__([message], status=403)


class CancelIncomplete(BkciError):
    """A chunked cancel stopped part-way: ``result`` holds the batches that committed."""

    def __init__(self, result: CancelResult, total: int, cause: BaseException) -> None:
        self.result = result
        self.total = total
        done = len(result.builds)
        super().__init__(
            f"chunked cancel {result.cancel_id} stopped after {done} of {total} builds "
            f"({result.batches} atomic batches committed, none of the rest changed): {cause}"
        )


@dataclass(frozen=True)
class RunFilter:
    """Which builds to cancel when no ids are given; every part narrows the set.

    ``older_than`` and ``due_before`` compare with the run's ``run_after`` (when it
    was due: "earlier runs" are the ones due before);
    ``conf`` keeps the runs whose conf holds every given key with that value.
    """

    dag_ids: Sequence[str] = ()
    states: Sequence[str] = CANCELABLE_RUN_STATES
    older_than: timedelta | None = None
    due_before: datetime | None = None
    conf: Mapping[str, Any] | None = None
    exclude: Sequence[RunKey] = ()

    def problems(self) -> list[str]:
        found = [
            f"state {s!r} cannot be canceled" for s in self.states if s not in CANCELABLE_RUN_STATES
        ]
        if not self.states:
            found.append("a filter needs at least one state")
        if self.older_than is not None and self.older_than.total_seconds() < 0:
            found.append("older_than must not be negative")
        if self.due_before is not None and self.due_before.tzinfo is None:
            found.append("due_before needs a time zone")
        return found


@dataclass(frozen=True)
class CancelRequest:
    """One cancel: explicit builds (``runs``) or a ``filter``, never both."""

    reason: str
    user: str
    runs: Sequence[RunKey] = ()
    filter: RunFilter | None = None
    dry_run: bool = False
    chunked: bool = False  # above the atomic limit: atomic batches of the limit, in turn
    source: str = "api"  # who asked: api, cli, operator, cancel-previous

    def problems(self) -> list[str]:
        found: list[str] = []
        if not self.reason or not self.reason.strip():
            found.append("a reason is required")
        elif len(self.reason) > MAX_REASON:
            found.append(f"the reason is {len(self.reason)} characters; at most {MAX_REASON}")
        if not self.user or not self.user.strip():
            found.append("the acting user is required")
        elif len(self.user) > MAX_USER:
            found.append(f"the user name is longer than {MAX_USER} characters")
        if self.runs and self.filter is not None:
            found.append("give builds or a filter, not both")
        if not self.runs and self.filter is None:
            found.append("no builds given: pass build ids or a filter")
        for key in self.runs[:1000]:
            if not (
                isinstance(key, tuple)
                and len(key) == 2
                and all(isinstance(p, str) and p for p in key)
            ):
                found.append(f"not a (dag_id, run_id) pair: {key!r}")
                break
        if self.filter is not None:
            found.extend(self.filter.problems())
        return found


class Outcome(str, enum.Enum):
    """What the cancel did to one build."""

    CANCELED = "canceled"  # run ended, tasks failed/skipped
    CANCELED_TEARDOWN_RUNNING = "canceled_teardown_running"  # teardowns left to run
    ALREADY_FINISHED = "already_finished"  # nothing to do: reported, not an error
    ALREADY_CANCELED = "already_canceled"  # canceled before; its teardowns still run


@dataclass
class BuildResult:
    """One build of the batch: what it was, what happened, which tasks changed."""

    dag_id: str
    run_id: str
    outcome: Outcome
    prior_state: str
    state: str  # the run's state after the cancel (or as found)
    failed: list[str] = field(default_factory=list)  # task keys killed: task_id or task_id[i]
    skipped: list[str] = field(default_factory=list)  # never started, now skipped
    teardowns: list[str] = field(default_factory=list)  # left running as the clean-up

    @property
    def build_id(self) -> str:
        return build_id_for(self.dag_id, self.run_id)

    @property
    def changed(self) -> bool:
        return self.outcome in (Outcome.CANCELED, Outcome.CANCELED_TEARDOWN_RUNNING)

    def to_json(self) -> dict[str, Any]:
        return {
            "build_id": self.build_id,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "outcome": self.outcome.value,
            "prior_state": self.prior_state,
            "state": self.state,
            "failed_tasks": self.failed,
            "skipped_tasks": self.skipped,
            "teardown_tasks": self.teardowns,
        }


@dataclass
class CancelResult:
    """The whole batch: one entry per distinct build, in lock order."""

    cancel_id: str
    dry_run: bool
    builds: list[BuildResult]
    duplicates: list[RunKey] = field(default_factory=list)
    attempts: int = 1
    batches: int = 1
    committed_at: datetime | None = None
    seconds: float = 0.0  # validation, locks, updates, notes, markers, audit rows, commit

    def count(self, outcome: Outcome) -> int:
        return sum(1 for b in self.builds if b.outcome is outcome)

    @property
    def changed(self) -> list[BuildResult]:
        return [b for b in self.builds if b.changed]

    def to_json(self) -> dict[str, Any]:
        return {
            "cancel_id": self.cancel_id,
            "dry_run": self.dry_run,
            "summary": {o.value: self.count(o) for o in Outcome},
            "builds": [b.to_json() for b in self.builds],
            "duplicates": [{"dag_id": d, "run_id": r} for d, r in self.duplicates],
            "attempts": self.attempts,
            "batches": self.batches,
            "committed_at": self.committed_at.isoformat() if self.committed_at else None,
            "seconds": round(self.seconds, 4),
        }
