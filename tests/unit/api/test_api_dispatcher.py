"""The API server can run the outbox dispatcher: it starts and stops with the app."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from airflow_bkci import conf
from airflow_bkci.api.app import create_app
from airflow_bkci.channels.dispatcher import Dispatcher
from airflow_bkci.channels.webhook import Endpoint, WebhookChannel
from airflow_bkci.exceptions import ConfigError
from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store
from tests.records import worker_record

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.timeout(60)

SECRET = "s3cret"
AUTH = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    real = Store(f"sqlite:///{tmp_path / 'status.db'}")
    real.migrate()
    yield real
    real.dispose()


def test_records_taken_by_the_api_server_reach_the_endpoint_from_its_dispatcher(
    store: Store, receivers: Any
) -> None:
    receiver = receivers()
    made: list[Dispatcher] = []

    def dispatcher() -> Dispatcher:
        channel = WebhookChannel(Endpoint("hook", receiver.url, receiver.secret))
        made.append(Dispatcher(store, [channel], batch_wait=0, poll_interval=5.0))
        return made[0]

    app = create_app(
        store_factory=lambda: store, secret=lambda: SECRET, dispatcher_factory=dispatcher
    )
    with TestClient(app) as client:  # runs the lifespan, as Airflow's API server does
        batch = [
            worker_record("t", state="running", start_date="2026-01-01T00:00:00+00:00"),
            worker_record("t", seq=2, state="success", end_date="2026-01-01T00:00:03+00:00"),
        ]
        assert client.post("/ingest", json=batch, headers=AUTH).json()["accepted"] == 2
        build = build_id_for("etl", "r1")
        snapshot = store.snapshot(build)
        assert snapshot is not None
        # The poll is 5 s: arriving sooner shows the ingest woke the dispatcher.
        deadline = time.monotonic() + 4
        while receiver.sequences().get(build) != snapshot["sequence"]:
            assert time.monotonic() < deadline, receiver.state()
            time.sleep(0.05)
        assert receiver.documents()[build] == snapshot["document"]
    thread = made[0]._thread
    assert thread is not None and not thread.is_alive()  # stopped with the app


def test_a_dispatcher_that_cannot_start_leaves_ingest_working(store: Store) -> None:
    def broken() -> Dispatcher:
        raise ConfigError("[bkci] webhook 'x' has no secret")

    app = create_app(store_factory=lambda: store, secret=lambda: SECRET, dispatcher_factory=broken)
    with TestClient(app) as client:
        response = client.post("/ingest", json=[worker_record("t")], headers=AUTH)
        assert response.status_code == 200 and response.json()["accepted"] == 1


@pytest.mark.parametrize(
    ("value", "places"),
    [
        ("scheduler", {"scheduler"}),
        (" scheduler , api-server ", {"scheduler", "api-server"}),
        ("", set()),
    ],
)
def test_dispatch_in_names_the_processes(
    monkeypatch: pytest.MonkeyPatch, value: str, places: set[str]
) -> None:
    monkeypatch.setenv("AIRFLOW__BKCI__DISPATCH_IN", value)
    assert conf.dispatch_in() == places


def test_dispatch_in_with_an_unknown_process_names_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__BKCI__DISPATCH_IN", "scheduler,webserver")
    with pytest.raises(ConfigError, match="names webserver: use a comma-separated list of sched"):
        conf.dispatch_in()


def test_the_plugin_builds_its_app_only_when_the_api_server_asks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, airflow_bkci.plugins.bkci as p\n"
        "assert 'fastapi' not in sys.modules, 'a task runner would import FastAPI'\n"
        "apps = p.BkciPlugin.fastapi_apps\n"
        "from fastapi import FastAPI\n"
        "assert isinstance(apps[0]['app'], FastAPI) and apps[0]['url_prefix'] == '/bkci'\n"
        "assert p.BkciPlugin().fastapi_apps is apps\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
