"""The gate's connection: a token or a login; what cannot work fails for good, the rest waits."""

from __future__ import annotations

import json
import socket

import pytest

from airflow_bkci.gates import GateConnectionError, ReadUnavailable
from airflow_bkci.gates.access import api_access
from tests.unit.operators.test_cancel_operator import FakeApiServer


def connection(monkeypatch: pytest.MonkeyPatch, **fields: object) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_GATE_API", json.dumps({"conn_type": "http", **fields}))


def test_a_token_in_extra_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    connection(monkeypatch, host="http://api:8080/", extra={"token": "jwt-9", "timeout": 7})
    access = api_access("gate_api")
    assert (access.base_url, access.token, access.timeout) == ("http://api:8080", "jwt-9", 7.0)
    assert "jwt-9" not in repr(access)


def test_a_login_gets_a_token_and_a_refused_one_fails_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = FakeApiServer()
    try:
        connection(monkeypatch, host=server.url, login="ci", password="s3cret")
        assert api_access("gate_api").token == "jwt-1"
        connection(monkeypatch, host=server.url, login="ci", password="wrong")
        with pytest.raises(GateConnectionError, match="its login was refused \\(HTTP 401"):
            api_access("gate_api")
    finally:
        server.httpd.shutdown()


def test_a_missing_or_hostless_connection_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(GateConnectionError, match=r"'nowhere' cannot reach .*: no such connection"):
        api_access("nowhere")
    connection(monkeypatch, login="ci", password="x")
    with pytest.raises(GateConnectionError, match="has no host: set the API server's URL"):
        api_access("gate_api")


def test_an_api_server_that_is_down_may_answer_later(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    connection(monkeypatch, host=f"http://127.0.0.1:{port}", login="ci", password="x")
    with pytest.raises(ReadUnavailable, match="cannot reach the API server of connection"):
        api_access("gate_api")
