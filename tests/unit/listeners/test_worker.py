"""Task-runner hooks spool one record per hook, forward them later, and never raise."""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from airflow.sdk import DAG, BaseOperator
from airflow.sdk.api.datamodels._generated import DagRun, TIRunContext
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance, TaskRunnerMarker

from airflow_bkci.exceptions import InvalidEvent
from airflow_bkci.listeners import worker as worker_module
from airflow_bkci.listeners.worker import (
    MAX_ERROR_LEN,
    WorkerListener,
    error_summary,
    record_quality_check,
)
from airflow_bkci.model.event import build_id_for
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.spool.forwarder import Forwarder
from airflow_bkci.spool.records import record_to_event
from airflow_bkci.spool.spool import Spool
from airflow_bkci.store import Store

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
SECRET = "s3cret"


class LoadOperator(BaseOperator):
    pass


def runtime_ti(*, clear_number: int = 2, try_number: int = 1, map_index: int = -1) -> Any:
    with DAG("etl", schedule=None):
        task = LoadOperator(task_id="load", pool="etl_pool", queue="q1")
    run = DagRun(
        dag_id="etl", run_id="r1", logical_date=T0, data_interval_start=None,
        data_interval_end=None, run_after=T0, start_date=T0, end_date=None,
        clear_number=clear_number, run_type="manual", state="running",
        consumed_asset_events=[], partition_key=None,
    )  # fmt: skip
    # model_construct: the real class without the validation a running task already passed
    return RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(), task_id="load", dag_id="etl", run_id="r1", try_number=try_number,
        dag_version_id=uuid.uuid4(), map_index=map_index, hostname="worker-1", queue="q1",
        task=task, bundle_instance=mock.Mock(), start_date=T0, max_tries=3,
        _ti_context_from_server=TIRunContext(dag_run=run, max_tries=3),
    )  # fmt: skip


class Receiver(BaseHTTPRequestHandler):
    records: list[dict[str, Any]] = []
    delay = 0.0

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.delay)
        type(self).records.extend(body)
        data = json.dumps({"accepted": len(body), "rejected": []}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def receiver_url() -> Iterator[str]:
    Receiver.records, Receiver.delay = [], 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/bkci/ingest"
    server.shutdown()
    server.server_close()


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


@pytest.fixture
def make_listener(spool_path: Path) -> Any:

    def make(url: str = "http://127.0.0.1:9/none") -> WorkerListener:
        worker = WorkerListener(
            spool_factory=lambda: Spool(spool_path, autocheckpoint=False),
            forwarder_factory=lambda spool: Forwarder(spool, url, SECRET),
            flush_timeout=lambda: 2.0,
            enabled=lambda: True,
        )
        return worker

    return make


def spooled(spool_path: Path) -> list[dict[str, Any]]:
    """Every row still in the spool, leased by a forwarder or not."""
    if not spool_path.exists():
        return []
    with sqlite3.connect(spool_path) as db:
        rows = db.execute("SELECT record FROM spool ORDER BY id").fetchall()
    return [json.loads(text) for (text,) in rows]


def test_running_hook_spools_a_record_with_the_task_context(
    spool_path: Path, make_listener: Any
) -> None:
    ti = runtime_ti()
    make_listener().on_task_instance_running(previous_state="queued", task_instance=ti)
    (record,) = spooled(spool_path)
    assert record | {"at": None} == {
        "v": 1, "dag_id": "etl", "run_id": "r1", "task_id": "load", "map_index": -1,
        "try_number": 1, "clear_number": 2, "state": "running",
        "start_date": "2026-01-01T12:00:00+00:00", "end_date": None,
        "hostname": "worker-1", "queue": "q1", "pool": "etl_pool", "operator": "LoadOperator",
        "max_tries": 3, "label": None, "error": None,
        "source": f"worker@{socket.gethostname()}:{os.getpid()}", "seq": 1, "at": None,
    }  # fmt: skip
    assert record_to_event(record).status is BuildStatus.RUNNING


@pytest.mark.parametrize(
    ("ti_state", "expected"),
    [("up_for_retry", "up_for_retry"), ("failed", "failed"), (None, "failed")],
)
def test_failed_hook_tells_a_retry_from_a_failure(
    make_listener: Any, spool_path: Path, ti_state: str | None, expected: str
) -> None:
    ti = runtime_ti()
    ti.state, ti.end_date = ti_state, T0 + timedelta(seconds=5)
    error = ValueError("bad row 17\nTraceback details nobody wants here")
    make_listener().on_task_instance_failed(previous_state="running", task_instance=ti, error=error)
    (record,) = spooled(spool_path)
    assert (record["state"], record["error"]) == (expected, "ValueError: bad row 17")
    assert record["end_date"] == "2026-01-01T12:00:05+00:00"


def test_error_summary_is_short_and_names_the_type() -> None:
    assert error_summary(KeyError("x")) == "KeyError: 'x'"
    assert error_summary(RuntimeError()) == "RuntimeError"
    assert error_summary("Task received SIGTERM\nmore") == "Task received SIGTERM"
    assert error_summary(None) is None
    long = error_summary(ValueError("x" * 5000))
    assert long is not None and len(long) == MAX_ERROR_LEN and long.startswith("ValueError: xxx")


def test_each_hook_gets_the_next_seq_and_a_non_decreasing_time(
    spool_path: Path, make_listener: Any
) -> None:
    worker, ti = make_listener(), runtime_ti()
    worker.on_task_instance_running(previous_state="queued", task_instance=ti)
    worker.on_task_instance_success(previous_state="running", task_instance=ti)
    worker.on_task_instance_skipped(previous_state="running", task_instance=ti)
    records = spooled(spool_path)
    assert [(r["state"], r["seq"]) for r in records] == [
        ("running", 1), ("success", 2), ("skipped", 3),
    ]  # fmt: skip
    times = [datetime.fromisoformat(r["at"]) for r in records]
    assert times == sorted(times)
    events = [record_to_event(r) for r in records]
    assert [e.status for e in events] == [
        BuildStatus.RUNNING,
        BuildStatus.SUCCEED,
        BuildStatus.SKIP,
    ]
    assert [e.key for e in events] == sorted(e.key for e in events)


def test_a_hook_fired_twice_is_spooled_once(spool_path: Path, make_listener: Any) -> None:
    # A plugins-folder plugin is imported by both plugin managers, and one
    # listener can be registered with both listener managers.
    worker, ti = make_listener(), runtime_ti()
    for _ in range(2):
        worker.on_task_instance_running(previous_state="queued", task_instance=ti)
    ti.try_number = 2
    worker.on_task_instance_running(previous_state="queued", task_instance=ti)
    assert [(r["try_number"], r["seq"]) for r in spooled(spool_path)] == [(1, 1), (2, 2)]


def test_listeners_built_from_conf_share_one_runtime_per_process() -> None:
    assert WorkerListener()._rt is WorkerListener()._rt


def test_hooks_from_other_components_are_ignored(spool_path: Path, make_listener: Any) -> None:
    orm_like = mock.Mock(dag_id="etl", run_id="r1", task_id="load", try_number=1)
    make_listener().on_task_instance_success(previous_state=None, task_instance=orm_like)
    assert not spool_path.exists()  # not even opened


def test_records_reach_the_receiver_by_before_stopping(
    spool_path: Path, receiver_url: str, make_listener: Any
) -> None:
    worker, ti = make_listener(receiver_url), runtime_ti()
    worker.on_starting(component=TaskRunnerMarker())
    assert spool_path.exists()  # opened at start-up, before the first hook
    worker.on_task_instance_running(previous_state="queued", task_instance=ti)
    worker.on_task_instance_success(previous_state="running", task_instance=ti)
    assert worker.forwarder is None and Receiver.records == []  # nothing sent while it runs
    worker.before_stopping(component=TaskRunnerMarker())
    assert [r["state"] for r in Receiver.records] == ["running", "success"]
    assert Spool(spool_path).pending_count() == 0
    send = mock.Mock(wraps=worker.forwarder.send_now)
    worker.forwarder.send_now = send
    worker.before_stopping(component=TaskRunnerMarker())  # nothing new: no second send
    send.assert_not_called()


def test_before_stopping_of_another_component_does_not_send(
    spool_path: Path, receiver_url: str, make_listener: Any
) -> None:
    worker = make_listener(receiver_url)
    worker.on_task_instance_running(previous_state="queued", task_instance=runtime_ti())
    worker.before_stopping(component=object())
    assert Receiver.records == [] and len(spooled(spool_path)) == 1


def test_hooks_start_no_thread_and_do_no_network_io(
    spool_path: Path, receiver_url: str, make_listener: Any
) -> None:
    Receiver.delay = 10.0  # any network I/O in a hook would show as seconds
    worker, ti = make_listener(receiver_url), runtime_ti()
    threads = set(threading.enumerate())
    started = time.monotonic()
    worker.on_starting(component=TaskRunnerMarker())
    worker.on_task_instance_running(previous_state="queued", task_instance=ti)
    worker.on_task_instance_success(previous_state="running", task_instance=ti)
    assert time.monotonic() - started < 5
    assert set(threading.enumerate()) == threads
    started = time.monotonic()
    worker.before_stopping(component=TaskRunnerMarker())  # bounded by flush_timeout (2 s)
    assert time.monotonic() - started < 6  # flush_timeout (2 s), not the receiver's 10 s
    assert len(spooled(spool_path)) == 2  # still in flight: left for the relay


def test_exit_skips_a_receiver_the_host_saw_failing(
    spool_path: Path, receiver_url: str, make_listener: Any
) -> None:
    Spool(spool_path).receiver_failed(receiver_url, "ConnectError: refused", lambda _: 600.0)
    worker, ti = make_listener(receiver_url), runtime_ti()
    worker.on_task_instance_running(previous_state="queued", task_instance=ti)
    worker.before_stopping(component=TaskRunnerMarker())
    assert Receiver.records == [] and len(spooled(spool_path)) == 1


def test_hooks_never_raise_when_the_spool_cannot_be_written(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__BKCI__SPOOL_PATH", "/proc/no-such-dir/spool.db")
    monkeypatch.setenv("AIRFLOW__BKCI__ENABLED", "True")
    # A fresh process: its runtime and settings are read from this configuration.
    monkeypatch.setattr(worker_module, "_PROCESS_RUNTIME", None)
    monkeypatch.setattr(worker_module, "_SETTINGS", None)
    worker, ti = WorkerListener(), runtime_ti()
    with caplog.at_level(logging.WARNING, logger="airflow_bkci"):
        worker.on_starting(component=TaskRunnerMarker())
        worker.on_task_instance_running(previous_state="queued", task_instance=ti)
        worker.on_task_instance_failed(previous_state="running", task_instance=ti, error="boom")
        worker.before_stopping(component=TaskRunnerMarker())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    spooling = [r.getMessage() for r in warnings if "could not spool" in r.getMessage()]
    assert spooling == [
        "BK-CI worker listener could not spool running for load",
        "BK-CI worker listener could not spool failed for load",
    ]
    others = {r.getMessage() for r in warnings} - set(spooling)
    assert others == {"BK-CI worker warm-up failed; the first hook will retry"}
    assert all(r.exc_info for r in warnings)


def test_disabled_collection_spools_nothing(spool_path: Path) -> None:
    worker = WorkerListener(spool_factory=lambda: Spool(spool_path), enabled=lambda: False)
    worker.on_task_instance_running(previous_state="queued", task_instance=runtime_ti())
    assert not spool_path.exists()


@pytest.fixture
def gate_runtime(make_listener: Any, monkeypatch: pytest.MonkeyPatch) -> WorkerListener:
    """The process runtime, as the gate operator's task runner has it, on a test spool."""
    listener: WorkerListener = make_listener()
    monkeypatch.setattr(worker_module, "_PROCESS_RUNTIME", listener._rt)
    return listener


def test_a_gates_states_reach_its_task_in_the_build_tree(
    spool_path: Path, gate_runtime: WorkerListener, tmp_path: Path
) -> None:
    ti = runtime_ti()
    gate_runtime.on_task_instance_running(previous_state="queued", task_instance=ti)
    assert record_quality_check(ti, "QUALITY_CHECK_WAIT", "waiting for build etl/r0")
    assert record_quality_check(ti, "QUALITY_CHECK_FAIL", "1/2 rules passed\nthe table …")
    records = spooled(spool_path)
    assert [r.get("quality_check") for r in records] == [
        None,
        "QUALITY_CHECK_WAIT",
        "QUALITY_CHECK_FAIL",
    ]
    assert records[-1]["quality_summary"] == "1/2 rules passed"  # one line
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    store.migrate()
    try:
        store.apply([record_to_event(r) for r in records])
        (stage,) = store.build_tree(build_id_for("etl", "r1"))["stages"].values()
        task = stage["tasks"]["load"]
    finally:
        store.dispose()
    assert (task["status"], task["quality_check"]) == ("RUNNING", "QUALITY_CHECK_FAIL")
    assert task["quality_summary"] == "1/2 rules passed"


def test_a_quality_check_outside_a_task_runner_or_unknown_spools_nothing(
    spool_path: Path, gate_runtime: WorkerListener
) -> None:
    assert not record_quality_check(runtime_ti(), "PASSED")
    assert not record_quality_check(mock.Mock(dag_id="etl"), "QUALITY_CHECK_PASS")
    assert spooled(spool_path) == []


def test_a_record_with_an_unknown_quality_check_is_refused_with_the_reason() -> None:
    record = {
        "v": 1, "dag_id": "etl", "run_id": "r1", "task_id": "load", "map_index": -1,
        "try_number": 1, "clear_number": 0, "state": "running", "source": "worker@h:1",
        "seq": 1, "at": "2026-01-01T12:00:00+00:00", "quality_check": "GREEN",
    }  # fmt: skip
    with pytest.raises(InvalidEvent, match="'quality_check' must be one of"):
        record_to_event(record)


def test_settings_are_read_once_per_process_and_forks_inherit_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(worker_module, "_SETTINGS", None)
    monkeypatch.setenv("AIRFLOW__BKCI__SPOOL_PATH", str(tmp_path / "a" / "spool.db"))
    monkeypatch.setenv("AIRFLOW__BKCI__INGEST_SECRET", "shared-secret")
    first = worker_module.worker_settings()
    assert (first.spool_path, first.ingest_secret) == (tmp_path / "a" / "spool.db", "shared-secret")
    monkeypatch.setenv("AIRFLOW__BKCI__SPOOL_PATH", str(tmp_path / "b" / "spool.db"))
    assert worker_module.worker_settings() is first  # no conf.get on a hook's path
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a task runner forked from the process that loaded the plugin
        calls = []
        monkeypatch.setattr(worker_module.conf, "_conf", lambda: calls.append(1))
        os.write(write, b"ok" if worker_module.worker_settings() is first and not calls else b"no")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 2) == b"ok"
