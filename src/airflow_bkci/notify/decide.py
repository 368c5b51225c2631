"""Whether a build document calls for a notice, and which: the notification state machine.

Fed with build documents from the status stream, in any order and as often
as they are resent. A notice goes out only for a build that is over: its
status is final and no task is still retrying or running. A try that will
retry is RETRY and keeps the run RUNNING in Airflow; a document that says
FAILED while a task is RETRY is behind and waits for the next one, and so
does a canceled build whose teardown tasks still run.

FAILED
    the build ended FAILED.
CANCELED
    the build was canceled, when :attr:`NotifyPolicy.canceled` is on.
RECOVERED
    the build SUCCEEDED and the pipeline's latest build before it that
    counts ended FAILED (or CANCELED, when CANCELED notices are on: a
    canceled build nobody heard about is nothing to recover from).

"Before" is by end time, not by arrival: two builds of one pipeline that
end close together give the same answers whichever document comes first.

Each notice has a :attr:`Notice.dedupe_key` built from (build id, kind,
clear number): the same execution of a build gives the same key however
often it is decided, in this process or after a restart, so a
:class:`~airflow_bkci.notify.sentlog.SentLog` lets it out once. A clear of
the build is a new execution with a new key.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_bkci.model.status import BuildStatus
from airflow_bkci.notify.root_cause import (
    FailedTask,
    iter_tasks,
    parse_time,
    root_causes,
    upstream_failed,
)

__all__ = [
    "NOTIFY_CANCELED_OPTION",
    "NOTIFY_RECOVERED_OPTION",
    "BuildOutcome",
    "BuildSummary",
    "Notice",
    "NoticeKind",
    "NotifyPolicy",
    "PipelineWatch",
    "Skip",
    "decide",
    "dedupe_key",
]

NOTIFY_CANCELED_OPTION = "notify_canceled"
"""``[bkci]`` option (boolean, default False): send CANCELED notices."""
NOTIFY_RECOVERED_OPTION = "notify_recovered"
"""``[bkci]`` option (boolean, default True): send RECOVERED notices."""

S = BuildStatus
_OLDEST = datetime.min.replace(tzinfo=timezone.utc)


class NoticeKind(str, enum.Enum):
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    RECOVERED = "RECOVERED"


@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    """Which kinds of notice are wanted (FAILED always is)."""

    canceled: bool = False
    recovered: bool = True


@dataclass(frozen=True, slots=True)
class BuildOutcome:
    """How one finished execution of a build ended: one entry of a pipeline's history.

    ``execute_count`` is None when the source does not say (the store's build
    list has only each build's latest execution).
    """

    build_id: str
    status: BuildStatus
    ended_at: datetime | None = None
    execute_count: int | None = None
    failed_tasks: tuple[str, ...] = ()  # task ids of the root causes, when known

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> BuildOutcome | None:
        """The outcome of a build document; None while the build is not over."""
        status = BuildStatus(document["status"])
        if not _is_over(status):
            return None
        return cls(
            build_id=str(document["id"]),
            status=status,
            ended_at=parse_time(document.get("ended_at")),
            execute_count=int(document.get("execute_count") or 1),
            failed_tasks=tuple(dict.fromkeys(t.task_id for t in root_causes(document))),
        )

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> BuildOutcome | None:
        """The outcome of a build as the query API lists it (``id``, ``status``, ``ended_at``)."""
        status = BuildStatus(summary["status"])
        if not _is_over(status):
            return None
        return cls(str(summary["id"]), status, parse_time(summary.get("ended_at")))

    @property
    def is_failure(self) -> bool:
        return self.status in (S.FAILED, S.CANCELED)


@dataclass(frozen=True, slots=True)
class BuildSummary:
    """What a message says about the build itself, copied out of its document."""

    build_id: str
    pipeline_id: str
    run_id: str
    build_num: int | None
    status: BuildStatus
    execute_count: int
    run_type: str | None = None
    trigger_type: str | None = None
    triggering_user: str | None = None
    logical_date: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    note: str | None = None
    cancel_reason: str | None = None
    canceled_by: str | None = None

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> BuildSummary:
        return cls(
            build_id=str(document["id"]),
            pipeline_id=str(document["pipeline_id"]),
            run_id=str(document["run_id"]),
            build_num=document.get("build_num"),
            status=BuildStatus(document["status"]),
            execute_count=int(document.get("execute_count") or 1),
            run_type=document.get("run_type"),
            trigger_type=document.get("trigger_type"),
            triggering_user=document.get("triggering_user"),
            logical_date=document.get("logical_date"),
            started_at=parse_time(document.get("started_at")),
            ended_at=parse_time(document.get("ended_at")),
            duration_ms=document.get("duration_ms"),
            note=document.get("note"),
            cancel_reason=document.get("cancel_reason"),
            canceled_by=document.get("canceled_by"),
        )

    @property
    def clear_number(self) -> int:
        return self.execute_count - 1


def dedupe_key(build_id: str, kind: NoticeKind, clear_number: int) -> str:
    """The idempotency key of one notice: one per build, kind and clear of the run."""
    return f"bkci-notice/{build_id}/{kind.value.lower()}/{clear_number}"


@dataclass(frozen=True, slots=True)
class Notice:
    """A message that should go out (once) about one build."""

    kind: NoticeKind
    build: BuildSummary
    root_causes: tuple[FailedTask, ...] = ()
    upstream_failed: tuple[str, ...] = ()  # node ids that never ran because of them
    # FAILED: the failed builds right before this one (a streak); RECOVERED:
    # the failed builds it recovers from. Oldest first.
    previous_failures: tuple[BuildOutcome, ...] = ()

    @property
    def dedupe_key(self) -> str:
        return dedupe_key(self.build.build_id, self.kind, self.build.clear_number)

    @property
    def pipeline_id(self) -> str:
        return self.build.pipeline_id

    @property
    def failing_for(self) -> int:
        """Failed builds in a row, this one included for FAILED and CANCELED."""
        own = 0 if self.kind is NoticeKind.RECOVERED else 1
        return len(self.previous_failures) + own


@dataclass(frozen=True, slots=True)
class Skip:
    """No notice, and why (for a debug log)."""

    reason: str


def decide(
    document: Mapping[str, Any],
    history: Iterable[BuildOutcome] = (),
    policy: NotifyPolicy = NotifyPolicy(),
) -> Notice | Skip:
    """The notice ``document`` calls for, given earlier outcomes of its pipeline.

    ``history`` may hold anything known about the pipeline's builds, in any
    order, this build's own earlier executions and even this very outcome
    included; what ended after this build, or is this outcome itself, is
    left out. Pure: the same inputs give the same answer.
    """
    build = BuildSummary.from_document(document)
    if not _is_over(build.status):
        return Skip(f"build {build.build_id} is {build.status.value}: not over yet")
    busy = _busy_task(document)
    if busy is not None:
        return Skip(f"build {build.build_id} is {build.status.value} but task {busy} is not done")
    earlier = _earlier_failures(build, history, policy)
    if build.status is S.SUCCEED or build.status is S.SKIP:
        if not earlier:
            return Skip(f"build {build.build_id} succeeded after a success (or first build)")
        if not policy.recovered:
            return Skip(f"[bkci] {NOTIFY_RECOVERED_OPTION} is off")
        return Notice(NoticeKind.RECOVERED, build, previous_failures=earlier)
    if build.status is S.CANCELED and not policy.canceled:
        return Skip(f"build {build.build_id} was canceled; [bkci] {NOTIFY_CANCELED_OPTION} is off")
    kind = NoticeKind.CANCELED if build.status is S.CANCELED else NoticeKind.FAILED
    return Notice(
        kind,
        build,
        root_causes=tuple(root_causes(document)),
        upstream_failed=tuple(upstream_failed(document)),
        previous_failures=earlier,
    )


def _is_over(status: BuildStatus) -> bool:
    return status.is_finished and status is not S.RETRY and status is not S.UNEXEC


def _busy_task(document: Mapping[str, Any]) -> str | None:
    """A task that will still change the outcome: retrying or running."""
    for _, task in iter_tasks(document):
        status = BuildStatus(task["status"])
        if status is S.RETRY or status.is_running:
            return f"{task['id']} ({status.value})"
    return None


def _earlier_failures(
    build: BuildSummary, history: Iterable[BuildOutcome], policy: NotifyPolicy
) -> tuple[BuildOutcome, ...]:
    """The failed outcomes that directly precede this build, oldest first."""
    relevant = [
        outcome
        for outcome in history
        if _precedes(outcome, build) and (outcome.status is not S.CANCELED or policy.canceled)
    ]
    # Ties in end time are broken by ids, never by the order history came in,
    # so the store's listing order cannot change an answer.
    relevant.sort(
        key=lambda o: (o.ended_at or _OLDEST, o.build_id, o.execute_count or 0, o.status.value)
    )
    streak: list[BuildOutcome] = []
    for outcome in reversed(relevant):
        if not outcome.is_failure:
            break
        streak.append(outcome)
    return tuple(reversed(streak))


def _precedes(outcome: BuildOutcome, build: BuildSummary) -> bool:
    if outcome.build_id == build.build_id:
        if outcome.execute_count is not None and outcome.execute_count > build.execute_count:
            return False  # a later execution of this build
        same_execution = outcome.execute_count in (None, build.execute_count)
        if same_execution and outcome.status is build.status:
            return False  # this very outcome, seen before
    if outcome.ended_at is not None and build.ended_at is not None:
        return outcome.ended_at <= build.ended_at
    return True


@dataclass
class PipelineWatch:
    """The state machine over the status stream: decides, then remembers the outcome.

    Keeps the last ``keep`` outcomes per pipeline in memory, one per
    execution of a build (a later document of the same execution replaces
    the earlier). After a restart, :meth:`seed` it from the store
    (``BuildOutcome.from_summary`` of the pipeline's latest builds); the
    dedupe keys make a resent document harmless whatever the watch remembers.
    """

    policy: NotifyPolicy = field(default_factory=NotifyPolicy)
    keep: int = 20
    _history: dict[str, list[BuildOutcome]] = field(default_factory=dict, repr=False)

    def observe(self, document: Mapping[str, Any]) -> Notice | Skip:
        """Decide on ``document``, then remember its outcome once the build has settled."""
        pipeline_id = str(document["pipeline_id"])
        verdict = decide(document, self.outcomes(pipeline_id), self.policy)
        if _busy_task(document) is None:
            self._remember(pipeline_id, BuildOutcome.from_document(document))
        return verdict

    def seed(self, pipeline_id: str, outcomes: Iterable[BuildOutcome | None]) -> None:
        """Add outcomes known from elsewhere (the store after a restart); skips None."""
        for outcome in outcomes:
            self._remember(pipeline_id, outcome)

    def outcomes(self, pipeline_id: str) -> tuple[BuildOutcome, ...]:
        return tuple(self._history.get(pipeline_id, ()))

    def _remember(self, pipeline_id: str, outcome: BuildOutcome | None) -> None:
        if outcome is None:
            return
        entries = [
            kept
            for kept in self._history.get(pipeline_id, [])
            if not _same_execution(kept, outcome)
        ]
        entries.append(outcome)
        self._history[pipeline_id] = entries[-self.keep :]


def _same_execution(a: BuildOutcome, b: BuildOutcome) -> bool:
    if a.build_id != b.build_id:
        return False
    return a.execute_count is None or b.execute_count is None or a.execute_count == b.execute_count
