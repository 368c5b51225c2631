"""The API server notes task starts from the execution API and records them as RUNNING."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_bkci.listeners.rows import TaskRow
from airflow_bkci.listeners.task_start import TaskStartMiddleware, TaskStartRecorder
from airflow_bkci.model import BuildStatus
from airflow_bkci.model.event import StatusEvent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
TI_ID = str(uuid.uuid4())


def call(middleware: TaskStartMiddleware, method: str, path: str) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {"type": "http", "method": method, "path": path}
    asyncio.run(middleware(scope, receive, send))


def app_answering(status: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


@pytest.mark.parametrize(
    ("method", "path", "status", "noted"),
    [
        ("PATCH", f"/execution/task-instances/{TI_ID}/run", 200, [TI_ID]),
        ("PATCH", f"/execution/task-instances/{TI_ID}/run", 409, []),  # not started
        ("PATCH", f"/execution/task-instances/{TI_ID}/state", 204, []),
        ("GET", f"/execution/task-instances/{TI_ID}/run", 200, []),
        ("PATCH", "/execution/task-instances/not-a-uuid/run", 200, []),
        ("PATCH", f"/api/v2/task-instances/{TI_ID}/run", 200, []),
    ],
)
def test_only_a_successful_task_run_call_is_noted(
    method: str, path: str, status: int, noted: list[str]
) -> None:
    seen: list[str] = []
    call(TaskStartMiddleware(app_answering(status), seen.append), method, path)
    assert seen == noted


def test_a_failing_recorder_never_reaches_the_request() -> None:
    def broken(ti_id: str) -> None:
        raise RuntimeError("queue gone")

    call(
        TaskStartMiddleware(app_answering(200), broken),
        "PATCH",
        f"/execution/task-instances/{TI_ID}/run",
    )


def row(state: str = "running", try_number: int = 1) -> TaskRow:
    return TaskRow(
        dag_id="etl",
        run_id="run-1",
        task_id="load",
        map_index=-1,
        state=state,
        try_number=try_number,
        max_tries=2,
        scheduled_dttm=T0,
        queued_dttm=T0 + timedelta(seconds=1),
        start_date=T0 + timedelta(seconds=2),
        end_date=None,
        hostname="worker-1",
        queue="default",
        pool="default_pool",
        operator="PythonOperator",
    )


def test_a_start_becomes_running_at_airflows_start_time_from_an_authoritative_source() -> None:
    put: list[StatusEvent] = []
    recorder = TaskStartRecorder(lambda ids: [(row(), 0)], put.extend, "db@api:1")
    assert recorder.record([TI_ID]) == len(put) > 0
    running = put[-1]
    assert (running.node.task_id, running.status, running.at) == (
        "load",
        BuildStatus.RUNNING,
        T0 + timedelta(seconds=2),
    )
    assert running.source == "db@api:1"
    # The short states before it are filled in from Airflow's times, as the reconciler does.
    assert [e.status for e in put[:-1]] == [BuildStatus.QUEUE, BuildStatus.PREPARE_ENV]
    # Seen once: the same start noted again gives the same events, not fewer.
    again: list[StatusEvent] = []
    recorder._put = again.extend
    recorder.record([TI_ID])
    assert [e.status for e in again] == [e.status for e in put]


def test_a_database_error_is_logged_and_nothing_is_put(caplog: pytest.LogCaptureFixture) -> None:
    def read(ids: list[str]) -> list[tuple[TaskRow, int]]:
        raise ConnectionError("database gone")

    put: list[StatusEvent] = []
    assert TaskStartRecorder(read, put.extend, "db@api:1").record([TI_ID]) == 0
    assert put == []
    assert "could not record 1 task starts" in caplog.text
