"""[bkci] notify_* options make the notification channel, or say clearly why they cannot."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_bkci.channels.notify import CHANNEL_NAME, NotifyChannel, configured_notify_channels
from airflow_bkci.exceptions import ConfigError
from airflow_bkci.hooks.webhook import dispatcher_from_conf
from airflow_bkci.store import Store

OWNERS = "* team@example.com\netl/load conn:bkci_chat:etl\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    yield store
    store.dispose()


@pytest.fixture
def owners(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "owners"
    path.write_text(OWNERS)
    chat = {"conn_type": "apprise", "extra": {"config": {"path": "json://127.0.0.1:9/"}}}
    monkeypatch.setenv("AIRFLOW_CONN_BKCI_CHAT", json.dumps(chat))
    monkeypatch.setenv("AIRFLOW__BKCI__WEBHOOK_CONN_IDS", "")
    monkeypatch.setenv("AIRFLOW__BKCI__MQ_CONN_IDS", "")
    return path


def test_nothing_is_sent_unless_an_owners_file_or_notify_enabled_says_so(
    store: Store, owners: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert dispatcher_from_conf(store) is None
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_ENABLED", "True")
    assert [type(c) for c in configured_notify_channels(store)] == [NotifyChannel]
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_ENABLED", "False")
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_OWNERS_FILE", str(owners))
    assert configured_notify_channels(store) == []


def test_an_owners_file_puts_the_channel_in_the_dispatcher_with_its_options(
    store: Store, owners: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_OWNERS_FILE", str(owners))
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_RATE_LIMIT", "5")
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_RATE_WINDOW", "900")
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_CANCELED", "True")
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_EMAIL_CONN_ID", "smtp_ops")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com")

    dispatcher = dispatcher_from_conf(store)

    assert dispatcher is not None
    (channel,) = dispatcher.channels
    assert isinstance(channel, NotifyChannel) and channel.name == CHANNEL_NAME
    assert not channel.wants_changes
    assert channel.settings.rate_limit.messages == 5
    assert channel.settings.rate_limit.window.total_seconds() == 900
    assert channel.settings.policy.canceled and channel.settings.policy.recovered
    assert channel.settings.base_url == "https://airflow.example.com"
    assert channel.notifiers.email_conn_id == "smtp_ops"  # type: ignore[attr-defined]
    rules = channel.rules()
    assert rules is not None and len(rules.rules) == 2


def test_an_owners_file_that_does_not_parse_turns_notifications_off_naming_the_line(
    store: Store, owners: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    owners.write_text("* team@example.com\netl/load/extra someone@example.com\n")
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_OWNERS_FILE", str(owners))
    with caplog.at_level(logging.ERROR, logger="airflow_bkci"):
        assert configured_notify_channels(store) == []
    assert f"{owners}, line 2 ('etl/load/extra someone@example.com')" in caplog.text
    assert "has more than one '/'" in caplog.text and "notifications are off" in caplog.text


def test_a_rule_naming_a_missing_connection_is_reported_and_the_others_work(
    store: Store, owners: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_BKCI_CHAT")
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_OWNERS_FILE", str(owners))
    with caplog.at_level(logging.ERROR, logger="airflow_bkci"):
        (channel,) = configured_notify_channels(store)
    assert f"{owners}, line 2 ('etl/load conn:bkci_chat:etl')" in caplog.text
    assert "connection 'bkci_chat' does not exist" in caplog.text
    assert "airflow connections add bkci_chat" in caplog.text
    rules = channel.rules()
    assert rules is not None and len(rules.rules) == 2


def test_a_bad_option_value_is_a_clear_error(
    store: Store, owners: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_bkci import conf

    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_ENABLED", "sometimes")
    with pytest.raises(ConfigError, match="notify_enabled='sometimes' is not auto, True or False"):
        conf.notify_enabled()
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_ENABLED", "auto")
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_OWNERS_FILE", str(owners))
    monkeypatch.setenv("AIRFLOW__BKCI__NOTIFY_RATE_LIMIT", "0")
    with caplog.at_level(logging.ERROR, logger="airflow_bkci"):
        assert configured_notify_channels(store) == []
    assert "notify_rate_limit is 0; it must be at least 1" in caplog.text
