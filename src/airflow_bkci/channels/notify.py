"""The notification channel: tells a failed build's owners, driven by the status stream.

A channel of the outbox dispatcher that wants no change sets
(``wants_changes = False``): for each build that changed, the dispatcher
hands it one snapshot event with the build's current document, which is
what :func:`~airflow_bkci.notify.decide` needs. The outbox gives it
durability, retries with backoff per build and dead letters, as for any
endpoint. For each document:

1. :class:`~airflow_bkci.notify.PipelineWatch` decides: FAILED, CANCELED,
   RECOVERED or nothing (a build still running, a try that will retry). The
   pipeline's earlier outcomes come from the store, so a recovery is seen
   after a restart too.
2. A notice about a build that ended longer ago than ``max_age`` is dropped
   (turning notifications on must not mail people about last month); a
   FAILED or CANCELED notice whose document is not settled yet (a root cause
   without its error summary, a task not yet in its final state) waits up to
   ``settle`` seconds (the send fails with a ``retry_after``, so the
   dispatcher asks again with a fresh document).
3. Its dedupe key is claimed in the store's sent log: every dispatcher,
   before and after a restart, sends it at most once.
4. The rate limiter lets it out, or holds it for the pipeline's digest.
5. Recipients (owners file, task owners, ``owner_links``, triggering user),
   the message, and delivery one way per connection, each way claimed on its
   own. A way that fails releases its claim and the notice's, and fails the
   send: the dispatcher retries the build's lane, and only what did not go
   out goes then.

The rate limit's counts and held notices are in the store
(:class:`~airflow_bkci.store.notice_ledger.NoticeLedger`), so HA schedulers
share one limit and a dispatcher stopped or killed in a storm loses no held
notice. Digests that fell due go out at the channel's next send (the next
change of any build) or, when nothing changes, at the dispatcher's next idle
pass (:meth:`NotifyChannel.idle`), so a quiet deployment still hears about a
storm that ended; after a restart, the first pass sends what an earlier
process held. One that cannot be delivered stays in the store and is tried
again at every send after, and between changes every ``IDLE_RETRY`` seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from airflow_bkci.channels.envelope import EVENT_SNAPSHOT
from airflow_bkci.channels.webhook import Delivery, SendResult
from airflow_bkci.exceptions import NotifierError
from airflow_bkci.model.event import utcnow
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.notify.decide import (
    BuildOutcome,
    Notice,
    NoticeKind,
    NotifyPolicy,
    PipelineWatch,
    Skip,
)
from airflow_bkci.notify.deliver import Notifiers
from airflow_bkci.notify.message import Message, compose, compose_digest
from airflow_bkci.notify.owners import OwnersRules
from airflow_bkci.notify.ratelimit import Admission, Digest, RateLimit, RateLimiter
from airflow_bkci.notify.root_cause import iter_tasks
from airflow_bkci.notify.routing import OwnerSources, Recipients, recipients_for
from airflow_bkci.notify.sentlog import SentLog, route_key
from airflow_bkci.store.notice_ledger import NoticeLedger
from airflow_bkci.store.notices import NoticeLog

if TYPE_CHECKING:
    from airflow_bkci.store.store import Store

__all__ = [
    "CHANNEL_NAME",
    "NOTICE_RETENTION",
    "NotifyChannel",
    "NotifySettings",
    "OwnerReader",
    "configured_notify_channels",
    "notify_channel_from_conf",
]

log = logging.getLogger(__name__)

CHANNEL_NAME = "bkci:notify"
"""The channel's outbox endpoint; ':' keeps it apart from every connection id."""

NOTICE_RETENTION = timedelta(days=30)
"""Sent-log keys kept this long: far beyond ``max_age``, so no pruned key is sent again."""

_PRUNE_EVERY = 3600.0
_ADMITTED = 10_000


class OwnerReader(Protocol):
    """Where task owners and ``owner_links`` of a build's DAG come from."""

    def sources(self, dag_id: str, run_id: str) -> OwnerSources: ...


@dataclass(frozen=True)
class NotifySettings:
    """What ``[bkci] notify_*`` says, as plain values."""

    policy: NotifyPolicy = field(default_factory=NotifyPolicy)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    base_url: str = "http://localhost:8080/"
    triggering_user: bool = False
    settle: float = 5.0  # seconds; 0 never waits
    max_age: float = 86400.0  # seconds; 0 no limit


@dataclass(frozen=True)
class _Failure:
    """Why a notice or digest did not go out (yet); the send reports it to the dispatcher."""

    error: str
    retry_after: float | None = None
    waiting: bool = False  # for late data (notify_settle), not a failed delivery


class _Undelivered(Exception):
    def __init__(self, errors: Sequence[Exception]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in errors))


IDLE_RETRY = 30.0
"""Seconds between idle tries of a digest whose delivery failed."""


class NotifyChannel:
    """Sends owner-routed notices for the builds the dispatcher hands it. ``send`` never raises."""

    wants_changes = False
    # One build per send: a build waiting for its error summary, or whose mail
    # failed, is retried alone, and the builds after it go on in the same pass.
    max_batch_events = 1
    # A mail server that does not answer costs its timeout per build: on a thread of
    # its own, that never holds up the webhooks and queues.
    own_thread = True

    def __init__(
        self,
        store: Store,
        notifiers: Notifiers,
        owners: OwnerReader,
        rules: Callable[[], OwnersRules | None],
        settings: NotifySettings | None = None,
        *,
        sent_log: SentLog | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = CHANNEL_NAME
        self.store = store
        self.notifiers = notifiers
        self.owners = owners
        self.rules = rules
        self.settings = settings or NotifySettings()
        self.sent_log: SentLog = sent_log if sent_log is not None else NoticeLog(store)
        self.clock = clock
        self.watch = PipelineWatch(self.settings.policy)
        self.ledger = NoticeLedger(store)
        self.limiter = RateLimiter(self.ledger, self.settings.rate_limit, clock)
        self._monotonic = monotonic
        self._last_prune = -_PRUNE_EVERY
        self._admitted: OrderedDict[str, bool] = OrderedDict()
        self._digests_checked_until: datetime | None = None  # nothing due before this
        self._idle_retry_at = 0.0

    def accepts(self, pipeline_id: str) -> bool:
        return True  # who is told is the owners file's business, not the lane's

    def send(self, events: Sequence[dict[str, Any]]) -> SendResult:
        failures: list[_Failure] = []
        try:
            for event in events:
                document = _document(event)
                if document is not None:
                    failures.extend(self._on_document(document))
            failures.extend(self._flush_digests())
            self._prune()
        except Exception as exc:  # the store or Airflow's database is away: retry the lanes
            log.warning(
                "bkci notify: %d builds not handled (%s: %s); the dispatcher retries them",
                len(events),
                type(exc).__name__,
                exc,
                exc_info=True,
            )
            return SendResult(Delivery.RETRY, error=f"{type(exc).__name__}: {exc}")
        if not failures:
            return SendResult(Delivery.DELIVERED)
        waits = [f.retry_after for f in failures if f.retry_after is not None]
        error = "; ".join(f.error for f in failures[:3])
        if len(failures) > 3:
            error += f"; and {len(failures) - 3} more"
        kind = Delivery.LATER if all(f.waiting for f in failures) else Delivery.RETRY
        return SendResult(kind, error=error, retry_after=max(waits) if waits else None)

    # -- one document ---------------------------------------------------------

    def _on_document(self, document: Mapping[str, Any]) -> list[_Failure]:
        verdict = self._observe(document)
        if isinstance(verdict, Skip):
            log.debug("bkci notify: no notice: %s", verdict.reason)
            return []
        notice = verdict
        age = self._age(notice)
        if self.settings.max_age and age is not None and age > self.settings.max_age:
            log.info(
                "bkci notify: %s %s ended %.0fs ago, more than [bkci] notify_max_age; not sent",
                notice.kind.value,
                notice.build.build_id,
                age,
            )
            return []
        waiting = self._settling(notice, document, age)
        if waiting is not None:
            return [waiting]
        return self._dispatch(notice)

    def _observe(self, document: Mapping[str, Any]) -> Notice | Skip:
        pipeline_id = str(document["pipeline_id"])
        if BuildStatus(document["status"]).is_finished:
            # Only an ended build needs its pipeline's history; the store has the
            # builds this process never saw (other dispatchers, before a restart).
            known = {o.build_id for o in self.watch.outcomes(pipeline_id)}
            listed = self.store.builds(pipeline_id, limit=self.watch.keep)
            self.watch.seed(
                pipeline_id, (BuildOutcome.from_summary(s) for s in listed if s["id"] not in known)
            )
        return self.watch.observe(document)

    def _age(self, notice: Notice) -> float | None:
        ended = notice.build.ended_at
        return None if ended is None else (self.clock() - ended).total_seconds()

    def _settling(
        self, notice: Notice, document: Mapping[str, Any], age: float | None
    ) -> _Failure | None:
        """Ask for the document again while the failure's details may still come in.

        The run's end, a task's final state and a task's error summary reach
        the store on separate paths (the scheduler's hook, the reconciler, the
        worker), so the first document that says FAILED can still lack the
        error summary or show a downstream task not yet upstream_failed.
        """
        if notice.kind is NoticeKind.RECOVERED or not self.settings.settle or age is None:
            return None
        left = self.settings.settle - max(age, 0.0)
        if left <= 0:
            return None
        missing = [t.node_id for t in notice.root_causes if not t.error]
        pending = [
            str(task["id"])
            for _, task in iter_tasks(document)
            if task.get("status") == BuildStatus.QUEUE.value
        ]
        waits = [f"the error summary of {', '.join(missing[:3])}"] if missing else []
        waits += [f"the final state of {', '.join(pending[:3])}"] if pending else []
        if not waits:
            return None
        return _Failure(
            f"build {notice.build.build_id}: waiting {left:.1f}s more for "
            f"{' and '.join(waits)} ([bkci] notify_settle)",
            retry_after=left,
            waiting=True,
        )

    def _with_failed_tasks(self, notice: Notice) -> Notice:
        """Root causes of the failures a recovery ends, for outcomes seeded from the store."""
        outcomes = []
        for outcome in notice.previous_failures:
            full = None
            if not outcome.failed_tasks:
                snap = self.store.snapshot(outcome.build_id)
                full = BuildOutcome.from_document(snap["document"]) if snap else None
            outcomes.append(full if full is not None and full.is_failure else outcome)
        return dataclasses.replace(notice, previous_failures=tuple(outcomes))

    # -- one notice -----------------------------------------------------------

    def _dispatch(self, notice: Notice) -> list[_Failure]:
        key = notice.dedupe_key
        if not self.sent_log.claim(key):
            log.debug("bkci notify: %s already went out", key)
            return []
        failures: list[_Failure] = []
        try:
            admission = self._admit(notice)
            if admission.digest is not None:  # the digest first, then the recovery
                failures.extend(self._flush_digests(admission.digest))
            if not admission.send:
                log.info(
                    "bkci notify: %s held for %s's digest ([bkci] notify_rate_limit)",
                    key,
                    notice.pipeline_id,
                )
                return failures
            recipients = self._recipients(notice)
            if not recipients:
                self._nobody(key, recipients)
                return failures
            self._deliver(compose(notice, recipients, self.settings.base_url))
        except Exception as exc:
            self.sent_log.release(key)
            failures.append(_Failure(_reason(exc)))
        return failures

    def _admit(self, notice: Notice) -> Admission:
        """The limiter's answer, asked once per notice: a retried delivery is not counted again."""
        key = notice.dedupe_key
        if key in self._admitted:
            return Admission(send=self._admitted[key])
        admission = self.limiter.admit(notice)
        self._admitted[key] = admission.send
        while len(self._admitted) > _ADMITTED:
            self._admitted.popitem(last=False)
        return admission

    def _recipients(self, notice: Notice) -> Recipients:
        build = notice.build
        if notice.kind is NoticeKind.RECOVERED:
            notice = self._with_failed_tasks(notice)
        sources = self.owners.sources(build.pipeline_id, build.run_id)
        recipients = recipients_for(
            notice,
            self.rules(),
            sources,
            include_triggering_user=self.settings.triggering_user,
        )
        if recipients.unresolved:
            log.info(
                "bkci notify: %s: %s have no address; give the DAG owner_links "
                "(name -> mailto:address) or write a rule for them in the owners file",
                notice.dedupe_key,
                ", ".join(recipients.unresolved),
            )
        return recipients

    def _nobody(self, key: str, recipients: Recipients) -> None:
        log.warning(
            "bkci notify: nobody to tell about %s (%s); add a rule to the owners file "
            "([bkci] notify_owners_file)",
            key,
            f"no address for {', '.join(recipients.unresolved)}"
            if recipients.unresolved
            else "no owner, owners-file rule or triggering user",
        )

    def _deliver(self, message: Message) -> None:
        """Every way of ``message`` not sent before; raises with what failed."""
        plan = self.notifiers.plan(message.recipients)
        errors: list[Exception] = list(plan.problems)
        for route in plan.routes:
            key = route_key(message.dedupe_key, route.name)
            if not self.sent_log.claim(key):
                continue  # this way went out on an earlier attempt
            try:
                self.notifiers.send(route, message)
            except Exception as exc:
                self.sent_log.release(key)
                errors.append(exc)
            else:
                log.debug("bkci notify: %r went %s", message.subject, route.name)
        if errors:
            raise _Undelivered(errors)

    # -- digests ----------------------------------------------------------------

    def idle(self) -> None:
        """Send the digests whose window ended while no build changed. Never raises.

        The dispatcher calls this on its passes that find nothing to send (every
        poll interval): until the current window ends, or a digest failed, it is an
        in-memory check. A digest that fails waits ``IDLE_RETRY`` seconds here, not
        a poll interval.
        """
        if self._monotonic() < self._idle_retry_at:
            return
        if self._flush_digests_logged(f"next try in {IDLE_RETRY:.0f}s or at the next change"):
            self._idle_retry_at = self._monotonic() + IDLE_RETRY

    def _flush_digests_logged(self, then: str) -> bool:
        """:meth:`_flush_digests` outside a send: failures are logged, not returned. True if any."""
        try:
            failures = self._flush_digests()
        except Exception as exc:  # the store is away: nothing can be read or claimed
            failures = [_Failure(_reason(exc))]
        if failures:
            log.warning(
                "bkci notify: %d digests not sent (%s); they stay in the store, %s",
                len(failures),
                failures[0].error,
                then,
            )
        return bool(failures)

    def _flush_digests(self, *first: Digest) -> list[_Failure]:
        """Send ``first``, then every digest due; each one sent is forgotten by the limiter."""
        digests = list(first)
        now = self.clock()
        checked = self._digests_checked_until
        due = [] if checked is not None and now < checked else self.limiter.due()
        digests += due
        failures: list[_Failure] = []
        for digest in digests:
            outcome = self._send_digest(digest)
            if isinstance(outcome, _Failure):
                failures.append(outcome)
            elif outcome:
                self.limiter.sent(digest)
        # A window's notices can only fall due when it ends. A failed digest, or a
        # look that found some (one look returns at most 100 windows), means
        # looking again at the next send or idle pass.
        self._digests_checked_until = None if failures or due else self.limiter.next_due()
        return failures

    def _send_digest(self, digest: Digest) -> bool | _Failure:
        """True when it went out here (or to nobody), False when another dispatcher claimed it.

        A claim held elsewhere leaves the held notices alone: that dispatcher
        forgets them once its delivery worked, and releases the claim if not.
        """
        key = digest.dedupe_key
        if not self.sent_log.claim(key):
            return False
        try:
            recipients = Recipients().merge(*(self._recipients(n) for n in digest.notices))
            if not recipients:
                self._nobody(key, recipients)
                return True
            self._deliver(compose_digest(digest, recipients, self.settings.base_url))
        except Exception as exc:
            self.sent_log.release(key)
            return _Failure(_reason(exc))
        return True

    def _prune(self) -> None:
        now = self._monotonic()
        if now - self._last_prune < _PRUNE_EVERY:
            return
        self._last_prune = now
        if isinstance(self.sent_log, NoticeLog):
            deleted = self.sent_log.prune(NOTICE_RETENTION)
            if deleted:
                log.info("bkci notify: forgot %d sent-log keys older than 30 days", deleted)
        limit, today = self.limiter.limit, self.clock()
        held, _ = self.ledger.prune(
            held_before=today - NOTICE_RETENTION,
            windows_before=limit.window_start(today) - limit.window,
        )
        if held:
            log.warning(
                "bkci notify: dropped %d held notices older than 30 days whose digest never "
                "went out (its claim in the sent log was never released)",
                held,
            )


def _document(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    data = event.get("data")
    if event.get("type") != EVENT_SNAPSHOT or not isinstance(data, Mapping):
        return None  # with wants_changes False the dispatcher sends snapshots only
    document = data.get("document")
    return document if isinstance(document, Mapping) and document.get("status") else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _Undelivered):
        return "; ".join(_reason(e) for e in exc.errors)
    if isinstance(exc, NotifierError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# -- from [bkci] ----------------------------------------------------------------


def notify_channel_from_conf(store: Store) -> NotifyChannel | None:
    """The channel ``[bkci] notify_*`` describes, or None when notifications are off.

    Raises :class:`~airflow_bkci.exceptions.OwnersFileError` (naming the
    line) for an owners file that does not parse; a rule naming a connection
    that is missing or cannot be sent through is logged, and its messages
    fail with the same words until the connection is fixed.
    """
    from airflow import settings as airflow_settings

    from airflow_bkci import conf
    from airflow_bkci.forksafe import sqlite_section
    from airflow_bkci.notify.dag_owners import DagOwnerReader
    from airflow_bkci.notify.deliver import AirflowNotifiers, check_owners_routes
    from airflow_bkci.notify.owners_file import OwnersFile

    if not conf.notify_enabled():
        return None
    airflow_db = airflow_settings.engine.url if airflow_settings.engine is not None else ""
    email_conn_id = conf.notify_email_conn_id()
    notifiers = AirflowNotifiers(
        email_conn_id, from_email=conf.notify_from_email(), guard=sqlite_section(airflow_db)
    )
    settings = NotifySettings(
        policy=NotifyPolicy(canceled=conf.notify_canceled(), recovered=conf.notify_recovered()),
        rate_limit=RateLimit(
            conf.notify_rate_limit(), timedelta(seconds=conf.notify_rate_window())
        ),
        base_url=conf.notify_base_url(),
        triggering_user=conf.notify_triggering_user(),
        settle=conf.notify_settle(),
        max_age=conf.notify_max_age(),
    )
    rules: Callable[[], OwnersRules | None] = _no_rules
    path = conf.notify_owners_file()
    if path is not None:
        rules = OwnersFile(path, lambda r: check_owners_routes(r, notifiers.connection_type)).rules
    if notifiers.connection_type(email_conn_id) is None:
        log.warning(
            "bkci notify: email connection %r does not exist; mail to plain addresses fails "
            "until it does (create it, or set [bkci] notify_email_conn_id)",
            email_conn_id,
        )
    return NotifyChannel(store, notifiers, DagOwnerReader.from_airflow(), rules, settings)


def _no_rules() -> OwnersRules | None:
    return None


def configured_notify_channels(store: Store) -> list[NotifyChannel]:
    """The notification channel when ``[bkci]`` turns it on; a broken set-up is logged."""
    try:
        channel = notify_channel_from_conf(store)
    except Exception as exc:
        log.error(
            "bkci: notifications are off: %s. Fix it and restart the scheduler; status "
            "reporting goes on.",
            exc,
        )
        return []
    return [] if channel is None else [channel]
