"""The notification channel over a real store and dispatcher, with a recording notifier."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from airflow_bkci.channels.dispatcher import Dispatcher
from airflow_bkci.channels.notify import CHANNEL_NAME, IDLE_RETRY, NotifyChannel, NotifySettings
from airflow_bkci.channels.webhook import Delivery
from airflow_bkci.exceptions import NotifierError
from airflow_bkci.notify import NotifyPolicy, OwnerSources, RateLimit, parse_owners
from airflow_bkci.notify.deliver import Route, RoutePlan, plan_routes
from airflow_bkci.notify.message import Message
from airflow_bkci.notify.routing import Recipients
from airflow_bkci.store import Store, notice_ledger
from airflow_bkci.store.notices import NoticeLog
from airflow_bkci.store.outbox import Outbox
from tests.unit.notify.builds import DAG, T0
from tests.unit.notify.stored import Task, snapshot_of, store_build

pytestmark = pytest.mark.timeout(60)

OWNERS = f"""
# who owns what
{DAG}            team@example.com
{DAG}/load       loaders@example.com conn:chat:etl-alerts
{DAG}/report     reporters@example.com
"""
NOW = T0 + timedelta(hours=1)


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class RecordingNotifiers:
    """Plans routes like the real thing (over ``types``); records what it sends."""

    def __init__(self, types: dict[str, str] | None = None) -> None:
        self.types = {"smtp_default": "smtp", "chat": "apprise"} if types is None else types
        self.sent: list[tuple[Route, Message]] = []
        self.failing: dict[str, int] = {}  # route name -> sends that fail first

    def plan(self, recipients: Recipients) -> RoutePlan:
        return plan_routes(recipients, "smtp_default", self.types.get)

    def send(self, route: Route, message: Message) -> None:
        if self.failing.get(route.name, 0) > 0:
            self.failing[route.name] -= 1
            raise NotifierError(route.conn_id, "451 try again later", "The server is busy")
        self.sent.append((route, message))

    def mails(self) -> list[tuple[tuple[str, ...], Message]]:
        return [(r.targets, m) for r, m in self.sent if r.kind == "smtp"]

    def subjects(self) -> list[str]:
        return [m.subject for _, m in self.mails()]


class Owners:
    """Task owners as the DAG says them."""

    def __init__(self) -> None:
        self.task_owners = {"load": "lena@example.com", "report": "rob", "extract": "airflow"}

    def sources(self, dag_id: str, run_id: str) -> OwnerSources:
        return OwnerSources(
            task_owners=self.task_owners, owner_links={"rob": "mailto:rob@example.com"}
        )


def channel(
    store: Store,
    notifiers: RecordingNotifiers,
    clock: Clock | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    **settings: object,
) -> NotifyChannel:
    rules = parse_owners(OWNERS, "owners")
    values: dict[str, object] = {"settle": 0.0, "max_age": 0.0, "base_url": "https://af.test"}
    return NotifyChannel(
        store,
        notifiers,
        Owners(),
        lambda: rules,
        NotifySettings(**{**values, **settings}),  # type: ignore[arg-type]
        clock=clock or Clock(),
        monotonic=monotonic,
    )


def dispatcher(store: Store, notify: NotifyChannel) -> Dispatcher:
    return Dispatcher(store, [notify], schedule=(0.0,) * 5, batch_wait=0)


def failed_build(store: Store, number: int, **kw: object) -> str:
    return store_build(
        store,
        Task("extract", "success", ended=1),
        Task("load", "failed", error=f"ValueError: bad row {number}", ended=2),
        Task("report", "upstream_failed", ended=2),
        run_id=f"run-{number}",
        start=T0 + timedelta(minutes=20 * number),
        **kw,  # type: ignore[arg-type]
    )


def good_build(store: Store, number: int) -> str:
    return store_build(
        store,
        Task("extract", "success", ended=1),
        Task("load", "success", ended=2),
        Task("report", "success", ended=3),
        state="success",
        run_id=f"run-{number}",
        start=T0 + timedelta(minutes=20 * number),
    )


def test_a_failed_build_mails_the_owners_of_its_root_cause_once(store: Store) -> None:
    notifiers = RecordingNotifiers()
    build_id = failed_build(store, 1)

    report = dispatcher(store, channel(store, notifiers)).drain(10)

    assert report.failed_lanes == 0
    ((targets, message),) = notifiers.mails()
    # the load rule wins over the pipeline's; the task's own owner is added;
    # report's owners are not told: it never ran because load failed
    assert targets == ("lena@example.com", "loaders@example.com")
    assert message.subject == "[bkci] FAILED etl_daily #1: load (try 1 of 1) failed"
    assert "ValueError: bad row 1" in message.text
    assert "https://af.test/dags/etl_daily/runs/run-1/tasks/load?try_number=1" in message.text
    assert "Not run because of these failures (upstream_failed): report" in message.text
    (chat,) = [route for route, _ in notifiers.sent if route.kind == "apprise"]
    assert chat == Route("apprise", "chat", ("etl-alerts",))
    assert sorted(NoticeLog(store).claimed(build_id)) == [
        f"bkci-notice/{build_id}/failed/0",
        f"bkci-notice/{build_id}/failed/0|apprise:chat",
        f"bkci-notice/{build_id}/failed/0|smtp:smtp_default",
    ]


def test_one_message_per_failed_build_across_a_dispatcher_restart(store: Store) -> None:
    notifiers = RecordingNotifiers()
    build_id = failed_build(store, 1)
    first = channel(store, notifiers)
    # Sent, then the process died before the dispatcher recorded the delivery:
    # the lane is still due, and a new process sends the same document again.
    assert first.send([snapshot_of(store, build_id)]).delivery is Delivery.DELIVERED

    restarted = dispatcher(store, channel(store, notifiers))
    restarted.drain(10)
    Outbox(store, "operator").request_snapshot(CHANNEL_NAME)  # a resend of every build
    again = dispatcher(store, channel(store, notifiers))
    report = again.drain(10)

    assert report.snapshots == 1
    assert len(notifiers.mails()) == 1


def test_no_message_while_a_task_will_retry(store: Store) -> None:
    notifiers = RecordingNotifiers()
    notify = channel(store, notifiers)
    build_id = store_build(
        store,
        Task("extract", "success", ended=1),
        Task("load", "up_for_retry", error="ConnectionError: db-01", max_tries=1, ended=2),
        state="running",
        ended=None,
    )
    assert notify.send([snapshot_of(store, build_id)]).delivery is Delivery.DELIVERED
    # A late document may say FAILED while the task is still RETRY: still nothing.
    store_build(store, state="failed", ended=3)
    assert notify.send([snapshot_of(store, build_id)]).delivery is Delivery.DELIVERED
    assert notifiers.sent == []

    store_build(
        store,
        Task("load", "failed", error="ConnectionError: db-01", try_number=2, max_tries=1, ended=4),
        state="failed",
        ended=5,
    )
    notify.send([snapshot_of(store, build_id)])
    ((_, message),) = notifiers.mails()
    assert "load (try 2 of 2) failed" in message.subject


def test_a_success_after_failures_is_a_recovery_even_after_a_restart(store: Store) -> None:
    notifiers = RecordingNotifiers()
    for number in (1, 2):
        failed_build(store, number)
    dispatcher(store, channel(store, notifiers)).drain(10)
    assert len(notifiers.mails()) == 2
    good_build(store, 3)

    dispatcher(store, channel(store, notifiers)).drain(10)  # a new process: history from the store

    recovery = notifiers.mails()[2]
    assert recovery[1].subject == "[bkci] RECOVERED etl_daily #3 after 2 failed builds"
    assert recovery[1].notify_type == "success"
    # the pipeline's own rule, and the owners of the task whose failures it ends
    assert recovery[0] == ("lena@example.com", "loaders@example.com", "team@example.com")
    good_build(store, 4)
    dispatcher(store, channel(store, notifiers)).drain(10)
    assert len(notifiers.mails()) == 3  # a success after a success is news to nobody


def test_a_storm_of_50_failures_gives_three_messages_and_one_digest(store: Store) -> None:
    notifiers = RecordingNotifiers()
    clock = Clock(T0 + timedelta(days=1, minutes=1))  # inside one hour window
    notify = channel(store, notifiers, clock, rate_limit=RateLimit(3, timedelta(hours=1)))
    for number in range(1, 51):
        failed_build(store, number)
    runner = dispatcher(store, notify)
    assert runner.drain(30).failed_lanes == 0
    assert len(notifiers.mails()) == 3
    assert notify.limiter.held(DAG) == 47

    clock.now += timedelta(hours=1)  # the window is over; the next change brings the digest
    failed_build(store, 51)
    runner.drain(10)

    subjects = notifiers.subjects()
    digests = [s for s in subjects if "more failures" in s]
    assert len(digests) == 1 and digests[0].startswith("[bkci] etl_daily: 47 more failures")
    digest = next(m for _, m in notifiers.mails() if "more failures" in m.subject)
    assert digest.text.count("\n- etl_daily #") == 47
    assert len(subjects) == 5  # 3 + the digest + build 51, first of its window


def five_failures_two_held(
    store: Store,
) -> tuple[RecordingNotifiers, Clock, NotifyChannel, Dispatcher]:
    """Five failures in one window limited to three messages: three sent, two held."""
    notifiers = RecordingNotifiers()
    clock = Clock(T0 + timedelta(days=1, minutes=1))
    notify = channel(store, notifiers, clock, rate_limit=RateLimit(3, timedelta(hours=1)))
    for number in range(1, 6):
        failed_build(store, number)
    runner = dispatcher(store, notify)
    runner.drain(30)
    assert len(notifiers.mails()) == 3 and notify.limiter.held(DAG) == 2
    return notifiers, clock, notify, runner


def test_a_digest_goes_out_when_its_window_ends_though_no_build_changes(store: Store) -> None:
    # A quiet deployment: the storm's last build was the last change for hours.
    notifiers, clock, _, runner = five_failures_two_held(store)
    runner.run_once()  # the window still runs: nothing more
    assert len(notifiers.mails()) == 3

    clock.now += timedelta(hours=1)
    report = runner.run_once()  # nothing to claim: an idle pass
    assert report.claimed == 0
    (digest,) = [m for _, m in notifiers.mails() if "more failures" in m.subject]
    assert digest.subject.startswith("[bkci] etl_daily: 2 more failures")
    runner.run_once()
    assert len(notifiers.mails()) == 4  # sent once


def test_an_idle_digest_that_fails_waits_before_it_is_tried_again(store: Store) -> None:
    notifiers = RecordingNotifiers()
    clock = Clock(T0 + timedelta(days=1, minutes=1))
    ticks = [1000.0]
    notify = channel(
        store, notifiers, clock, lambda: ticks[0], rate_limit=RateLimit(1, timedelta(hours=1))
    )
    failed_build(store, 1)
    failed_build(store, 2)
    runner = dispatcher(store, notify)
    runner.drain(30)
    assert len(notifiers.mails()) == 1 and notify.limiter.held(DAG) == 1

    clock.now += timedelta(hours=1)
    notifiers.failing["smtp:smtp_default"] = 1  # the mail server refuses the digest once
    runner.run_once()
    runner.run_once()  # within IDLE_RETRY: not tried again
    assert notifiers.failing["smtp:smtp_default"] == 0 and len(notifiers.mails()) == 1
    ticks[0] += IDLE_RETRY
    runner.run_once()
    assert [m.subject for _, m in notifiers.mails()][1].startswith("[bkci] etl_daily: 1 more")
    assert len(notifiers.mails()) == 2


def test_a_killed_dispatchers_held_notices_go_out_from_the_next_one(store: Store) -> None:
    # A scheduler SIGKILLed mid-storm is never asked to stop: what it held is in the store.
    first, clock, _, _ = five_failures_two_held(store)
    notifiers = RecordingNotifiers()
    notify = channel(store, notifiers, clock, rate_limit=RateLimit(3, timedelta(hours=1)))
    runner = dispatcher(store, notify)

    failed_build(store, 6)  # the same window: its count survived, so this is held too
    runner.drain(10)
    assert notifiers.mails() == [] and notify.limiter.held(DAG) == 3
    clock.now += timedelta(hours=1)
    runner.run_once()

    (digest,) = [m for _, m in notifiers.mails()]
    assert digest.subject.startswith("[bkci] etl_daily: 3 more failures")
    assert digest.text.count("\n- etl_daily #") == 3
    assert len(first.mails()) == 3 and notify.limiter.held(DAG) == 0


def test_digests_of_more_windows_than_one_look_returns_all_go_out(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notice_ledger, "_ENDED_GROUPS", 2)  # 100 in production
    notifiers = RecordingNotifiers()
    clock = Clock(T0 + timedelta(days=1, minutes=1))
    notify = channel(store, notifiers, clock, rate_limit=RateLimit(1, timedelta(hours=1)))
    pipelines = [f"etl_{n}" for n in range(5)]
    for dag_id in pipelines:  # one message and one held notice each
        failed_build(store, 1, dag_id=dag_id)
        failed_build(store, 2, dag_id=dag_id)
    runner = dispatcher(store, notify)
    runner.drain(30)
    assert len(notifiers.mails()) == 5

    clock.now += timedelta(hours=1)
    for _ in range(4):  # idle passes: two windows per look
        runner.run_once()

    digests = [m.subject for _, m in notifiers.mails() if "more failure" in m.subject]
    assert sorted(s.split(":")[0] for s in digests) == [f"[bkci] {p}" for p in pipelines]


def test_a_failed_delivery_is_retried_and_then_sent_once(store: Store) -> None:
    notifiers = RecordingNotifiers()
    notifiers.failing["smtp:smtp_default"] = 1
    notify = channel(store, notifiers)
    build_id = failed_build(store, 1)

    first = notify.send([snapshot_of(store, build_id)])

    assert first.delivery is Delivery.RETRY
    assert "smtp_default: 451 try again later" in (first.error or "")
    assert [r.name for r, _ in notifiers.sent] == ["apprise:chat"]  # the other way went
    second = notify.send([snapshot_of(store, build_id)])
    third = notify.send([snapshot_of(store, build_id)])
    assert (second.delivery, third.delivery) == (Delivery.DELIVERED, Delivery.DELIVERED)
    assert sorted(r.name for r, _ in notifiers.sent) == ["apprise:chat", "smtp:smtp_default"]


def test_the_dispatcher_retries_a_failed_delivery_until_it_goes(store: Store) -> None:
    notifiers = RecordingNotifiers()
    notifiers.failing["smtp:smtp_default"] = 2
    failed_build(store, 1)
    runner = dispatcher(store, channel(store, notifiers))

    reports = [runner.run_once() for _ in range(3)]

    assert [r.failed_lanes for r in reports] == [1, 1, 0]
    assert reports[2].delivered_lanes == 1 and len(notifiers.mails()) == 1


def test_a_missing_connection_fails_the_lane_naming_it_and_the_fix(store: Store) -> None:
    notifiers = RecordingNotifiers({"smtp_default": "smtp"})  # no "chat" connection
    notify = channel(store, notifiers)
    build_id = failed_build(store, 1)

    result = notify.send([snapshot_of(store, build_id)])

    assert result.delivery is Delivery.RETRY
    assert "notifier connection 'chat' does not exist" in (result.error or "")
    assert "airflow connections add chat --conn-type apprise" in (result.error or "")
    assert len(notifiers.mails()) == 1  # the mail went regardless
    notifiers.types["chat"] = "apprise"  # someone created it
    assert notify.send([snapshot_of(store, build_id)]).delivery is Delivery.DELIVERED
    assert len(notifiers.mails()) == 1 and len(notifiers.sent) == 2


def test_a_failure_without_its_error_summary_waits_for_it_once(store: Store) -> None:
    notifiers = RecordingNotifiers()
    clock = Clock(T0 + timedelta(minutes=10, seconds=1))  # a second after the build ended
    notify = channel(store, notifiers, clock, settle=5.0)
    build_id = store_build(store, Task("load", "failed", ended=2))

    waiting = notify.send([snapshot_of(store, build_id)])

    assert waiting.delivery is Delivery.LATER and waiting.retry_after == pytest.approx(4.0)
    assert "error summary of load" in (waiting.error or "") and notifiers.sent == []
    store_build(store, Task("load", "failed", error="OSError: disk full", ended=2))
    assert notify.send([snapshot_of(store, build_id)]).delivery is Delivery.DELIVERED
    assert "OSError: disk full" in notifiers.mails()[0][1].text


def test_a_failure_whose_downstream_task_is_not_final_yet_waits_for_it(store: Store) -> None:
    # The run's end (a scheduler hook) can reach the store before the reconciler
    # reads the downstream task's upstream_failed.
    notifiers = RecordingNotifiers()
    clock = Clock(T0 + timedelta(minutes=10, seconds=2))
    notify = channel(store, notifiers, clock, settle=5.0)
    build_id = store_build(
        store, Task("load", "failed", error="OSError: disk full", ended=2), Task("report", None)
    )

    waiting = notify.send([snapshot_of(store, build_id)])

    assert waiting.delivery is Delivery.LATER and "final state of report" in (waiting.error or "")
    store_build(store, Task("report", "upstream_failed", ended=2))
    assert notify.send([snapshot_of(store, build_id)]).delivery is Delivery.DELIVERED
    (_, message), *_ = notifiers.mails()
    assert "Not run because of these failures (upstream_failed): report" in message.text


def test_a_build_waiting_for_its_summary_holds_back_neither_others_nor_the_circuit(
    store: Store,
) -> None:
    notifiers = RecordingNotifiers()
    clock = Clock(T0 + timedelta(minutes=10, seconds=1))  # a second after the builds ended
    notify = channel(store, notifiers, clock, settle=5.0)
    store_build(store, Task("load", "failed", ended=2), run_id="run-1")  # no summary yet
    complete = store_build(
        store, Task("load", "failed", error="OSError: disk full", ended=2), run_id="run-2"
    )
    runner = dispatcher(store, notify)
    reports = [runner.run_once() for _ in range(3)]

    assert [m.subject for _, m in notifiers.mails()] == [
        "[bkci] FAILED etl_daily #2: load (try 1 of 1) failed"
    ]
    assert complete in notifiers.sent[0][1].dedupe_key
    assert reports[0].postponed_lanes == 1 and reports[0].failed_lanes == 0
    assert runner._circuits[CHANNEL_NAME].failures == 0  # waiting is not failing


def test_a_summary_that_never_comes_does_not_hold_the_message(store: Store) -> None:
    notifiers = RecordingNotifiers()
    clock = Clock(T0 + timedelta(minutes=10, seconds=6))
    notify = channel(store, notifiers, clock, settle=5.0)
    build_id = store_build(store, Task("load", "failed", ended=2))
    assert notify.send([snapshot_of(store, build_id)]).delivery is Delivery.DELIVERED
    assert len(notifiers.mails()) == 1


def test_builds_that_ended_long_ago_are_not_announced(store: Store) -> None:
    notifiers = RecordingNotifiers()
    notify = channel(store, notifiers, Clock(T0 + timedelta(days=2)), max_age=86400.0)
    build_id = failed_build(store, 1)
    assert notify.send([snapshot_of(store, build_id)]).delivery is Delivery.DELIVERED
    assert notifiers.sent == [] and NoticeLog(store).claimed() == []


def test_canceled_builds_are_announced_only_when_asked(store: Store) -> None:
    notifiers = RecordingNotifiers()
    build_id = store_build(
        store, Task("extract", "success", ended=2), state="canceled", canceled_by="alice"
    )
    channel(store, notifiers).send([snapshot_of(store, build_id)])
    assert notifiers.sent == []

    asked = channel(store, notifiers, policy=NotifyPolicy(canceled=True))
    asked.send([snapshot_of(store, build_id)])
    assert notifiers.subjects() == ["[bkci] CANCELED etl_daily #1 by alice"]
    assert notifiers.mails()[0][0] == ("team@example.com",)  # the pipeline's rule


def test_owners_without_an_address_are_logged_not_guessed(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    notifiers = RecordingNotifiers()
    notify = NotifyChannel(
        store,
        notifiers,
        Owners(),
        lambda: None,  # no owners file
        NotifySettings(settle=0, max_age=0),
        clock=Clock(),
    )
    build_id = store_build(store, Task("extract", "failed", error="x", ended=1))
    with caplog.at_level(logging.WARNING, logger="airflow_bkci"):
        result = notify.send([snapshot_of(store, build_id)])
    assert result.delivery is Delivery.DELIVERED and notifiers.sent == []
    assert "nobody to tell about" in caplog.text and "owners file" in caplog.text
