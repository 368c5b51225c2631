"""Evaluating a gate's rules against build status read through a reader.

Each rule comes out passed, failed, pending (the build or node it looks at is
still running), unknown (nothing to judge: no matching build, no such node) or
error (the read was refused, e.g. no permission). :class:`GateResult` turns
them into one decision. Reads that may work later (:class:`ReadUnavailable`)
are not caught: the caller reads again after a while.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from airflow_bkci.gates.builds import (
    AsyncBuildReader,
    BuildQuery,
    BuildReader,
    BuildSummary,
    NodeHit,
    Snapshot,
    find_node,
    names_in,
    node_ids,
)
from airflow_bkci.gates.errors import BuildNotFound, GateReadError, PipelineNotFound
from airflow_bkci.gates.rules import Rule
from airflow_bkci.gates.terms import FINAL_STATUSES, Action, Indicator
from airflow_bkci.gates.values import did_you_mean, format_duration, format_rate
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.stats import percentile

__all__ = [
    "Decision",
    "GateResult",
    "Outcome",
    "RuleResult",
    "evaluate",
    "evaluate_async",
    "query_for",
    "stop_waiting",
]


class Outcome(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    PENDING = "pending"
    """The build or node the rule looks at has not ended: the gate must wait."""
    UNKNOWN = "unknown"
    """Nothing to judge (no matching build, no such node): counts as failed for its action."""
    ERROR = "error"
    """The read was refused (no permission, bad answer): fails the gate whatever the action."""


class Decision(str, enum.Enum):
    """What the gate does: FAIL beats WAIT beats AUDIT beats PASS."""

    PASS = "pass"
    WAIT = "wait"
    AUDIT = "audit"
    FAIL = "fail"

    @property
    def quality_check(self) -> str:
        """BK-CI's name for this state of a quality gate (not a :class:`BuildStatus`)."""
        if self is Decision.PASS:
            return "QUALITY_CHECK_PASS"
        if self is Decision.FAIL:
            return "QUALITY_CHECK_FAIL"
        return "QUALITY_CHECK_WAIT"


@dataclass(frozen=True)
class RuleResult:
    """One rule's outcome, with the expected and actual values as people read them.

    ``build`` is the build the rule looked at (status rules), ``node`` the stage
    or task it found there; ``reason`` says what to do for pending, unknown and
    error outcomes.
    """

    index: int
    rule: Rule
    outcome: Outcome
    expected: str
    actual: str
    build: BuildSummary | None = None
    node: NodeHit | None = None
    reason: str | None = None

    @property
    def counts_as_failed(self) -> bool:
        """Failed, or nothing to judge: either way the rule did not show it holds."""
        return self.outcome in (Outcome.FAILED, Outcome.UNKNOWN)


@dataclass(frozen=True)
class GateResult:
    """Every rule's result and the decision they make together."""

    results: tuple[RuleResult, ...]
    checked_at: datetime

    def _failed(self, action: Action) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.counts_as_failed and r.rule.action is action)

    @property
    def errors(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.outcome is Outcome.ERROR)

    @property
    def failures(self) -> tuple[RuleResult, ...]:
        """What fails the gate: unreadable rules, and END rules that failed."""
        return self.errors + self._failed(Action.END)

    @property
    def audits(self) -> tuple[RuleResult, ...]:
        return self._failed(Action.AUDIT)

    @property
    def warnings(self) -> tuple[RuleResult, ...]:
        return self._failed(Action.WARN)

    @property
    def pending(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.outcome is Outcome.PENDING)

    @property
    def waiting_on(self) -> tuple[BuildSummary, ...]:
        """The running builds the pending rules wait for, once each."""
        builds = {r.build["id"]: r.build for r in self.pending if r.build is not None}
        return tuple(builds.values())

    @property
    def decision(self) -> Decision:
        # An END failure is final whatever is still running; an approval is
        # asked only once every rule is known, so nobody approves half a picture.
        if self.failures:
            return Decision.FAIL
        if self.pending:
            return Decision.WAIT
        if self.audits:
            return Decision.AUDIT
        return Decision.PASS


def stop_waiting(result: GateResult, why: str) -> GateResult:
    """The result once the gate stops waiting (its timeout): each pending rule is unknown.

    An unknown rule counts as failed for its own action, so a WARN rule on a
    build that never ended warns, and an END rule fails the gate. ``why`` says
    what ran out, e.g. ``the gate's timeout (1h) passed``.
    """
    settled = tuple(
        replace(
            r,
            outcome=Outcome.UNKNOWN,
            actual=f"{r.actual}; still not ended",
            reason=f"{r.reason or 'the build had not ended'} when {why}",
        )
        if r.outcome is Outcome.PENDING
        else r
        for r in result.results
    )
    return GateResult(settled, result.checked_at)


# ------------------------------------------------------------ reading
def query_for(rule: Rule, now: datetime) -> BuildQuery:
    """The builds a rule looks at: the latest one, or the finished ones of its window / last N."""
    since = now - rule.window if rule.window is not None else None
    if rule.indicator.is_status:
        return BuildQuery(
            rule.pipeline, since=since, run_type=rule.run_type, conf=rule.conf, limit=1
        )
    return BuildQuery(
        rule.pipeline,
        since=since,
        statuses=FINAL_STATUSES,
        run_type=rule.run_type,
        conf=rule.conf,
        limit=rule.last,
    )


def evaluate(
    rules: Sequence[Rule], reader: BuildReader, *, now: datetime | None = None
) -> GateResult:
    """Read what each rule needs and judge it; raises ReadUnavailable to be retried."""
    now = now or datetime.now(timezone.utc)
    results = []
    for index, rule in enumerate(rules):
        try:
            builds = reader.builds(query_for(rule, now))
            snapshot = reader.snapshot(builds[0]["id"]) if _needs_tree(rule, builds) else None
        except GateReadError as exc:
            results.append(unreadable(index, rule, exc))
            continue
        results.append(judge(index, rule, builds, snapshot))
    return GateResult(tuple(results), now)


async def evaluate_async(
    rules: Sequence[Rule], reader: AsyncBuildReader, *, now: datetime | None = None
) -> GateResult:
    """:func:`evaluate` for asyncio; one rule at a time, so a gate never floods the API."""
    now = now or datetime.now(timezone.utc)
    results = []
    for index, rule in enumerate(rules):
        try:
            builds = await reader.builds(query_for(rule, now))
            tree = await reader.snapshot(builds[0]["id"]) if _needs_tree(rule, builds) else None
        except GateReadError as exc:
            results.append(unreadable(index, rule, exc))
            continue
        results.append(judge(index, rule, builds, tree))
    return GateResult(tuple(results), now)


def _needs_tree(rule: Rule, builds: Sequence[BuildSummary]) -> bool:
    return rule.indicator is Indicator.NODE_STATUS and bool(builds)


def unreadable(index: int, rule: Rule, exc: GateReadError) -> RuleResult:
    """A rule whose read failed for good: unknown if nothing is there, else an error."""
    missing = isinstance(exc, PipelineNotFound | BuildNotFound)
    outcome = Outcome.UNKNOWN if missing else Outcome.ERROR
    actual = "no builds" if missing else "not readable"
    return RuleResult(index, rule, outcome, rule.expected, actual, reason=str(exc))


# ------------------------------------------------------------ judging
def judge(
    index: int,
    rule: Rule,
    builds: Sequence[BuildSummary],
    snapshot: Snapshot | None,
) -> RuleResult:
    """One rule's result from what was read for it (pure; no reads)."""
    if rule.indicator is Indicator.LATEST_STATUS:
        return _latest_status(index, rule, builds)
    if rule.indicator is Indicator.NODE_STATUS:
        return _node_status(index, rule, builds, snapshot)
    return _aggregate(index, rule, builds)


def _result(
    index: int,
    rule: Rule,
    ok: bool,
    actual: str,
    build: BuildSummary | None = None,
    node: NodeHit | None = None,
) -> RuleResult:
    outcome = Outcome.PASSED if ok else Outcome.FAILED
    return RuleResult(index, rule, outcome, rule.expected, actual, build=build, node=node)


def _no_build(index: int, rule: Rule) -> RuleResult:
    return RuleResult(
        index,
        rule,
        Outcome.UNKNOWN,
        rule.expected,
        "no build",
        reason=f"no build of {rule.pipeline!r}{_matching(rule)}: check the filters, "
        "or run the pipeline first",
    )


def _is_final(status: BuildStatus) -> bool:
    return status in FINAL_STATUSES


def _build_text(build: BuildSummary) -> str:
    return f"build #{build['build_num']}"


def _latest_status(index: int, rule: Rule, builds: Sequence[BuildSummary]) -> RuleResult:
    if not builds:
        return _no_build(index, rule)
    build = builds[0]
    status = BuildStatus(build["status"])
    if not _is_final(status):
        return RuleResult(
            index,
            rule,
            Outcome.PENDING,
            rule.expected,
            f"{status.value} ({_build_text(build)} has not ended)",
            build=build,
            reason=f"waiting for {_build_text(build)} ({build['run_id']}) of {rule.pipeline!r}",
        )
    ok = rule.comparison.holds(status, rule.threshold)
    return _result(index, rule, ok, f"{status.value} ({_build_text(build)})", build=build)


def _node_status(
    index: int, rule: Rule, builds: Sequence[BuildSummary], snapshot: Snapshot | None
) -> RuleResult:
    if not builds or snapshot is None:
        return _no_build(index, rule)
    build, name = builds[0], str(rule.node)
    build_final = _is_final(BuildStatus(build["status"]))
    hit = find_node(snapshot["document"], name)
    where = _build_text(build)
    if hit is None:
        if not build_final:
            return RuleResult(
                index,
                rule,
                Outcome.PENDING,
                rule.expected,
                f"not in {where} yet",
                build=build,
                reason=f"waiting for {where} ({build['run_id']}) to reach {name!r}",
            )
        stages, tasks = node_ids(snapshot["document"])
        return RuleResult(
            index,
            rule,
            Outcome.UNKNOWN,
            rule.expected,
            f"no {name!r} in {where}",
            build=build,
            reason=f"{where} of {rule.pipeline!r} has no stage or task {name!r}: "
            f"{did_you_mean(name, names_in(snapshot['document']), then='')}stages: "
            f"{', '.join(stages) or 'none'}; tasks: {', '.join(tasks) or 'none'}",
        )
    if not _is_final(hit.status) and not build_final:
        return RuleResult(
            index,
            rule,
            Outcome.PENDING,
            rule.expected,
            f"{hit.status.value} ({hit.kind} {name!r} of {where} has not ended)",
            build=build,
            node=hit,
            reason=f"waiting for {hit.kind} {name!r} of {where} ({build['run_id']})",
        )
    ok = rule.comparison.holds(hit.status, rule.threshold)
    actual = f"{hit.status.value} ({hit.kind} {name!r} of {where})"
    return _result(index, rule, ok, actual, build=build, node=hit)


def _aggregate(index: int, rule: Rule, builds: Sequence[BuildSummary]) -> RuleResult:
    finished = [b for b in builds if BuildStatus(b["status"]) in FINAL_STATUSES]
    filters = describe_filters(rule)
    of = f"of {len(finished)} finished builds" + (f"; {filters}" if filters else "")
    if rule.indicator is Indicator.FAILED_COUNT:
        if not finished:
            # No build to count is no evidence: a filter with a typo must not open a gate.
            return _no_finished(index, rule)
        failed = sum(1 for b in finished if b["status"] == BuildStatus.FAILED.value)
        ok = rule.comparison.holds(failed, rule.threshold)
        return _result(index, rule, ok, f"{failed} ({of})")
    if rule.indicator is Indicator.SUCCESS_RATE:
        if not finished:
            return _no_finished(index, rule)
        won = sum(1 for b in finished if b["status"] == BuildStatus.SUCCEED.value)
        rate = won / len(finished)
        ok = rule.comparison.holds(rate, rule.threshold)
        return _result(index, rule, ok, f"{format_rate(rate)} ({won} {of})")
    durations = [float(b["duration_ms"]) for b in finished if b["duration_ms"] is not None]
    p95 = percentile(durations, 95)
    if p95 is None:
        return _no_finished(index, rule)
    value = timedelta(milliseconds=p95)
    ok = rule.comparison.holds(value, rule.threshold)
    return _result(index, rule, ok, f"{format_duration(value)} (p95 {of})")


def _no_finished(index: int, rule: Rule) -> RuleResult:
    return RuleResult(
        index,
        rule,
        Outcome.UNKNOWN,
        rule.expected,
        "no finished builds",
        reason=f"no finished build of {rule.pipeline!r}{_matching(rule)}: widen the "
        "window or the filters, or wait until a build ends",
    )


def describe_filters(rule: Rule) -> str:
    """The rule's filters as words: ``conf branch='main', within the last 7d, the last 20``."""
    parts = []
    if rule.conf:
        parts.append("conf " + ", ".join(f"{k}={v!r}" for k, v in rule.conf.items()))
    if rule.run_type:
        parts.append(f"run_type {rule.run_type}")
    if rule.window is not None:
        parts.append(f"within the last {format_duration(rule.window)}")
    if rule.last is not None:
        parts.append(f"the last {rule.last}")
    return ", ".join(parts)


def _matching(rule: Rule) -> str:
    filters = describe_filters(rule)
    return f" ({filters})" if filters else ""
