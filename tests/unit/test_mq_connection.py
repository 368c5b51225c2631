"""A bkci_mq connection becomes a broker, or a clear error naming the connection."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from airflow.models.connection import Connection

from airflow_bkci.channels.envelope import EVENT_SNAPSHOT
from airflow_bkci.channels.mq import MqChannel
from airflow_bkci.channels.signing import generate_secret
from airflow_bkci.channels.webhook import WebhookChannel
from airflow_bkci.exceptions import ConfigError
from airflow_bkci.get_provider_info import get_provider_info
from airflow_bkci.hooks.mq import broker_from_connection, configured_mq_channels
from airflow_bkci.hooks.webhook import dispatcher_from_conf
from airflow_bkci.store import Store


def conn(**kw: Any) -> Connection:
    kw.setdefault("conn_type", "bkci_mq")
    if isinstance(kw.get("extra"), dict):
        kw["extra"] = json.dumps(kw["extra"])
    return Connection(conn_id="mq", **kw)


def test_fields_make_an_amqp_url_with_the_vhost_and_quoted_credentials() -> None:
    broker = broker_from_connection(
        "mq", conn(host="rabbit", port=5672, login="ci", password="p@ss/word", schema="/")
    )
    assert broker.url == "amqp://ci:p%40ss%2Fword@rabbit:5672/%2F"
    assert broker.confirms and broker.exchange == "bkci.builds" and not broker.batch
    assert "p@ss" not in repr(broker)


def test_redis_transport_takes_the_database_from_schema() -> None:
    broker = broker_from_connection(
        "mq", conn(host="cache", port=6379, schema="3", extra={"transport": "redis"})
    )
    assert broker.url == "redis://cache:6379/3" and not broker.confirms


def test_a_full_url_in_host_gets_the_credentials_of_their_fields() -> None:
    url = "amqp://rabbit:5672/ci"
    assert broker_from_connection("mq", conn(host=url)).url == url
    filled = broker_from_connection("mq", conn(host=url, login="bob", password="s3cret"))
    assert filled.url == "amqp://bob:s3cret@rabbit:5672/ci"
    own = broker_from_connection("mq", conn(host="redis://:pw@cache:6379/1", password="other"))
    assert own.url == "redis://:pw@cache:6379/1"  # the URL's own credentials win


def test_extras_set_exchange_batching_filters_and_timeouts() -> None:
    extra = {
        "exchange": "ci.events",
        "batch": "true",
        "pipelines": "deploy_*, etl",
        "event_types": [EVENT_SNAPSHOT],
        "confirm_timeout": "2.5",
        "connect_timeout": 1,
        "declare": False,
        "transport_options": {"global_keyprefix": "ci:"},
    }
    broker = broker_from_connection("mq", conn(host="rabbit", extra=extra))
    assert broker.exchange == "ci.events" and broker.batch and not broker.declare
    assert broker.pipelines == ("deploy_*", "etl") and not broker.wants_changes
    assert broker.accepts("etl") and not broker.accepts("other")
    assert (broker.confirm_timeout, broker.connect_timeout) == (2.5, 1.0)
    assert broker.transport_options == {"global_keyprefix": "ci:"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "connection 'mq' has no host"),
        ({"host": "ftp://u:hunter2@files/"}, "scheme 'ftp'"),
        ({"host": "r", "extra": {"transport": "kafka"}}, "extra 'transport' 'kafka' unknown"),
        ({"host": "r", "extra": {"exchnage": "x"}}, "extra ['exchnage'] unknown"),
        ({"host": "r", "extra": {"batch": "sometimes"}}, "extra 'batch' must be true or false"),
        ({"host": "r", "extra": {"confirm_timeout": "soon"}}, "'confirm_timeout' must be seconds"),
        ({"host": "r", "extra": {"connect_timeout": -1}}, "'connect_timeout' must be seconds"),
        ({"host": "r", "extra": {"pipelines": 3}}, "'pipelines' must be a list of strings"),
        ({"host": "r", "extra": {"event_types": ["nope"]}}, "event_types ['nope'] unknown"),
        ({"host": "r", "extra": {"exchange": ""}}, "exchange '' must be 1 to 255 bytes"),
        ({"host": "r", "extra": {"transport_options": []}}, "'transport_options' must be"),
    ],
)
def test_bad_connections_name_the_connection_and_the_fix(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        broker_from_connection("mq", conn(password="hunter2", **fields))
    assert message in str(info.value) and "'mq'" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_an_unknown_connection_is_left_out_and_the_others_go_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"conn_type": "bkci_mq", "host": "amqp://guest:guest@127.0.0.1:9//"}
    monkeypatch.setenv("AIRFLOW_CONN_GOOD_MQ", json.dumps(good))
    with caplog.at_level(logging.ERROR, logger="airflow_bkci"):
        channels = configured_mq_channels(["missing_mq", "good_mq"])
    assert [c.name for c in channels] == ["good_mq"]
    assert "message queue 'missing_mq' is not published to" in caplog.text


def test_the_dispatcher_from_conf_publishes_to_the_configured_queues(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook = {
        "conn_type": "bkci_webhook",
        "host": "http://127.0.0.1:9/",
        "password": generate_secret(),
    }
    mq = {"conn_type": "bkci_mq", "host": "redis://127.0.0.1:9/0"}
    monkeypatch.setenv("AIRFLOW_CONN_HOOK", json.dumps(hook))
    monkeypatch.setenv("AIRFLOW_CONN_QUEUE", json.dumps(mq))
    monkeypatch.setenv("AIRFLOW_CONN_BROKEN_QUEUE", json.dumps({**mq, "host": "nope://x"}))
    monkeypatch.setenv("AIRFLOW__BKCI__WEBHOOK_CONN_IDS", "hook")
    monkeypatch.setenv("AIRFLOW__BKCI__MQ_CONN_IDS", "queue, broken_queue, hook")
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    with caplog.at_level(logging.ERROR, logger="airflow_bkci"):
        dispatcher = dispatcher_from_conf(store)
    assert dispatcher is not None
    assert [(type(c), c.name) for c in dispatcher.channels] == [
        (WebhookChannel, "hook"),
        (MqChannel, "queue"),
    ]
    assert "message queue 'broken_queue' is not published to" in caplog.text
    assert "message queue 'hook' is not published to" in caplog.text  # a webhook, not a queue
    store.dispose()


def test_only_message_queues_configured_still_make_a_dispatcher(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QUEUE", json.dumps({"conn_type": "bkci_mq", "host": "r"}))
    monkeypatch.setenv("AIRFLOW__BKCI__WEBHOOK_CONN_IDS", "")
    monkeypatch.setenv("AIRFLOW__BKCI__MQ_CONN_IDS", "queue")
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    dispatcher = dispatcher_from_conf(store)
    assert dispatcher is not None and [c.name for c in dispatcher.channels] == ["queue"]
    monkeypatch.setenv("AIRFLOW__BKCI__MQ_CONN_IDS", "")
    assert dispatcher_from_conf(store) is None
    store.dispose()


def test_the_connection_type_is_registered_with_airflow() -> None:
    assert {
        "connection-type": "bkci_mq",
        "hook-class-name": "airflow_bkci.hooks.mq.BkciMqHook",
    } in get_provider_info()["connection-types"]


def test_outbox_replay_builds_each_endpoint_by_its_connection_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_bkci.cli.outbox import _configured_channels

    hook = {
        "conn_type": "bkci_webhook",
        "host": "http://127.0.0.1:9/",
        "password": generate_secret(),
    }
    monkeypatch.setenv("AIRFLOW_CONN_HOOK", json.dumps(hook))
    monkeypatch.setenv(
        "AIRFLOW_CONN_QUEUE", json.dumps({"conn_type": "bkci_mq", "host": "redis://127.0.0.1:9/0"})
    )
    channels = _configured_channels(["hook", "queue", "missing"])
    assert {name: type(c) for name, c in channels.items()} == {
        "hook": WebhookChannel,
        "queue": MqChannel,
    }
