"""Notifications end to end without Airflow's scheduler: store, dispatcher, channel, real receivers.

The dispatcher hands the channel the builds a real store holds; mail goes
through the SMTP provider to an aiosmtpd server in its own process, chat
through the apprise provider to a local HTTP endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_bkci.channels.dispatcher import Dispatcher
from airflow_bkci.channels.notify import NotifyChannel, NotifySettings
from airflow_bkci.notify import OwnerSources
from airflow_bkci.notify.deliver import NOTICE_HEADER, AirflowNotifiers, check_owners_routes
from airflow_bkci.notify.owners_file import OwnersFile
from airflow_bkci.store import Store
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


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    store.migrate()
    yield store
    store.dispose()


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
