"""Owner notifications from a real Airflow: the example runs mail their owners through SMTP.

The SQLite stack (see conftest) has an owners file and an aiosmtpd server
in a process of its own; the scheduler's dispatcher decides on each build
and mails through the SMTP provider. bkci_failure fails in ``deploy`` and
leaves ``verify`` upstream_failed; bkci_retry fails its first try and then
succeeds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from sqlalchemy import select

from airflow_bkci.channels.notify import CHANNEL_NAME
from airflow_bkci.devstack import AirflowStack
from airflow_bkci.model.event import build_id_for
from airflow_bkci.notify.deliver import NOTICE_HEADER
from airflow_bkci.store import Store
from airflow_bkci.store.outbox import Outbox
from airflow_bkci.store.tables import BuildRow, LaneRow
from tests.integration.conftest import ExampleRuns
from tests.integration.helpers import eventually
from tests.unit.notify.receivers import Mail, SmtpReceiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def store(sqlite_stack: AirflowStack) -> Iterator[Store]:
    opened = Store(sqlite_stack.store_url)
    yield opened
    opened.dispose()


def mailbox(stack: AirflowStack) -> SmtpReceiver:
    mail = stack.mail  # type: ignore[attr-defined]
    assert isinstance(mail, SmtpReceiver)
    return mail


def mails_about(stack: AirflowStack, build_id: str) -> list[Mail]:
    return [m for m in mailbox(stack).mails() if build_id in str(m.message[NOTICE_HEADER])]


def notified(store: Store, build_id: str) -> bool:
    """The notification channel has had the build's latest document (its lane is acked)."""
    with store.engine.connect() as conn:
        row = conn.execute(
            select(LaneRow.acked_seq, LaneRow.needs_snapshot, BuildRow.sequence)
            .join(BuildRow, BuildRow.build_id == LaneRow.build_id)
            .where(LaneRow.endpoint == CHANNEL_NAME, LaneRow.build_id == build_id)
        ).first()
    return row is not None and row.acked_seq >= row.sequence and not row.needs_snapshot


def test_a_failed_build_mails_the_owner_of_the_task_that_failed(
    sqlite_stack: AirflowStack, example_runs_sqlite: ExampleRuns
) -> None:
    run_id, state = example_runs_sqlite["bkci_failure"]
    assert state == "failed"
    build_id = build_id_for("bkci_failure", run_id)
    key = f"bkci-notice/{build_id}/failed/0"  # the run's first execution

    mails = eventually(
        lambda: [m for m in mails_about(sqlite_stack, build_id) if m.message[NOTICE_HEADER] == key],
        90,
        "the mail about bkci_failure",
    )

    (mail,) = mails
    assert mail.rcpt_tos == ["deploy-owner@example.test"]  # not verify's: it never ran
    assert mail.mail_from == "airflow@example.test"
    assert mail.subject.startswith("[bkci] FAILED bkci_failure #")
    assert mail.subject.endswith(": deploy (try 1 of 1) failed")
    body = mail.body
    assert "deploy target unreachable: db-01" in body  # the worker's error summary
    assert "deploy, try 1 of 1" in body
    log_link = f"/dags/bkci_failure/runs/{quote(run_id, safe='')}/tasks/deploy?try_number=1"
    assert f"http://localhost:8080{log_link}" in body
    assert "Not run because of these failures (upstream_failed): verify" in body
    # a clear of the run (another test may make one) is a new execution with its own key
    keys = [str(m.message[NOTICE_HEADER]) for m in mails_about(sqlite_stack, build_id)]
    assert len(keys) == len(set(keys))
    assert "dispatcher started for bkci_test_hook, bkci:notify" in (
        sqlite_stack.log_path("scheduler").read_text()
    )


def test_a_try_that_is_retried_mails_nobody(
    sqlite_stack: AirflowStack, example_runs_sqlite: ExampleRuns, store: Store
) -> None:
    run_id, state = example_runs_sqlite["bkci_retry"]
    assert state == "success"
    build_id = build_id_for("bkci_retry", run_id)
    eventually(lambda: notified(store, build_id), 90, "the channel seeing bkci_retry's end")
    assert mails_about(sqlite_stack, build_id) == []


def test_a_restarted_scheduler_does_not_mail_again(
    sqlite_stack: AirflowStack, example_runs_sqlite: ExampleRuns, store: Store
) -> None:
    run_id, _ = example_runs_sqlite["bkci_failure"]
    build_id = build_id_for("bkci_failure", run_id)
    eventually(lambda: mails_about(sqlite_stack, build_id), 90, "the mail about bkci_failure")
    eventually(lambda: notified(store, build_id), 60, "the lane of bkci_failure acked")
    before = len(mails_about(sqlite_stack, build_id))

    sqlite_stack.kill("scheduler")
    # The new scheduler's channel remembers nothing: only the store's sent log
    # stands between this resent document and a second mail.
    assert Outbox(store, "test").request_snapshot(CHANNEL_NAME, [build_id]) == 1
    started = time.monotonic()
    sqlite_stack.restart("scheduler")
    eventually(lambda: notified(store, build_id), 120, "the resent snapshot delivered")
    print(f"scheduler restart to resent snapshot: {time.monotonic() - started:.1f}s")

    assert len(mails_about(sqlite_stack, build_id)) == before
