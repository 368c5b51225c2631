"""The forwarder delivers spooled records to a real HTTP receiver, and keeps them when it cannot."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from airflow_bkci.spool.forwarder import DEFAULT_WAIT, PENDING_SHOWN, Forwarder, backoff_delay
from airflow_bkci.spool.relay import relay
from airflow_bkci.spool.spool import Spool
from tests.records import worker_record

SECRET = "s3cret"


class Receiver:
    """An ingest route stand-in: records batches, answers as told."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.auth: list[str | None] = []
        self.status = 200
        self.headers: dict[str, str] = {}
        self.delay = 0.0
        self.reject_tasks: set[str] = set()
        self.max_batch: int | None = None
        self.release = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self.keep_alive = False  # answer as HTTP/1.1 and keep the connection open
        self.drop_idle = False  # then close it silently after each answer, as an idle timeout
        self.connections = 0

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for batch in self.batches for r in batch]

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/bkci/ingest"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                receiver.connections += 1
                if receiver.keep_alive:
                    self.protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.auth.append(self.headers.get("Authorization"))
                if receiver.delay:
                    receiver.release.wait(receiver.delay)
                if receiver.max_batch is not None and len(body) > receiver.max_batch:
                    return self._answer(413, {"detail": "too large"})
                if receiver.status != 200:
                    return self._answer(receiver.status, {"detail": "nope"})
                rejected = [
                    {"index": i, "reason": f"no such task {r['task_id']}"}
                    for i, r in enumerate(body)
                    if r["task_id"] in receiver.reject_tasks
                ]
                receiver.batches.append(
                    [r for r in body if r["task_id"] not in receiver.reject_tasks]
                )
                self._answer(200, {"accepted": len(body) - len(rejected), "rejected": rejected})

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if receiver.drop_idle:
                    self.close_connection = True

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    rec.server = ThreadingHTTPServer(("127.0.0.1", 0), rec.handler())
    rec.server.daemon_threads = True
    thread = threading.Thread(target=rec.server.serve_forever, daemon=True)
    thread.start()
    yield rec
    rec.release.set()
    rec.server.shutdown()
    rec.server.server_close()


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool.db")
    yield s
    s.close()


record = worker_record


def forwarder(spool: Spool, url: str, **kwargs: Any) -> Forwarder:
    kwargs.setdefault("connect_timeout", 0.5)
    kwargs.setdefault("read_timeout", 5.0)
    return Forwarder(spool, url, SECRET, **kwargs)


def free_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/bkci/ingest"


def test_drain_sends_every_row_in_batches_with_the_secret(spool: Spool, receiver: Receiver) -> None:
    for i in range(5):
        spool.append(record(f"t{i}", seq=i))
    result = forwarder(spool, receiver.url, batch_size=2).drain()
    assert (result.sent, result.error) == (5, None)
    assert [len(b) for b in receiver.batches] == [2, 2, 1]
    assert [r["task_id"] for r in receiver.records] == [f"t{i}" for i in range(5)]
    assert set(receiver.auth) == {f"Bearer {SECRET}"}
    assert spool.pending_count() == 0


def test_batches_share_one_kept_alive_connection(spool: Spool, receiver: Receiver) -> None:
    receiver.keep_alive = True
    for i in range(6):
        spool.append(record(f"t{i}", seq=i))
    result = forwarder(spool, receiver.url, batch_size=2).drain()
    assert (result.sent, result.error) == (6, None)
    assert receiver.connections == 1
    assert spool.pending_count() == 0


def test_a_connection_the_receiver_closed_while_idle_is_replaced(
    spool: Spool, receiver: Receiver
) -> None:
    receiver.keep_alive = receiver.drop_idle = True
    fwd = forwarder(spool, receiver.url)
    for i in range(3):
        spool.append(record(f"t{i}", seq=i))
        time.sleep(0.05)  # the receiver has closed the previous connection by now
        result = fwd.drain()
        assert (result.sent, result.error) == (1, None)
    assert [r["task_id"] for r in receiver.records] == ["t0", "t1", "t2"]
    assert spool.pending_count() == 0


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/ingest", "http:///no-host", "not a url"])
def test_an_unusable_ingest_url_keeps_the_rows_and_says_why(spool: Spool, url: str) -> None:
    spool.append(record())
    result = forwarder(spool, url).drain()
    assert result.sent == 0
    assert result.error is not None and "is not an http(s) URL" in result.error
    assert spool.pending_count() == 1


def test_receiver_down_leaves_rows_and_send_now_returns_early(spool: Spool) -> None:
    for i in range(3):
        spool.append(record(f"t{i}"))
    fwd = forwarder(spool, free_port_url())
    started = time.monotonic()
    assert fwd.send_now(30.0) is False
    assert time.monotonic() - started < 10  # a refused connection ends it, not the 30 s
    assert spool.pending_count() == 3
    assert spool.claim(10) != []  # released, not leased: the relay can take them now


def test_slow_receiver_send_now_returns_within_its_timeout(
    spool: Spool, receiver: Receiver
) -> None:
    receiver.delay = 30.0
    spool.append(record())
    fwd = forwarder(spool, receiver.url)
    started = time.monotonic()
    assert fwd.send_now(0.5) is False
    assert time.monotonic() - started < 10  # its timeout, not the receiver's 30 s
    assert spool.pending_count() == 1  # never acked: the process may exit now


def test_send_now_sends_everything_on_the_calling_thread(spool: Spool, receiver: Receiver) -> None:
    for i in range(5):
        spool.append(record(f"t{i}"))
    fwd = forwarder(spool, receiver.url, batch_size=2)
    assert fwd.send_now(5.0) is True
    assert [r["task_id"] for r in receiver.records] == [f"t{i}" for i in range(5)]
    assert spool.pending_count() == 0
    assert spool.backoff(receiver.url) is None


def test_item_rejected_by_receiver_is_quarantined_and_the_rest_acked(
    spool: Spool, receiver: Receiver
) -> None:
    receiver.reject_tasks = {"ghost"}
    spool.append(record("a"))
    ghost = spool.append(record("ghost"))
    spool.append(record("b"))
    result = forwarder(spool, receiver.url).drain()
    assert (result.sent, result.quarantined) == (2, 1)
    assert [r["task_id"] for r in receiver.records] == ["a", "b"]
    assert spool.pending_count() == 0
    ((row_id, text, reason),) = spool.quarantined()
    assert row_id == ghost and json.loads(text)["task_id"] == "ghost"
    assert reason == "rejected by receiver: no such task ghost"


def test_wrong_secret_keeps_rows_and_logs_the_fix(
    spool: Spool, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 401
    spool.append(record())
    fwd = forwarder(spool, receiver.url)
    with caplog.at_level(logging.WARNING, logger="airflow_bkci"):
        assert fwd.send_now(3.0) is False
    assert spool.pending_count() == 1
    assert receiver.records == []
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("HTTP 401" in m and "ingest_secret" in m and "1 records stay" in m for m in messages)


def test_a_failed_exit_counts_a_big_backlog_no_further_than_it_says(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    # The warning names the backlog, but a task runner's exit must not walk a
    # host's whole spool to say so (100,000 rows cost about 7 ms).
    for _ in range(PENDING_SHOWN + 5):
        spool.append(record())
    counted: list[int | None] = []
    full = spool.pending_count

    def counting(limit: int | None = None) -> int:
        counted.append(limit)
        return full(limit)

    spool.pending_count = counting  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="airflow_bkci"):
        assert forwarder(spool, free_port_url()).send_now(2.0) is False
    assert counted == [PENDING_SHOWN]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{PENDING_SHOWN} or more records stay" in m for m in messages), messages
    assert full() == PENDING_SHOWN + 5  # nothing lost


def test_unavailable_receiver_keeps_rows_and_honours_retry_after(
    spool: Spool, receiver: Receiver
) -> None:
    receiver.status, receiver.headers = 503, {"Retry-After": "7"}
    spool.append(record())
    result = forwarder(spool, receiver.url).drain()
    assert result.error is not None and "HTTP 503" in result.error
    assert result.retry_after == 7.0
    assert spool.pending_count() == 1


def test_too_large_batches_are_split_until_they_fit(spool: Spool, receiver: Receiver) -> None:
    receiver.max_batch = 2
    for i in range(7):
        spool.append(record(f"t{i}"))
    fwd = forwarder(spool, receiver.url, batch_size=8)
    for _ in range(5):
        fwd.drain()
    assert sorted(r["task_id"] for r in receiver.records) == [f"t{i}" for i in range(7)]
    assert fwd.batch_size <= 2 and spool.pending_count() == 0


def test_malformed_rows_are_quarantined_and_never_block_the_queue(
    spool: Spool, receiver: Receiver
) -> None:
    spool.append_text("{not json")
    spool.append({"dag_id": "etl"})
    spool.append(record("bad-state", state="exploded"))
    spool.append(record("good"))
    result = forwarder(spool, receiver.url, batch_size=1).drain()
    assert [r["task_id"] for r in receiver.records] == ["good"]
    assert (result.sent, result.quarantined) == (1, 3)
    reasons = [reason for _, _, reason in spool.quarantined()]
    assert reasons[0].startswith("not JSON")
    assert reasons[1] == "field 'run_id' is missing"
    assert reasons[2] == "field 'state' is not an Airflow task state: 'exploded'"
    assert spool.pending_count() == 0


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    delays = [backoff_delay(DEFAULT_WAIT, n) for n in range(1, 12)]
    assert 0.5 <= delays[0] <= 1.0
    assert 8.0 <= delays[5] <= 30.0
    assert all(d <= 30.0 for d in delays)


def test_relay_once_drains_and_reports(spool: Spool, receiver: Receiver) -> None:
    for i in range(3):
        spool.append(record(f"t{i}"))
    lines: list[str] = []
    assert relay(True, forwarder=forwarder(spool, receiver.url), echo=lines.append) == 0
    assert len(receiver.records) == 3 and spool.pending_count() == 0
    assert "sent 3, quarantined 0, pending 0" in lines[-1]


def test_relay_once_fails_when_the_receiver_is_down(spool: Spool) -> None:
    spool.append(record())
    lines: list[str] = []
    assert relay(True, forwarder=forwarder(spool, free_port_url()), echo=lines.append) == 1
    assert spool.pending_count() == 1
    assert "send failed: ConnectionRefusedError" in lines[-1]


def test_relay_forever_backs_off_after_failures(spool: Spool) -> None:
    spool.append(record())
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    fwd = forwarder(spool, free_port_url())
    assert relay(False, forwarder=fwd, echo=lambda _: None, sleep=sleep) == 0
    assert len(sleeps) == 3 and spool.pending_count() == 1


def test_a_failure_makes_every_forwarder_on_the_host_skip_until_the_backoff_ends(
    spool: Spool, receiver: Receiver, tmp_path: Path
) -> None:
    # A task runner's exit must not wait on a receiver that just failed,
    # whichever process on the host saw it fail.
    receiver.status = 500
    spool.append(record())
    assert forwarder(spool, receiver.url).send_now(5.0) is False
    tried = len(receiver.auth)
    state = spool.backoff(receiver.url)
    assert state is not None and state.failures == 1 and "HTTP 500" in state.error
    assert state.retry_at > time.time()

    other_process = Spool(tmp_path / "spool.db")  # another task runner's connection
    assert forwarder(other_process, receiver.url).send_now(5.0) is False
    assert len(receiver.auth) == tried  # skipped: no request at all
    assert other_process.pending_count() == 1

    receiver.status = 200
    with other_process._lock:  # the backoff has run out
        other_process._db().execute("UPDATE receiver_backoff SET retry_at = 0")
    assert forwarder(other_process, receiver.url).send_now(5.0) is True
    assert [r["task_id"] for r in receiver.records] == ["t"]
    assert spool.backoff(receiver.url) is None  # forgotten for everyone
    other_process.close()


def test_failures_in_a_row_back_off_longer_and_honour_retry_after(
    spool: Spool, receiver: Receiver
) -> None:
    receiver.status, receiver.headers = 503, {"Retry-After": "40"}
    spool.append(record())
    fwd = forwarder(spool, receiver.url)
    delay = fwd.record_outcome(fwd.drain())
    assert delay is not None and 39.0 <= delay <= 40.0
    receiver.headers = {}
    delays = [fwd.record_outcome(fwd.drain()) for _ in range(6)]
    state = spool.backoff(receiver.url)
    assert state is not None and state.failures == 7
    assert all(d is not None for d in delays)
    assert delays[-1] is not None and delays[-1] >= 8.0 > (delays[0] or 0.0)


def test_relay_success_clears_the_hosts_backoff(spool: Spool, receiver: Receiver) -> None:
    spool.receiver_failed(receiver.url, "HTTP 500", lambda _: 600.0)
    spool.append(record())
    assert relay(True, forwarder=forwarder(spool, receiver.url), echo=lambda _: None) == 0
    assert spool.backoff(receiver.url) is None
