"""The example receiver, run as users run it, mirrors signed batches and refuses the rest."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_bkci.channels.envelope import (
    change_event,
)
from airflow_bkci.channels.signing import generate_secret
from tests.webhook import ReceiverProcess

BUILD = "b-7c0d"

pytestmark = pytest.mark.timeout(60)


def changes(*sequences: int) -> list[dict[str, Any]]:
    """Change sets of BUILD: 1 creates the document, each later one finishes a task."""
    now = datetime.now(timezone.utc)
    events = []
    for n in sequences:
        patch: list[dict[str, Any]]
        if n == 1:
            patch = [
                {"op": "add", "path": "/id", "value": BUILD},
                {"op": "add", "path": "/status", "value": "RUNNING"},
                {"op": "add", "path": "/stages", "value": {"main": {"id": "main", "tasks": {}}}},
            ]
        else:
            task = {"id": f"t{n}", "status": "SUCCEED"}
            patch = [{"op": "add", "path": f"/stages/main/tasks/t{n}", "value": task}]
        events.append(
            change_event(
                source="/airflow-bkci/test",
                pipeline_id="etl",
                build_id=BUILD,
                sequence=n,
                patch=patch,
                time=now,
            )
        )
    return events


def test_a_signed_batch_is_applied_and_recorded(receivers: Callable[..., ReceiverProcess]) -> None:
    receiver = receivers()

    assert receiver.post(changes(1, 2, 3)) == 200

    state = receiver.file_state()
    build = state["builds"][BUILD]
    assert build["sequence"] == 3
    assert build["document"]["status"] == "RUNNING"
    assert set(build["document"]["stages"]["main"]["tasks"]) == {"t2", "t3"}
    assert state["events"] == [f"{BUILD}:{n}:changed" for n in (1, 2, 3)]
    assert (state["requests"], state["bad_signatures"], state["gaps"]) == (1, 0, [])
    assert f"{BUILD} #3 RUNNING | main: t2=SUCCEED t3=SUCCEED" in receiver.stdout.read_text()


def test_a_bad_signature_gets_401_and_changes_nothing(
    receivers: Callable[..., ReceiverProcess],
) -> None:
    receiver = receivers()
    receiver.post(changes(1))

    assert receiver.post(changes(2), secret=generate_secret()) == 401

    state = receiver.file_state()
    assert state["builds"][BUILD]["sequence"] == 1
    assert state["events"] == [f"{BUILD}:1:changed"]
    assert (state["requests"], state["bad_signatures"]) == (2, 1)


def test_reject_gives_422_for_the_batch_holding_that_change_set(
    receivers: Callable[..., ReceiverProcess],
) -> None:
    receiver = receivers("--reject", f"{BUILD}:2")

    assert receiver.post(changes(1, 2, 3)) == 422
    assert receiver.file_state()["builds"] == {}
    assert receiver.post(changes(1)) == 200
    assert receiver.post(changes(3)) == 200

    state = receiver.file_state()
    assert state["builds"][BUILD]["sequence"] == 1
    assert state["gaps"] == [{"build_id": BUILD, "have": 1, "got": 3}]


def test_a_gap_is_answered_200_and_recorded(receivers: Callable[..., ReceiverProcess]) -> None:
    receiver = receivers()

    assert receiver.post(changes(1, 3)) == 200
    assert receiver.file_state()["pending"] == [{"build_id": BUILD, "have": 1, "got": 3}]
    assert receiver.post(changes(2)) == 200

    state = receiver.file_state()
    assert state["builds"][BUILD]["sequence"] == 3
    assert state["pending"] == []


def test_gone_answers_410(receivers: Callable[..., ReceiverProcess]) -> None:
    receiver = receivers("--gone")

    assert receiver.post(changes(1)) == 410
    assert receiver.file_state()["builds"] == {}


@pytest.fixture
def store_api() -> Iterator[str]:
    """A stand-in for the store's API: GET /builds/<id> answers document and sequence."""
    snapshot = {
        "sequence": 2,
        "document": {
            "id": BUILD,
            "status": "RUNNING",
            "stages": {"main": {"id": "main", "tasks": {"t2": {"id": "t2", "status": "SUCCEED"}}}},
        },
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == f"/api/builds/{BUILD}"
            body = json.dumps(snapshot if found else {}).encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()
    server.server_close()


def test_a_gap_is_resynced_from_the_store_api(
    receivers: Callable[..., ReceiverProcess], store_api: str
) -> None:
    receiver = receivers("--store-api", store_api)

    assert receiver.post(changes(3)) == 200

    state = receiver.file_state()
    assert state["gaps"] == [{"build_id": BUILD, "have": 0, "got": 3}]
    assert state["builds"][BUILD]["sequence"] == 3
    assert set(state["builds"][BUILD]["document"]["stages"]["main"]["tasks"]) == {"t2", "t3"}
    assert state["pending"] == []
