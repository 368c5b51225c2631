"""``QualityGateOperator``: a DAG goes on only if other pipelines' builds meet its rules.

    from airflow_bkci.gates import GE, IN, WARN, latest_status, success_rate
    from airflow_bkci.operators import QualityGateOperator

    gate = QualityGateOperator(
        task_id="quality_gate",
        rules=[
            latest_status("build", IN, ["SUCCEED"]),
            success_rate("build", GE, 0.9, last=20, action=WARN),
        ],
    )

Rules are checked when the DAG file is parsed (:class:`GateRuleError` names the
fix). When the task runs it reads build status through the plugin's query API
as the user of the ``bkci_api`` connection (workers have no database), checks
that every pipeline, stage and task named exists, and decides:

- pass: the task succeeds; the report (every rule, expected and actual) is its
  XCom, and is logged as a warning when WARN rules failed;
- fail: an END rule failed or a pipeline cannot be read: the task fails
  without retries, the report is the error;
- wait: a rule looks at a build that has not ended: the task defers to
  :class:`QualityGateTrigger` (no worker slot held; or polls in the worker with
  ``deferrable=False``) until the builds end or ``timeout`` passes; a rule whose
  build never ended then counts as failed for its action;
- audit: AUDIT rules failed: a person approves or rejects through Airflow's
  human-in-the-loop support (UI "required actions", or the REST API); without
  an answer in ``audit_timeout`` the gate takes ``audit_default``.

Each step shows on the gate's task in the build tree as a BK-CI gate status
(QUALITY_CHECK_WAIT, QUALITY_CHECK_PASS, QUALITY_CHECK_FAIL) with a one-line
summary, and so in every channel's stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_bkci.gates.errors import GateReadError, GateRuleError
from airflow_bkci.gates.evaluate import Decision, GateResult, stop_waiting
from airflow_bkci.gates.rules import Rule, parse_rules
from airflow_bkci.gates.values import BadValue, format_duration, parse_duration

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_bkci.gates.access import ApiAccess
    from airflow_bkci.gates.reader import RestBuildReader

__all__ = [
    "APPROVE",
    "DEFAULT_CONN_ID",
    "QUALITY_CHECK_FAIL",
    "QUALITY_CHECK_PASS",
    "QUALITY_CHECK_WAIT",
    "REJECT",
    "QualityGateOperator",
]

DEFAULT_CONN_ID = "bkci_api"
DEFAULT_TIMEOUT = timedelta(hours=1)
DEFAULT_POLL_INTERVAL = 30.0  # as triggers.quality_gate, which DAG parsing should not import
DEFAULT_AUDIT_TIMEOUT = timedelta(hours=24)
DEFER_GRACE = timedelta(minutes=5)
"""Beyond the deadline, before Airflow's own defer timeout; the trigger ends the wait first."""

QUALITY_CHECK_WAIT = "QUALITY_CHECK_WAIT"
QUALITY_CHECK_PASS = "QUALITY_CHECK_PASS"
QUALITY_CHECK_FAIL = "QUALITY_CHECK_FAIL"

APPROVE, REJECT = "Approve", "Reject"
"""The options a person is given, as Airflow's ApprovalOperator names them."""

AuditDefault = Literal["approve", "reject"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _duration(name: str, value: Any) -> timedelta:
    try:
        span = parse_duration(value, name)
    except BadValue as bad:
        raise GateRuleError.one(bad.problem, bad.fix) from None
    if span <= timedelta(0):
        raise GateRuleError.one(f"{name} {value!r} is not positive", f"give {name} > 0")
    return span


def _audit_default(value: Any) -> AuditDefault:
    text = str(value).strip().lower()
    if text not in ("approve", "reject"):
        raise GateRuleError.one(
            f"audit_default {value!r} is neither 'approve' nor 'reject'",
            "say what the gate does when nobody answers in audit_timeout: 'reject' (fail) "
            "or 'approve' (pass)",
        )
    return "approve" if text == "approve" else "reject"


class QualityGateOperator(BaseOperator):
    """Pass, fail, wait for, or ask a person about, rules over other pipelines' build status.

    :param rules: :class:`~airflow_bkci.gates.Rule` objects, rule dicts, or JSON text.
    :param conn_id: connection to the Airflow API server (base URL, and a token or a
        login); its user must be able to read every pipeline the rules name.
    :param deferrable: wait for running builds in the triggerer (default) or in the worker.
    :param timeout: longest wait for running builds; then a rule still waiting counts as
        failed for its action.
    :param poll_interval: seconds between reads while waiting.
    :param audit_timeout: longest wait for a person's answer to failed AUDIT rules
        (None: no limit).
    :param audit_default: what the gate does when nobody answers: ``"reject"`` or
        ``"approve"``.
    """

    template_fields = ()
    ui_color = "#c9e4b4"

    def __init__(
        self,
        *,
        rules: str | bytes | Iterable[Rule | Mapping[str, Any]],
        conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = True,
        timeout: timedelta | float | str = DEFAULT_TIMEOUT,
        poll_interval: timedelta | float | str = DEFAULT_POLL_INTERVAL,
        audit_timeout: timedelta | float | str | None = DEFAULT_AUDIT_TIMEOUT,
        audit_default: AuditDefault = "reject",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rules: tuple[Rule, ...] = parse_rules(rules)
        self.conn_id = conn_id
        self.deferrable = deferrable
        self.timeout = _duration("timeout", timeout)
        self.poll_interval = _duration("poll_interval", poll_interval).total_seconds()
        self.audit_timeout = (
            None if audit_timeout is None else _duration("audit_timeout", audit_timeout)
        )
        self.audit_default: AuditDefault = _audit_default(audit_default)

    # ------------------------------------------------------------ entry points
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_bkci.gates.reader import RestBuildReader
        from airflow_bkci.gates.references import check_references

        deadline = _now() + self.timeout
        access = self._access(context)
        links = _link_base(access)
        with RestBuildReader(access.base_url, access.token, timeout=access.timeout) as reader:
            try:
                check_references(self.rules, reader)
            except GateRuleError as exc:
                self._fail_before_start(context, exc)
            except GateReadError as exc:  # a token refused, no query API at that URL
                self._fail_plainly(context, f"Quality gate {self.task_id!r} cannot start: {exc}")
            result = self._evaluate(reader)
            if result.decision is Decision.WAIT and not self.deferrable:
                result = self._poll(context, reader, result, deadline, links)
        return self._act(context, result, deadline, links)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any],
        deadline: str,
        link_base: str | None = None,
    ) -> dict[str, Any]:
        """Where the task resumes when :class:`QualityGateTrigger` fires."""
        from airflow_bkci.gates.serde import result_from_json
        from airflow_bkci.triggers.quality_gate import ERROR, TIMEOUT

        outcome = event.get("outcome")
        if outcome == ERROR:
            self._fail_plainly(context, f"Quality gate cannot read build status: {event['error']}")
        if outcome == TIMEOUT and event.get("result") is None:
            self._fail_plainly(
                context,
                f"Quality gate timed out after {format_duration(self.timeout)} without reading "
                f"build status: {event.get('error') or 'no answer'}",
            )
        if outcome == TIMEOUT and event.get("error"):
            # The deadline passed while the API could not answer: an old "wait"
            # must not be judged as if the builds had been read at the end.
            self._fail_plainly(
                context,
                f"Quality gate timed out after {format_duration(self.timeout)}; the last read "
                f"failed: {event['error']}",
            )
        result = result_from_json(event["result"])
        if outcome == TIMEOUT:
            result = self._give_up(result)
        return self._act(context, result, datetime.fromisoformat(deadline), link_base)

    def execute_audit_complete(
        self,
        context: Context,
        event: dict[str, Any],
        result: dict[str, Any],
        link_base: str | None = None,
    ) -> dict[str, Any]:
        """Where the task resumes once a person answered, or ``audit_timeout`` passed."""
        from airflow_bkci.gates.report import render_report, report_dict, summary_line
        from airflow_bkci.gates.serde import result_from_json

        gate = result_from_json(result)
        if "error" in event:  # no answer and no default: only if Airflow dropped our default
            self._fail_plainly(context, f"Quality gate got no approval: {event['error']}")
        approved = list(event.get("chosen_options") or []) == [APPROVE]
        who = event.get("responded_by_user")
        by = f"by {who['name']}" if who else self._nobody_answered()
        audit = {"approved": approved, "by": who["name"] if who else None, "timed_out": not who}
        report = {**report_dict(gate, link_base), "audit": audit}
        verdict = f"{'approved' if approved else 'rejected'} {by}"
        if approved:
            self.log.warning("Quality gate %s\n%s", verdict, render_report(gate, link_base))
            self._show(context, QUALITY_CHECK_PASS, f"{verdict}; {summary_line(gate)}")
            return report
        self._show(context, QUALITY_CHECK_FAIL, f"{verdict}; {summary_line(gate)}")
        self._push(context, report)
        raise AirflowFailException(f"Quality gate {verdict}\n\n{render_report(gate, link_base)}")

    def resume_execution(
        self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context
    ) -> Any:
        from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout

        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except (TaskDeferralError, TaskDeferralTimeout) as exc:
            # The trigger died or Airflow's defer timeout beat it: still say so on the gate.
            self._show(context, QUALITY_CHECK_FAIL, f"the gate's wait ended abnormally: {exc}")
            raise

    # ------------------------------------------------------------ deciding
    def _act(
        self, context: Context, result: GateResult, deadline: datetime, links: str | None
    ) -> dict[str, Any]:
        if result.decision is Decision.WAIT:
            if self.deferrable and _now() < deadline:
                self._defer(context, result, deadline, links)
            result = self._give_up(result)
        if result.decision is Decision.FAIL:
            self._fail(context, result, links)
        if result.decision is Decision.AUDIT:
            self._ask(context, result, links)
        return self._pass(context, result, links)

    def _pass(self, context: Context, result: GateResult, links: str | None) -> dict[str, Any]:
        from airflow_bkci.gates.report import render_report, report_dict, summary_line

        text = render_report(result, links)
        if result.warnings:
            self.log.warning("%s", text)
        else:
            self.log.info("%s", text)
        self._show(context, QUALITY_CHECK_PASS, summary_line(result))
        return report_dict(result, links)

    def _fail(self, context: Context, result: GateResult, links: str | None) -> NoReturn:
        from airflow_bkci.gates.report import render_report, report_dict, summary_line

        self._show(context, QUALITY_CHECK_FAIL, summary_line(result))
        self._push(context, report_dict(result, links))
        raise AirflowFailException(render_report(result, links))

    def _defer(
        self, context: Context, result: GateResult, deadline: datetime, links: str | None
    ) -> NoReturn:
        from airflow_bkci.gates.report import render_report, summary_line
        from airflow_bkci.triggers.quality_gate import QualityGateTrigger

        self.log.info("%s", render_report(result, links))
        self._show(context, QUALITY_CHECK_WAIT, summary_line(result))
        trigger = QualityGateTrigger(
            rules=[rule.to_dict() for rule in self.rules],
            conn_id=self.conn_id,
            deadline=deadline,
            poll_interval=self.poll_interval,
            link_base=links,
        )
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            kwargs={"deadline": deadline.isoformat(), "link_base": links},
            timeout=max(deadline - _now(), timedelta(0)) + DEFER_GRACE,
        )

    def _ask(self, context: Context, result: GateResult, links: str | None) -> NoReturn:
        """Park the task in Airflow's awaiting_input state with an Approve/Reject request."""
        from airflow.sdk.exceptions import TaskAwaitingInput
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        from airflow_bkci.gates.report import headline, render_report, summary_line
        from airflow_bkci.gates.serde import result_to_json

        text = render_report(result, links)
        self.log.warning("%s", text)
        default = APPROVE if self.audit_default == "approve" else REJECT
        upsert_hitl_detail(
            ti_id=context["ti"].id,
            options=[APPROVE, REJECT],
            subject=f"Quality gate {self.task_id!r}: {headline(result)}",
            body=self._audit_body(text, default),
            defaults=[default],
            multiple=False,
            params={},
        )
        self._show(context, QUALITY_CHECK_WAIT, f"waiting for approval; {summary_line(result)}")
        raise TaskAwaitingInput(
            method_name="execute_audit_complete",
            kwargs={"result": result_to_json(result), "link_base": links},
            timeout=self.audit_timeout,
        )

    def _audit_body(self, report: str, default: str) -> str:
        limit = (
            f"Without an answer within {format_duration(self.audit_timeout)} the gate takes "
            f"**{default}**."
            if self.audit_timeout is not None
            else "The gate waits for an answer without a time limit."
        )
        return (
            f"AUDIT rules of this quality gate failed. **{APPROVE}** lets the pipeline go on; "
            f"**{REJECT}** fails the gate. {limit}\n\n```text\n{report}\n```"
        )

    def _nobody_answered(self) -> str:
        after = format_duration(self.audit_timeout) if self.audit_timeout else "the timeout"
        return f"by default ({self.audit_default}): nobody answered within {after}"

    # ------------------------------------------------------------ reading
    def _access(self, context: Context) -> ApiAccess:
        from airflow_bkci.gates.access import api_access
        from airflow_bkci.gates.errors import GateConnectionError

        try:
            return api_access(self.conn_id)
        except GateConnectionError as exc:  # a retry would meet the same connection
            self._fail_plainly(context, f"Quality gate cannot start: {exc}")

    def _evaluate(self, reader: RestBuildReader) -> GateResult:
        from airflow_bkci.gates.evaluate import evaluate

        return evaluate(self.rules, reader)

    def _poll(
        self,
        context: Context,
        reader: RestBuildReader,
        result: GateResult,
        deadline: datetime,
        links: str | None,
    ) -> GateResult:
        """Wait in the worker (``deferrable=False``) until no rule waits, or the deadline."""
        from airflow_bkci.gates.errors import ReadUnavailable
        from airflow_bkci.gates.report import headline, summary_line
        from airflow_bkci.triggers.quality_gate import next_delay

        self._show(context, QUALITY_CHECK_WAIT, summary_line(result))
        delay = self.poll_interval
        while result.decision is Decision.WAIT:
            left = (deadline - _now()).total_seconds()
            if left <= 0:
                return result  # _act gives up on what still waits
            self.log.info("%s; next read in %.0f s", headline(result), min(delay, left))
            time.sleep(min(delay, left))
            try:
                result, delay = self._evaluate(reader), self.poll_interval
            except ReadUnavailable as exc:
                delay = next_delay(delay, self.poll_interval, exc.retry_after)
                self.log.warning("%s; reading again in %.0f s", exc, delay)
        return result

    def _give_up(self, result: GateResult) -> GateResult:
        return stop_waiting(result, f"the gate's timeout ({format_duration(self.timeout)}) passed")

    # ------------------------------------------------------------ reporting
    def _show(self, context: Context, status: str, summary: str) -> None:
        """The gate status on this task in the build tree (spooled; never raises)."""
        from airflow_bkci.listeners.worker import record_quality_check

        record_quality_check(context["ti"], status, summary)

    def _push(self, context: Context, report: dict[str, Any]) -> None:
        # A failed task returns nothing: put the report where a passing gate's goes.
        context["ti"].xcom_push(key="return_value", value=report)

    def _fail_before_start(self, context: Context, exc: GateRuleError) -> NoReturn:
        problems = "; ".join(str(p) for p in exc.problems)
        self._show(context, QUALITY_CHECK_FAIL, f"rules cannot be checked: {problems}")
        raise AirflowFailException(f"Quality gate {self.task_id!r} cannot start: {exc}") from None

    def _fail_plainly(self, context: Context, message: str) -> NoReturn:
        self._show(context, QUALITY_CHECK_FAIL, message)
        raise AirflowFailException(message)


def _link_base(access: ApiAccess) -> str:
    """The UI's base URL for report links: ``[api] base_url``, else the connection's server."""
    from airflow_bkci import conf

    return str(conf.api_base_url() or access.base_url).rstrip("/")
