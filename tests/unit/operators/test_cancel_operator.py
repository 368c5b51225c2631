"""BatchCancelOperator: what it asks the API server, and what it does with the answer."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_bkci.hooks.api import BkciApiClient, BkciApiError
from airflow_bkci.operators import BatchCancelOperator
from airflow_bkci.operators.cancel import as_build_refs

RUN_AFTER = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
CONTEXT = {"dag_run": SimpleNamespace(dag_id="deploy", run_id="manual__3", run_after=RUN_AFTER)}


class FakeApiServer:
    """Answers /auth/token and the cancel route; records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any], str | None]] = []
        self.answer: tuple[int, dict[str, Any]] = (
            200,
            {"cancel_id": "c-1", "builds": [], "summary": {}},
        )
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, body, self.headers.get("Authorization")))
                if self.path == "/auth/token":
                    ok = body == {"username": "ci", "password": "s3cret"}
                    code, payload = (
                        (201, {"access_token": "jwt-1"}) if ok else (401, {"detail": "bad login"})
                    )
                else:
                    code, payload = server.answer
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    conn = {"conn_type": "http", "host": server.url, "login": "ci", "password": "s3cret"}
    monkeypatch.setenv("AIRFLOW_CONN_BKCI_API", json.dumps(conn))
    yield server
    server.httpd.shutdown()


def test_earlier_runs_of_this_dag_in_one_line(api: FakeApiServer) -> None:
    op = BatchCancelOperator(
        task_id="cancel_earlier", cancel_earlier_runs=True, reason="superseded"
    )
    op.execute(CONTEXT)
    (login, cancel) = api.requests
    assert login[0] == "/auth/token"
    path, body, auth = cancel
    assert (path, auth) == ("/bkci/v1/builds/cancel", "Bearer jwt-1")
    assert body == {
        "reason": "superseded",
        "dry_run": False,
        "chunked": False,
        "filter": {
            "states": ["queued", "running"],
            "dag_ids": ["deploy"],
            "due_before": "2026-12-01T10:00:00+00:00",
            "exclude": [{"dag_id": "deploy", "run_id": "manual__3"}],
        },
    }


def test_builds_from_xcom_in_any_shape(api: FakeApiServer) -> None:
    found = [{"dag_id": "etl", "run_id": "r1"}, ("etl", "r2"), "etl/r3/x"]
    op = BatchCancelOperator(task_id="t", builds=found, reason="stale", dry_run=True)
    api.answer = (200, {"cancel_id": "c-9", "builds": [], "summary": {"canceled": 3}})
    assert op.execute(CONTEXT)["cancel_id"] == "c-9"
    body = api.requests[-1][1]
    assert body["builds"] == [
        {"dag_id": "etl", "run_id": "r1"},
        {"dag_id": "etl", "run_id": "r2"},
        {"dag_id": "etl", "run_id": "r3/x"},
    ]
    assert body["dry_run"] is True


def test_a_filter_with_age_and_conf(api: FakeApiServer) -> None:
    op = BatchCancelOperator(
        task_id="t",
        dag_ids=["etl"],
        older_than=timedelta(hours=6),
        conf_match={"env": "prod"},
        reason="r",
    )
    op.execute(CONTEXT)
    assert api.requests[-1][1]["filter"] == {
        "states": ["queued", "running"],
        "dag_ids": ["etl"],
        "older_than_seconds": 21600.0,
        "conf": {"env": "prod"},
    }


def test_an_empty_xcom_cancels_nothing_and_calls_nobody(api: FakeApiServer) -> None:
    result = BatchCancelOperator(task_id="t", builds=[], reason="r").execute(CONTEXT)
    assert result["builds"] == [] and api.requests == []


def test_a_refusal_fails_the_task_without_retries(api: FakeApiServer) -> None:
    api.answer = (
        403,
        {"detail": {"message": "you may not edit 1 of the 2 DAGs", "dags": ["prod"]}},
    )
    op = BatchCancelOperator(task_id="t", builds=["prod/r1"], reason="r")
    with pytest.raises(AirflowFailException, match="HTTP 403: you may not edit 1 of the 2 DAGs"):
        op.execute(CONTEXT)


def test_a_server_fault_is_left_to_retries(api: FakeApiServer) -> None:
    api.answer = (503, {"detail": {"message": "Airflow's database is unavailable"}})
    op = BatchCancelOperator(task_id="t", builds=["etl/r1"], reason="r")
    with pytest.raises(BkciApiError) as fault:
        op.execute(CONTEXT)
    assert fault.value.status == 503 and not fault.value.is_refusal


def test_a_wrong_password_says_who_could_not_log_in(
    api: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "http", "host": api.url, "login": "ci", "password": "wrong"}
    monkeypatch.setenv("AIRFLOW_CONN_BKCI_API", json.dumps(conn))
    with pytest.raises(AirflowFailException, match="login as 'ci'"):
        BatchCancelOperator(task_id="t", builds=["etl/r1"], reason="r").execute(CONTEXT)


def test_exactly_one_way_to_choose_builds() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        BatchCancelOperator(task_id="t", reason="r")
    with pytest.raises(ValueError, match="exactly one of"):
        BatchCancelOperator(task_id="t", reason="r", builds=["a/b"], dag_ids=["a"])
    with pytest.raises(ValueError, match="is not a build"):
        as_build_refs(["no-slash"])


def test_a_token_in_extra_needs_no_login() -> None:
    client = BkciApiClient("http://api:8080/", token="jwt-x")
    assert client._bearer() == "jwt-x"
    with pytest.raises(Exception, match="needs http"):
        BkciApiClient("api:8080", token="t")
