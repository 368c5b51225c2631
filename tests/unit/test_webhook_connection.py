"""A bkci_webhook connection becomes an endpoint, or a clear error naming the connection."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from airflow.models.connection import Connection

from airflow_bkci.channels.envelope import EVENT_SNAPSHOT
from airflow_bkci.channels.signing import generate_secret
from airflow_bkci.exceptions import ConfigError
from airflow_bkci.get_provider_info import get_provider_info
from airflow_bkci.hooks.webhook import configured_channels, endpoint_from_connection

SECRET = generate_secret()


def conn(**kw: Any) -> Connection:
    kw.setdefault("conn_type", "bkci_webhook")
    return Connection(conn_id="hook", **kw)


def test_full_url_secret_and_filters_make_an_endpoint() -> None:
    extra = json.dumps({"pipelines": ["deploy_*"], "event_types": [EVENT_SNAPSHOT], "timeout": 3})
    endpoint = endpoint_from_connection(
        "hook", conn(host="https://ci.example.com/hooks/bkci", password=SECRET, extra=extra)
    )
    assert endpoint.url == "https://ci.example.com/hooks/bkci"
    assert endpoint.accepts("deploy_web") and not endpoint.accepts("etl")
    assert not endpoint.wants_changes and endpoint.timeout == 3.0


def test_host_without_scheme_gets_https_and_the_port() -> None:
    endpoint = endpoint_from_connection("hook", conn(host="ci.local", port=8443, password=SECRET))
    assert endpoint.url == "https://ci.local:8443"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"password": SECRET}, "connection 'hook' has no host"),
        ({"host": "https://x", "password": "hunter2"}, "connection 'hook': password:"),
        ({"host": "https://x", "password": SECRET, "extra": '{"pipelines": 3}'}, "'pipelines'"),
        ({"host": "https://x", "password": SECRET, "extra": '{"timeout": "soon"}'}, "'timeout'"),
        (
            {"host": "https://x", "password": SECRET, "extra": '{"event_types": ["nope"]}'},
            "event_types ['nope'] unknown",
        ),
    ],
)
def test_bad_connections_name_the_connection_and_the_fix(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        endpoint_from_connection("hook", conn(**fields))
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)


def test_an_unknown_connection_is_left_out_and_the_others_go_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"conn_type": "bkci_webhook", "host": "http://127.0.0.1:9/", "password": SECRET}
    monkeypatch.setenv("AIRFLOW_CONN_GOOD_HOOK", json.dumps(good))
    with caplog.at_level(logging.ERROR, logger="airflow_bkci"):
        channels = configured_channels(["missing_hook", "good_hook"])
    assert [c.name for c in channels] == ["good_hook"]
    assert "webhook 'missing_hook' is not delivered to" in caplog.text


def test_the_connection_type_is_registered_with_airflow() -> None:
    assert {
        "connection-type": "bkci_webhook",
        "hook-class-name": "airflow_bkci.hooks.webhook.BkciWebhookHook",
    } in get_provider_info()["connection-types"]
