"""/bkci/v1/live in Airflow's own API server: a websockets client follows a real run.

The client subscribes to a pipeline, drops the connection in the middle of a
run, reconnects with the sequences it has, and must end with exactly the
store's trees. Tokens are real Airflow JWTs; a user who may not read a DAG
is refused it, and a connection with no token is closed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from airflow_bkci.channels.consumer import BuildMirror
from airflow_bkci.devstack import AirflowStack
from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store
from tests.integration.auth_manager import HIDDEN_DAG, LIMITED_PASSWORD, LIMITED_USER
from tests.integration.helpers import eventually, user_token

pytestmark = pytest.mark.integration

DAG = "bkci_stages"  # four stages one after another: a run of several seconds


@pytest.fixture(params=["sqlite", "pg"])
def stack(request: pytest.FixtureRequest) -> AirflowStack:
    if request.param == "pg":
        request.applymarker(pytest.mark.postgres)
    return request.getfixturevalue(f"{request.param}_stack")  # type: ignore[no-any-return]


@pytest.fixture
def store(stack: AirflowStack) -> Iterator[Store]:
    opened = Store(stack.store_url)
    yield opened
    opened.dispose()


def live(stack: AirflowStack, token: str | None) -> ClientConnection:
    url = stack.api_url.replace("http://", "ws://", 1) + "/bkci/v1/live"
    protocols = ["bkci.v1", *([f"bearer.{token}"] if token else [])]
    return connect(url, subprotocols=protocols, open_timeout=20)  # type: ignore[arg-type]


def frames(ws: ClientConnection, until: float) -> Iterator[dict[str, Any]]:
    """Frames until ``until``; a batch (a JSON array of events) gives its events one by one."""
    while time.monotonic() < until:
        try:
            body = json.loads(ws.recv(timeout=max(0.1, until - time.monotonic())))
        except TimeoutError:
            return
        yield from body if isinstance(body, list) else [body]


def test_client_that_reconnects_mid_run_ends_with_the_stores_tree(
    stack: AirflowStack, store: Store
) -> None:
    admin = stack.token()
    mirror = BuildMirror()
    with live(stack, admin) as ws:
        ws.send(json.dumps({"op": "subscribe", "pipelines": [DAG]}))
        run_id = stack.trigger(DAG)
        build_id = build_id_for(DAG, run_id)
        # Follow until the first task runs, then drop the connection mid-run.
        for frame in frames(ws, time.monotonic() + 120):
            if "specversion" in frame and frame["subject"] == build_id:
                mirror.receive(frame)
                tasks = mirror.document(build_id) or {}
                if "RUNNING" in json.dumps(tasks.get("stages", {})):
                    break
        else:
            pytest.fail(f"no task of {build_id} ran within 120 s")
    first_part = mirror.sequence(build_id)
    assert stack.run_state(DAG, run_id) == "running", "the run must still be going"
    time.sleep(2)  # it goes on while the client is away
    with live(stack, admin) as ws:
        ws.send(json.dumps({"op": "subscribe", "builds": {build_id: first_part}}))
        final = stack.wait_run(DAG, run_id, timeout=180)
        deadline = time.monotonic() + 60
        for frame in frames(ws, deadline):
            if "specversion" in frame and frame["subject"] == build_id:
                outcome = mirror.receive(frame)
                assert outcome.changed or frame["type"].endswith("snapshot"), outcome
            snap = store.snapshot(build_id)
            done = snap is not None and snap["document"]["status"] in ("SUCCEED", "FAILED")
            if done and mirror.sequence(build_id) == snap["sequence"]:
                break
    snap = store.snapshot(build_id)
    assert final == "success"
    assert snap is not None and mirror.sequence(build_id) == snap["sequence"]
    assert mirror.document(build_id) == snap["document"]
    assert mirror.document(build_id)["status"] == "SUCCEED"
    assert mirror.gaps() == []
    assert mirror.sequence(build_id) > first_part  # the second connection brought the rest


def test_a_user_who_may_not_read_a_dag_is_refused_it(stack: AirflowStack) -> None:
    limited = user_token(stack, LIMITED_USER, LIMITED_PASSWORD)
    with live(stack, limited) as ws:
        ws.send(json.dumps({"op": "subscribe", "pipelines": [HIDDEN_DAG]}))
        refused = next(f for f in frames(ws, time.monotonic() + 30) if f.get("op"))
        assert (refused["op"], refused["code"], refused["pipelines"]) == (
            "error",
            "forbidden",
            [HIDDEN_DAG],
        )
        ws.send(json.dumps({"op": "subscribe", "pipelines": [DAG]}))
        accepted = next(f for f in frames(ws, time.monotonic() + 30) if f.get("op"))
        assert accepted["op"] == "subscribed"


@pytest.mark.parametrize("bad", [None, "not-a-jwt"])
def test_a_connection_without_a_valid_token_is_closed(stack: AirflowStack, bad: str | None) -> None:
    with live(stack, bad) as ws:
        error = json.loads(ws.recv(timeout=30))
        assert (error["op"], error["code"]) == ("error", "unauthenticated")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


@pytest.mark.postgres
def test_clients_on_different_api_server_workers_each_get_every_change(
    pg_stack: AirflowStack,
) -> None:
    """The PostgreSQL stack runs two API server workers, each tailing the store itself."""
    stack, admin = pg_stack, pg_stack.token()
    store = Store(stack.store_url)
    connections: dict[int, ClientConnection] = {}
    opened: list[ClientConnection] = []
    try:
        for _ in range(20):  # the kernel spreads connections over the workers' shared socket
            ws = live(stack, admin)
            opened.append(ws)
            ws.send(json.dumps({"op": "subscribe", "pipelines": [DAG]}))
            ack = next(f for f in frames(ws, time.monotonic() + 30) if f.get("op"))
            assert ack["op"] == "subscribed"
            connections.setdefault(ack["worker"], ws)
            if len(connections) == 2:
                break
        assert len(connections) == 2, f"every connection landed on worker {list(connections)}"
        run_id = stack.trigger(DAG)
        build_id = build_id_for(DAG, run_id)
        assert stack.wait_run(DAG, run_id, timeout=180) == "success"
        snap = eventually(
            lambda: (s := store.snapshot(build_id)) and s["document"]["status"] == "SUCCEED" and s,
            60,
            f"the store to see {build_id} succeed",
        )
        for worker, ws in connections.items():
            mirror = BuildMirror()
            for frame in frames(ws, time.monotonic() + 60):
                if "specversion" in frame and frame["subject"] == build_id:
                    mirror.receive(frame)
                    if mirror.sequence(build_id) == snap["sequence"]:
                        break
            assert mirror.document(build_id) == snap["document"], f"worker {worker}"
    finally:
        for ws in opened:
            ws.close()
        store.dispose()
