"""Delivery: routes per connection, clear errors, and real SMTP and apprise receivers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_bkci.exceptions import NotifierError, OwnersFileError
from airflow_bkci.notify import (
    ChannelAddress,
    EmailAddress,
    Notice,
    Recipients,
    compose,
    decide,
    parse_owners,
)
from airflow_bkci.notify.deliver import (
    NOTICE_HEADER,
    AirflowNotifiers,
    Route,
    check_owners_routes,
    plan_routes,
)
from tests.unit.notify.builds import BASE_URL, failed_build
from tests.unit.notify.receivers import HttpReceiver, SmtpReceiver, http_receiver  # noqa: F401

pytestmark = pytest.mark.timeout(60)

TYPES = {"smtp_default": "smtp", "smtp_ops": "smtp", "chat": "apprise", "hook": "http"}


def recipients(*items: EmailAddress | ChannelAddress) -> Recipients:
    return Recipients(tuple(items))


def failure_message(to: Recipients) -> tuple[Notice, str]:
    notice = decide(failed_build(7, minute=30, error="KeyError: 'id' {{ not a template }}"))
    assert isinstance(notice, Notice)
    message = compose(notice, to, BASE_URL)
    return notice, message.dedupe_key


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver(tmp_path / "smtp")
    yield receiver
    receiver.stop()


# -- routes ------------------------------------------------------------------


def test_addresses_go_as_one_mail_per_connection_and_channels_by_tag() -> None:
    plan = plan_routes(
        recipients(
            EmailAddress("b@example.com"),
            EmailAddress("a@example.com"),
            ChannelAddress("smtp_default", "c@example.com"),
            ChannelAddress("smtp_ops", "ops@example.com"),
            ChannelAddress("chat", "etl"),
            ChannelAddress("chat", "oncall"),
        ),
        "smtp_default",
        TYPES.get,
    )
    assert plan.problems == ()
    assert plan.routes == (
        Route("smtp", "smtp_default", ("a@example.com", "b@example.com", "c@example.com")),
        Route("smtp", "smtp_ops", ("ops@example.com",)),
        Route("apprise", "chat", ("etl", "oncall")),
    )


def test_a_channel_without_a_tag_reaches_every_service_of_the_connection() -> None:
    plan = plan_routes(
        recipients(ChannelAddress("chat", "etl"), ChannelAddress("chat")), "smtp_default", TYPES.get
    )
    assert plan.routes == (Route("apprise", "chat", ()),)


@pytest.mark.parametrize(
    ("recipient", "problem", "fix"),
    [
        (
            EmailAddress("a@example.com"),
            "email connection 'nomail' does not exist",
            "airflow connections add nomail --conn-type smtp",
        ),
        (
            ChannelAddress("slack_ops", "x"),
            "notifier connection 'slack_ops' does not exist",
            "or fix the id in the owners file",
        ),
        (ChannelAddress("hook"), "has type 'http'", "apprise reaches Slack"),
        (ChannelAddress("smtp_ops"), "conn:smtp_ops names an SMTP connection but no address", ""),
    ],
)
def test_recipients_that_cannot_be_delivered_are_problems_naming_the_fix(
    recipient: EmailAddress | ChannelAddress, problem: str, fix: str
) -> None:
    plan = plan_routes(
        recipients(recipient, ChannelAddress("chat", "etl")),
        "nomail" if isinstance(recipient, EmailAddress) else "smtp_default",
        TYPES.get,
    )
    assert plan.routes == (Route("apprise", "chat", ("etl",)),)  # the rest still goes
    (error,) = plan.problems
    assert problem in str(error) and fix in str(error) and error.permanent


def test_the_owners_check_names_the_line_of_a_connection_that_cannot_be_used() -> None:
    rules = parse_owners("* a@example.com\netl/* conn:chat:etl\netl/load  conn:hook\n", "owners")
    with pytest.raises(OwnersFileError) as info:
        check_owners_routes(rules, TYPES.get)
    assert info.value.line_number == 3
    assert "owners, line 3 ('etl/load  conn:hook')" in str(info.value)
    assert "has type 'http'" in str(info.value)

    missing = parse_owners("* a@example.com\netl conn:chat_typo\n", "owners")
    with pytest.raises(OwnersFileError, match=r"line 2 .*connection 'chat_typo' does not exist"):
        check_owners_routes(missing, TYPES.get)


# -- SMTP, for real ------------------------------------------------------------


def test_mail_reaches_a_real_smtp_server_through_the_smtp_provider(
    smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BKCI_MAIL", json.dumps(smtp.connection()))
    notifiers = AirflowNotifiers("bkci_mail")
    to = recipients(EmailAddress("lena@example.com"), EmailAddress("ops@example.com"))
    notice, key = failure_message(to)
    plan = notifiers.plan(to)

    (route,) = plan.routes
    notifiers.send(route, compose(notice, to, BASE_URL))

    (mail,) = smtp.mails()
    assert sorted(mail.rcpt_tos) == ["lena@example.com", "ops@example.com"]
    assert sorted(mail.to) == ["lena@example.com", "ops@example.com"]
    assert mail.mail_from == "airflow@example.test"
    assert mail.subject == "[bkci] FAILED etl_daily #7: load (try 1 of 1) failed"
    assert mail.message[NOTICE_HEADER] == key
    body = mail.body
    assert "load, try 1 of 1" in body
    assert "KeyError: &#x27;id&#x27; {{ not a template }}" in body  # sent as is, escaped
    assert f"{BASE_URL}/dags/etl_daily/runs/" in body and "tasks/load?try_number=1" in body


def test_a_busy_mail_server_is_a_retryable_error_and_the_retry_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp = SmtpReceiver(tmp_path / "busy", reject_first=1)
    try:
        monkeypatch.setenv("AIRFLOW_CONN_BKCI_MAIL", json.dumps(smtp.connection()))
        notifiers = AirflowNotifiers("bkci_mail")
        to = recipients(EmailAddress("lena@example.com"))
        notice, _ = failure_message(to)
        route = Route("smtp", "bkci_mail", ("lena@example.com",))
        with pytest.raises(NotifierError) as info:
            notifiers.send(route, compose(notice, to, BASE_URL))
        assert not info.value.permanent
        assert f"the mail server 127.0.0.1:{smtp.port} did not take the mail" in str(info.value)
        assert "451" in str(info.value)
        notifiers.send(route, compose(notice, to, BASE_URL))
        assert [m.rcpt_tos for m in smtp.mails()] == [["lena@example.com"]]
    finally:
        smtp.stop()


def test_a_missing_email_connection_is_a_permanent_error_naming_it() -> None:
    notifiers = AirflowNotifiers("bkci_no_such_mail")
    to = recipients(EmailAddress("lena@example.com"))
    notice, _ = failure_message(to)
    with pytest.raises(NotifierError) as info:
        notifiers.send(
            Route("smtp", "bkci_no_such_mail", ("lena@example.com",)), compose(notice, to, BASE_URL)
        )
    assert info.value.permanent
    assert "email connection 'bkci_no_such_mail' does not exist" in str(info.value)
    assert "[bkci] notify_email_conn_id" in str(info.value)


# -- apprise, for real -----------------------------------------------------------


def apprise_connection(receiver: HttpReceiver, tag: str = "oncall") -> str:
    service = {"path": f"json://127.0.0.1:{receiver.port}/notify", "tag": tag}
    return json.dumps({"conn_type": "apprise", "extra": {"config": service}})


def test_apprise_posts_the_message_to_a_local_endpoint(
    http_receiver: HttpReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BKCI_CHAT", apprise_connection(http_receiver))
    notifiers = AirflowNotifiers("smtp_default")
    to = recipients(ChannelAddress("bkci_chat", "oncall"))
    notice, _ = failure_message(to)
    (route,) = notifiers.plan(to).routes

    notifiers.send(route, compose(notice, to, BASE_URL))

    (post,) = http_receiver.posts
    assert post["path"] == "/notify"
    assert post["body"]["title"] == "[bkci] FAILED etl_daily #7: load (try 1 of 1) failed"
    assert post["body"]["type"] == "failure"
    assert "KeyError: 'id' {{ not a template }}" in post["body"]["message"]
    assert "tasks/load?try_number=1" in post["body"]["message"]


def test_apprise_answers_become_clear_errors(
    http_receiver: HttpReceiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BKCI_CHAT", apprise_connection(http_receiver))
    notifiers = AirflowNotifiers("smtp_default")
    to = recipients(ChannelAddress("bkci_chat", "nobody"))
    notice, _ = failure_message(to)
    message = compose(notice, to, BASE_URL)
    with pytest.raises(NotifierError, match="no service of apprise connection 'bkci_chat' has tag"):
        notifiers.send(Route("apprise", "bkci_chat", ("nobody",)), message)

    http_receiver.status = 500
    with pytest.raises(NotifierError) as info:
        notifiers.send(Route("apprise", "bkci_chat", ("oncall",)), message)
    assert not info.value.permanent and "could not deliver" in str(info.value)

    monkeypatch.setenv("AIRFLOW_CONN_BKCI_CHAT", json.dumps({"conn_type": "apprise"}))
    with pytest.raises(NotifierError, match="has no usable 'config'") as info:
        notifiers.send(Route("apprise", "bkci_chat", ()), message)
    assert info.value.permanent
