"""Notifications end to end without Airflow's scheduler: store, dispatcher, channel, real receivers.

The dispatcher hands the channel the builds a real store holds; mail goes
through the SMTP provider to an aiosmtpd server in its own process, chat
through the apprise provider to a local HTTP endpoint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_bkci.channels.dispatcher import Dispatcher
from airflow_bkci.channels.notify import NotifyChannel, NotifySettings
from airflow_bkci.notify import OwnerSources, RateLimit
from airflow_bkci.notify.deliver import NOTICE_HEADER, AirflowNotifiers, check_owners_routes
from airflow_bkci.notify.owners_file import OwnersFile
from airflow_bkci.store import Store
from tests.unit.channels.test_notify_channel import Clock, failed_build, good_build
from tests.unit.notify.builds import DAG, T0
from tests.unit.notify.receivers import HttpReceiver, SmtpReceiver, http_receiver  # noqa: F401
from tests.unit.notify.stored import Task, store_build

pytestmark = pytest.mark.timeout(90)


class Owners:
    def sources(self, dag_id: str, run_id: str) -> OwnerSources:
        return OwnerSources(
            task_owners={"load": "lena", "report": "rob@example.com", "extract": "airflow"},
            owner_links={"lena": "mailto:lena@example.com"},
        )


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver(tmp_path / "smtp")
    yield receiver
    receiver.stop()


def test_root_cause_owners_get_mail_and_chat_once_each(
    store: Store,
    smtp: SmtpReceiver,
    http_receiver: HttpReceiver,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BKCI_MAIL", json.dumps(smtp.connection()))
    chat = {"path": f"json://127.0.0.1:{http_receiver.port}/chat", "tag": "etl"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_BKCI_CHAT", json.dumps({"conn_type": "apprise", "extra": {"config": chat}})
    )
    owners = tmp_path / "owners"
    owners.write_text(
        f"{DAG}          team@example.com\n"
        f"{DAG}/load     loaders@example.com conn:bkci_chat:etl\n"
        f"{DAG}/report   reporters@example.com\n"
    )
    notifiers = AirflowNotifiers("bkci_mail")
    rules = OwnersFile(owners, lambda r: check_owners_routes(r, notifiers.connection_type))
    settings = NotifySettings(settle=0, max_age=0, base_url="https://airflow.test")
    build = store_build(
        store,
        Task("extract", "success", ended=1),
        Task("load", "failed", error="ValueError: bad row 17", try_number=3, max_tries=2, ended=2),
        Task("report", "upstream_failed", ended=2),
    )
    retrying = store_build(
        store,
        Task("load", "up_for_retry", error="ValueError: flaky", max_tries=2, ended=2),
        state="running",
        run_id="run-2",
        start=T0 + timedelta(minutes=30),
        ended=None,
    )

    for _ in range(2):  # the second dispatcher is a restart: same store, fresh memory
        channel = NotifyChannel(store, notifiers, Owners(), rules.rules, settings)
        Dispatcher(store, [channel], schedule=(0.0,) * 3, batch_wait=0).drain(30)

    (mail,) = smtp.mails()
    assert sorted(mail.rcpt_tos) == ["lena@example.com", "loaders@example.com"]
    assert mail.subject == "[bkci] FAILED etl_daily #1: load (try 3 of 3) failed"
    assert mail.message[NOTICE_HEADER] == f"bkci-notice/{build}/failed/0"
    assert "ValueError: bad row 17" in mail.body
    assert "load, try 3 of 3" in mail.body
    assert "https://airflow.test/dags/etl_daily/runs/run-1/tasks/load?try_number=3" in mail.body
    assert "rob@example.com" not in mail.rcpt_tos  # report only never ran
    (post,) = http_receiver.posts
    assert post["path"] == "/chat" and post["body"]["title"] == mail.subject
    assert retrying not in json.dumps([m.message[NOTICE_HEADER] for m in smtp.mails()])


EVERY_OWNER = ["lena@example.com", "loaders@example.com", "team@example.com"]


def _mail_channel(
    store: Store,
    smtp: SmtpReceiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock | None = None,
    **settings: object,
) -> NotifyChannel:
    monkeypatch.setenv("AIRFLOW_CONN_BKCI_MAIL", json.dumps(smtp.connection()))
    owners = tmp_path / "owners"
    owners.write_text(f"{DAG}  team@example.com\n{DAG}/load  loaders@example.com\n")
    notifiers = AirflowNotifiers("bkci_mail")
    rules = OwnersFile(owners, lambda r: check_owners_routes(r, notifiers.connection_type))
    values: dict[str, object] = {"settle": 0.0, "max_age": 0.0, "base_url": "https://af.test"}
    return NotifyChannel(
        store,
        notifiers,
        Owners(),
        rules.rules,
        NotifySettings(**{**values, **settings}),  # type: ignore[arg-type]
        clock=clock or Clock(),
    )


def test_a_recovery_reaches_the_mail_server_after_a_restart(
    store: Store, smtp: SmtpReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in (1, 2):
        failed_build(store, number)
    notify = _mail_channel(store, smtp, tmp_path, monkeypatch)
    Dispatcher(store, [notify], schedule=(0.0,) * 3, batch_wait=0).drain(30)
    good_build(store, 3)
    notify = _mail_channel(store, smtp, tmp_path, monkeypatch)  # a new process
    Dispatcher(store, [notify], schedule=(0.0,) * 3, batch_wait=0).drain(30)

    subjects = [m.subject for m in smtp.mails()]
    assert sorted(subjects[:2]) == [  # the two failures go out in one batch, in either order
        "[bkci] FAILED etl_daily #1: load (try 1 of 1) failed",
        "[bkci] FAILED etl_daily #2: load (try 1 of 1) failed",
    ]
    assert subjects[2:] == ["[bkci] RECOVERED etl_daily #3 after 2 failed builds"]
    recovery = smtp.mails()[2]
    assert sorted(recovery.rcpt_tos) == EVERY_OWNER


def test_a_storm_of_50_failures_reaches_the_mail_server_as_three_mails_and_a_digest(
    store: Store, smtp: SmtpReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(T0 + timedelta(days=1, minutes=1))
    notify = _mail_channel(
        store, smtp, tmp_path, monkeypatch, clock, rate_limit=RateLimit(3, timedelta(hours=1))
    )
    for number in range(1, 51):
        failed_build(store, number)
    runner = Dispatcher(store, [notify], schedule=(0.0,) * 3, batch_wait=0)
    assert runner.drain(60).failed_lanes == 0
    assert len(smtp.mails()) == 3

    clock.now += timedelta(hours=1)  # the window is over: the next change brings the digest
    failed_build(store, 51)
    runner.drain(30)

    (digest,) = [m for m in smtp.mails() if "more failures" in m.subject]
    assert digest.subject.startswith("[bkci] etl_daily: 47 more failures")
    assert sorted(digest.rcpt_tos) == ["lena@example.com", "loaders@example.com"]
    mailed = {int(m.subject.split("#")[1].split(":")[0]) for m in smtp.mails()[:3]}
    held = set(range(1, 51)) - mailed
    assert {int(n) for n in re.findall(r"etl_daily #(\d+)", digest.body)} == held
    assert len(smtp.mails()) == 5  # 3, the digest, and build 51: the first of its window
