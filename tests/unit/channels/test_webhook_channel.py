"""A webhook channel reads the proxy environment once, and honours it as requests would."""

from __future__ import annotations

import pytest

from airflow_bkci.channels.signing import generate_secret
from airflow_bkci.channels.webhook import Endpoint, WebhookChannel


def channel(url: str) -> WebhookChannel:
    return WebhookChannel(Endpoint("hook", url, generate_secret()))


def test_a_proxy_from_the_environment_is_used_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert channel("https://ci.example.com/hook").session.proxies == {
        "https": "http://proxy.internal:3128"
    }
    monkeypatch.setenv("NO_PROXY", "ci.example.com")
    assert channel("https://ci.example.com/hook").session.proxies == {}


def test_a_ca_bundle_from_the_environment_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/company-ca.pem")
    session = channel("https://ci.example.com/hook").session
    assert session.verify == "/etc/company-ca.pem"
    assert session.trust_env is False  # read once: not again on every request
