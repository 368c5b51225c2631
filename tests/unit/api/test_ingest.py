"""POST /ingest takes worker records into the store, and refuses what it must, per item."""

from __future__ import annotations

import json
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

import airflow_bkci.store
from airflow_bkci.api.app import create_app
from airflow_bkci.exceptions import StoreUnavailable
from airflow_bkci.model.event import StatusEvent
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.spool.forwarder import Forwarder
from airflow_bkci.spool.spool import Spool
from tests.records import worker_record

with warnings.catch_warnings():
    # Starlette 1.x warns when its TestClient falls back to httpx (it wants httpx2).
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

SECRET = "s3cret"
AUTH = {"Authorization": f"Bearer {SECRET}"}


@dataclass
class ApplyResult:
    rejected: list[tuple[StatusEvent, str]] = field(default_factory=list)


class FakeStore:
    def __init__(self) -> None:
        self.events: list[StatusEvent] = []
        self.quarantined: list[tuple[str, str, str]] = []
        self.down = False
        self.reject_task: str | None = None

    def apply(self, events: Sequence[StatusEvent]) -> ApplyResult:
        if self.down:
            raise StoreUnavailable("database is restarting")
        result = ApplyResult()
        for event in events:
            if event.node.task_id == self.reject_task:
                result.rejected.append((event, "FAILED -> RUNNING is not allowed"))
            else:
                self.events.append(event)
        return result

    def quarantine(self, payload: str, reason: str, source: str) -> None:
        self.quarantined.append((payload, reason, source))


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def client(store: FakeStore) -> TestClient:
    return TestClient(create_app(store_factory=lambda: store, secret=lambda: SECRET))


def record(task_id: str = "t", **extra: Any) -> dict[str, Any]:
    return worker_record(task_id, **{"state": "success", **extra})


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing 'Authorization: Bearer"),
        ({"Authorization": "Basic s3cret"}, "missing 'Authorization: Bearer"),
        ({"Authorization": "Bearer wrong"}, "wrong ingest secret"),
    ],
)
def test_requests_without_the_secret_are_refused(
    client: TestClient, store: FakeStore, headers: dict[str, str], message: str
) -> None:
    response = client.post("/ingest", json=[record()], headers=headers)
    assert response.status_code == 401
    assert message in response.json()["detail"]
    assert store.events == []


def test_valid_records_reach_the_store_as_events(client: TestClient, store: FakeStore) -> None:
    batch = [record("a"), record("b", state="up_for_retry", error="ValueError: boom")]
    response = client.post("/ingest", json=batch, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "rejected": []}
    assert [(e.node.task_id, e.status) for e in store.events] == [
        ("a", BuildStatus.SUCCEED),
        ("b", BuildStatus.RETRY),
    ]
    assert store.events[1].fields["error"] == "ValueError: boom"


def test_invalid_records_are_quarantined_and_reported_by_index(
    client: TestClient, store: FakeStore
) -> None:
    batch = [record("a"), record("b", try_number=-1), "junk", record("c")]
    response = client.post("/ingest", json=batch, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 2,
        "rejected": [
            {"index": 1, "reason": "field 'try_number' must be >= 0, got -1"},
            {"index": 2, "reason": "a record must be a JSON object, got str"},
        ],
    }
    assert [e.node.task_id for e in store.events] == ["a", "c"]
    assert [(json.loads(p), source) for p, _, source in store.quarantined] == [
        (record("b", try_number=-1), "worker@h:1"),
        ("junk", "unknown"),
    ]


def test_events_the_store_rejects_are_reported_with_their_index(
    client: TestClient, store: FakeStore
) -> None:
    store.reject_task = "b"
    response = client.post("/ingest", json=[record("a"), record("b")], headers=AUTH)
    assert response.json() == {
        "accepted": 1,
        "rejected": [{"index": 1, "reason": "FAILED -> RUNNING is not allowed"}],
    }


def test_store_down_answers_503_with_retry_after(client: TestClient, store: FakeStore) -> None:
    store.down = True
    response = client.post("/ingest", json=[record()], headers=AUTH)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "database is restarting" in response.json()["detail"]


def test_store_that_cannot_be_opened_answers_503_and_is_retried(store: FakeStore) -> None:
    calls = []

    def factory() -> FakeStore:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("connection refused")
        return store

    client = TestClient(create_app(store_factory=factory, secret=lambda: SECRET))
    first = client.post("/ingest", json=[record()], headers=AUTH)
    assert first.status_code == 503 and "connection refused" in first.json()["detail"]
    assert client.get("/health").json() == {"status": "ok", "store": "not_opened"}
    assert client.post("/ingest", json=[record()], headers=AUTH).json()["accepted"] == 1
    assert client.post("/ingest", json=[record()], headers=AUTH).json()["accepted"] == 1
    assert len(calls) == 2 and len(store.events) == 2
    assert client.get("/health").json() == {"status": "ok", "store": "ready"}


def test_default_store_is_built_from_conf_and_migrated_once(
    monkeypatch: pytest.MonkeyPatch, store: FakeStore
) -> None:
    built: list[str] = []

    class Store:
        @classmethod
        def from_conf(cls) -> Store:
            built.append("from_conf")
            return cls()

        def migrate(self) -> None:
            built.append("migrate")

        def apply(self, events: Sequence[StatusEvent]) -> ApplyResult:
            return store.apply(events)

        def quarantine(self, payload: str, reason: str, source: str) -> None:
            store.quarantine(payload, reason, source)

    monkeypatch.setattr(airflow_bkci.store, "Store", Store, raising=False)
    client = TestClient(create_app(secret=lambda: SECRET))
    for _ in range(3):
        assert client.post("/ingest", json=[record()], headers=AUTH).status_code == 200
    assert built == ["from_conf", "migrate"] and len(store.events) == 3


def test_body_over_the_limit_is_413(store: FakeStore) -> None:
    client = TestClient(
        create_app(store_factory=lambda: store, secret=lambda: SECRET, max_body_bytes=1000)
    )
    response = client.post("/ingest", json=[record(f"t{i}") for i in range(10)], headers=AUTH)
    assert response.status_code == 413
    assert "over 1000 bytes" in response.json()["detail"]
    assert store.events == []


def test_streamed_body_over_the_limit_is_413(store: FakeStore) -> None:
    client = TestClient(
        create_app(store_factory=lambda: store, secret=lambda: SECRET, max_body_bytes=1000)
    )
    chunks = iter([b"[" + b" " * 600, b" " * 600 + b"]"])  # no Content-Length: chunked
    response = client.post("/ingest", content=chunks, headers=AUTH)
    assert response.status_code == 413


def test_too_many_records_is_413(store: FakeStore) -> None:
    client = TestClient(create_app(store_factory=lambda: store, secret=lambda: SECRET, max_items=2))
    response = client.post("/ingest", json=[record()] * 3, headers=AUTH)
    assert response.status_code == 413 and "limit is 2" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [(b"{oops", 400, "body is not JSON"), (b'{"a": 1}', 422, "must be a JSON list")],
)
def test_body_that_is_not_a_list_of_records_is_refused(
    client: TestClient, body: bytes, status: int, message: str
) -> None:
    response = client.post("/ingest", content=body, headers=AUTH)
    assert response.status_code == status and message in response.json()["detail"]


def test_missing_server_secret_is_a_clear_500(store: FakeStore) -> None:
    from airflow_bkci.exceptions import ConfigError

    def no_secret() -> str:
        raise ConfigError("[bkci] ingest_secret is empty")

    client = TestClient(create_app(store_factory=lambda: store, secret=no_secret))
    response = client.post("/ingest", json=[record()], headers=AUTH)
    assert response.status_code == 500
    assert "ingest_secret is empty" in response.json()["detail"]


@pytest.fixture
def live_url(store: FakeStore) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(store_factory=lambda: store, secret=lambda: SECRET),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/ingest"
    server.should_exit = True
    thread.join(5)


def test_forwarder_to_the_real_app_over_http(
    tmp_path: Path, store: FakeStore, live_url: str
) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.append(record("a", state="running"))
    spool.append(record("b", map_index=-7))  # the worker validates too: never sent
    spool.append(record("c", state="failed", error="KeyError: 'x'"))
    forwarder = Forwarder(spool, live_url, SECRET)
    assert forwarder.send_now(5.0) is True
    assert [(e.node.task_id, e.status) for e in store.events] == [
        ("a", BuildStatus.RUNNING),
        ("c", BuildStatus.FAILED),
    ]
    assert spool.pending_count() == 0
    assert [reason for _, _, reason in spool.quarantined()] == [
        "field 'map_index' must be >= -1, got -7"
    ]


def test_records_land_in_the_real_store(tmp_path: Path) -> None:
    from airflow_bkci.store import Store

    real = Store(f"sqlite:///{tmp_path / 'status.db'}")
    real.migrate()
    client = TestClient(create_app(store_factory=lambda: real, secret=lambda: SECRET))
    batch = [
        record("t", state="running", start_date="2026-01-01T00:00:00+00:00", hostname="h1"),
        record("t", seq=2, at="2026-01-01T00:00:03+00:00", end_date="2026-01-01T00:00:03+00:00"),
        record("x", try_number=-1),
    ]
    response = client.post("/ingest", json=batch, headers=AUTH)
    assert response.json()["accepted"] == 2
    build = real.find_build("etl", "r1")
    assert build is not None
    task = build["stages"]["__ungrouped__"]["tasks"]["t"]
    assert (task["status"], task["host"], task["duration_ms"]) == ("SUCCEED", "h1", 3000)
    real.dispose()
