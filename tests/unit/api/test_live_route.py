"""/v1/live over a real WebSocket (uvicorn and a websockets client): auth, subscribe, bad input."""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from airflow_bkci.api.app import create_app
from airflow_bkci.api.live_access import Authenticated, NotAuthenticated
from airflow_bkci.api.routes.live import LiveSettings
from airflow_bkci.channels.consumer import BuildMirror
from airflow_bkci.channels.live.protocol import MAX_MESSAGE_BYTES
from airflow_bkci.devstack import free_port
from airflow_bkci.model import BuildStatus
from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store
from tests.unit.store.builders import DAG, build_event, event

with warnings.catch_warnings():
    # Airflow's API security module pulls in Starlette's TestClient, which warns
    # that it wants httpx2; the routes import it when the app is built.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    import airflow_bkci.api.security  # noqa: F401

pytestmark = pytest.mark.timeout(60)

S = BuildStatus
SECRET_DAG = "payroll"
PROTOCOLS = ["bkci.v1", "bearer.alice"]


class FakeAccess:
    """alice may read every DAG but payroll; tokens expire when the test says."""

    def __init__(self) -> None:
        self.lifetime: float | None = None
        self.denied_to: dict[str, set[str]] = {"alice": {SECRET_DAG}}

    async def authenticate(self, token: str | None) -> Authenticated:
        if token not in ("alice", "alice-2"):
            raise NotAuthenticated(f"token {token!r} refused")
        expires = time.time() + self.lifetime if self.lifetime is not None else None
        return Authenticated("alice", expires)

    async def denied(self, who: Authenticated, dag_ids: Collection[str]) -> list[str]:
        return sorted(set(dag_ids) & self.denied_to.get(str(who.user), set()))

    async def existing(self, dag_ids: Collection[str]) -> set[str]:
        return set(dag_ids) & {DAG, SECRET_DAG, "quiet"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    store.migrate()
    return store


@pytest.fixture
def access() -> FakeAccess:
    return FakeAccess()


class Server:
    """The app in uvicorn on a free port, in a thread; ``connect`` opens a real WebSocket."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.cookies: dict[str, str] = {}

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def connect(self, path: str = "/v1/live", subprotocols: list[str] | None = None) -> Any:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        return connect(
            f"ws://127.0.0.1:{self.port}{path}",
            subprotocols=subprotocols if subprotocols is not None else PROTOCOLS,  # type: ignore[arg-type]
            additional_headers=headers if self.cookies else None,
            open_timeout=10,
        )


@pytest.fixture
def client(store: Store, access: FakeAccess) -> Iterator[Server]:
    app = create_app(store_factory=lambda: store, dispatcher_factory=lambda: None)
    app.state.bkci_live_access = access
    app.state.bkci_live_settings = LiveSettings(poll_interval=0.02, heartbeat=0, source="/test")
    with Server(app) as server:
        yield server


def steps(run: str, dag: str = DAG) -> list[list[Any]]:
    return [
        [build_event(S.QUEUE, run=run, dag=dag, at=0)],
        [build_event(S.RUNNING, run=run, dag=dag, at=1)],
        [event(S.RUNNING, "extract", run=run, dag=dag, at=2)],
        [event(S.SUCCEED, "extract", run=run, dag=dag, at=3)],
        [build_event(S.SUCCEED, run=run, dag=dag, at=4)],
    ]


_unread: dict[int, list[dict[str, Any]]] = {}


def receive(ws: ClientConnection) -> dict[str, Any]:
    """The next frame; a message holding a batch (a JSON array) gives its events one by one."""
    unread = _unread.setdefault(id(ws), [])
    if not unread:
        body = json.loads(ws.recv(timeout=10))
        unread.extend(body if isinstance(body, list) else [body])
    return unread.pop(0)


def until_op(ws: Any, op: str) -> dict[str, Any]:
    for _ in range(50):
        frame = receive(ws)
        if frame.get("op") == op:
            return frame
    raise AssertionError(f"no {op!r} frame")


def events_until(ws: Any, build_id: str, sequence: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while not got or int(got[-1]["sequence"]) < sequence or got[-1]["subject"] != build_id:
        frame = receive(ws)
        if "specversion" in frame:
            got.append(frame)
    return got


def test_subscriber_follows_a_build_to_its_end_and_matches_the_store(
    client: Server, store: Store
) -> None:
    build_id = build_id_for(DAG, "run-1")
    with client.connect() as ws:
        assert ws.subprotocol == "bkci.v1"
        ws.send(json.dumps({"op": "subscribe", "pipelines": [DAG]}))
        assert until_op(ws, "subscribed")["pipelines"] == [DAG]
        for batch in steps("run-1"):
            store.apply(batch)
        got = events_until(ws, build_id, 5)
    mirror = BuildMirror()
    mirror.receive_all(got)
    assert mirror.document(build_id) == store.build_tree(build_id)
    assert mirror.document(build_id)["status"] == "SUCCEED"


def test_reconnect_with_the_last_sequence_gets_only_the_rest(client: Server, store: Store) -> None:
    build_id = build_id_for(DAG, "run-1")
    for batch in steps("run-1")[:2]:
        store.apply(batch)
    with client.connect() as ws:
        ws.send(json.dumps({"op": "subscribe", "builds": {build_id: None}}))
        assert until_op(ws, "subscribed")["builds"] == {build_id: 2}
        first = events_until(ws, build_id, 2)
    assert [(e["type"].rsplit(".", 1)[1], int(e["sequence"])) for e in first] == [("snapshot", 2)]
    for batch in steps("run-1")[2:]:
        store.apply(batch)  # while the client is away
    with client.connect() as ws:
        ws.send(json.dumps({"op": "subscribe", "builds": {build_id: 2}}))
        until_op(ws, "subscribed")
        rest = events_until(ws, build_id, 5)
    assert [int(e["sequence"]) for e in rest] == [3, 4, 5]
    mirror = BuildMirror()
    mirror.receive_all(first + rest)
    assert mirror.document(build_id) == store.build_tree(build_id)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_request"),
        (json.dumps({"op": "dance"}), "unknown_op"),
        (json.dumps({"op": "subscribe"}), "bad_request"),
        (json.dumps({"op": "subscribe", "pipelines": "etl"}), "bad_request"),
        (json.dumps({"op": "subscribe", "pipelines": [""]}), "bad_request"),
        (json.dumps({"op": "subscribe", "builds": {"b-1": -1}}), "bad_request"),
        (json.dumps({"op": "subscribe", "builds": {"b-1": "7"}}), "bad_request"),
        (json.dumps({"op": "subscribe", "pipelines": [DAG], "since": 3}), "bad_request"),
        (json.dumps({"op": "subscribe", "pipelines": [f"p{i}" for i in range(1001)]}), "too_many"),
        (json.dumps({"op": "subscribe", "pipelines": ["x" * 1000] * 70}), "too_large"),
        (json.dumps({"op": "subscribe", "builds": {"b-missing": None}}), "not_found"),
        (json.dumps({"op": "subscribe", "pipelines": ["no_such_dag"]}), "not_found"),
        (json.dumps({"op": "subscribe", "pipelines": [SECRET_DAG]}), "forbidden"),
        (json.dumps({"op": "auth", "token": ""}), "bad_request"),
        (json.dumps({"op": "auth", "token": "mallory"}), "unauthenticated"),
    ],
)
def test_bad_messages_get_a_clear_error_and_the_connection_stays_usable(
    client: Server, store: Store, frame: str, code: str
) -> None:
    store.apply(steps("run-1")[0])
    with client.connect() as ws:
        ws.send(frame)
        error = until_op(ws, "error")
        assert error["code"] == code
        assert error["message"]
        ws.send(json.dumps({"op": "ping"}))
        assert until_op(ws, "pong") == {"op": "pong"}
        ws.send(json.dumps({"op": "subscribe", "pipelines": [DAG]}))
        assert until_op(ws, "subscribed")["pipelines"] == [DAG]


def test_oversized_limit_is_what_the_error_says() -> None:
    assert len(json.dumps({"op": "subscribe", "pipelines": ["x" * 1000] * 70})) > MAX_MESSAGE_BYTES


def test_a_sequence_beyond_the_build_is_refused_naming_both(client: Server, store: Store) -> None:
    build_id = build_id_for(DAG, "run-1")
    store.apply(steps("run-1")[0])
    with client.connect() as ws:
        ws.send(json.dumps({"op": "subscribe", "builds": {build_id: 9}}))
        error = until_op(ws, "error")
    assert error["code"] == "sequence_beyond"
    assert error["builds"] == {build_id: {"sent": 9, "current": 1}}


def test_a_forbidden_build_is_refused_and_nothing_of_it_is_sent(
    client: Server, store: Store
) -> None:
    secret = build_id_for(SECRET_DAG, "run-1")
    store.apply(steps("run-1", SECRET_DAG)[0])
    with client.connect() as ws:
        ws.send(json.dumps({"op": "subscribe", "builds": [secret], "pipelines": [DAG]}))
        error = until_op(ws, "error")
        assert (error["code"], error["pipelines"]) == ("forbidden", [SECRET_DAG])
        store.apply(steps("run-1", SECRET_DAG)[1])
        ws.send(json.dumps({"op": "ping"}))
        assert until_op(ws, "pong") == {"op": "pong"}  # and no event came before it


@pytest.mark.parametrize(
    ("path", "protocols", "code"),
    [
        ("/v1/live", ["bkci.v1"], 4401),
        ("/v1/live", ["bkci.v1", "bearer.mallory"], 4401),
        ("/v1/live?token=alice", ["bkci.v1"], 4400),
    ],
)
def test_connections_without_a_usable_token_are_closed_with_the_reason(
    client: Server, path: str, protocols: list[str], code: int
) -> None:
    with client.connect(path, protocols) as ws:
        error = receive(ws)
        assert error["op"] == "error" and error["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


def test_the_ui_cookie_authenticates(client: Server) -> None:
    client.cookies["_token"] = "alice"
    with client.connect(subprotocols=["bkci.v1"]) as ws:
        ws.send(json.dumps({"op": "ping"}))
        assert until_op(ws, "pong") == {"op": "pong"}


def test_an_expired_token_closes_the_connection_unless_refreshed(
    client: Server, access: FakeAccess
) -> None:
    access.lifetime = 0.5
    with client.connect() as ws:
        error = until_op(ws, "error")
        assert error["code"] == "token_expired"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    access.lifetime = 1.0
    with client.connect() as ws:
        access.lifetime = 60.0
        ws.send(json.dumps({"op": "auth", "token": "alice-2"}))
        assert until_op(ws, "authenticated")["expires_in"] > 30
        time.sleep(1.2)
        ws.send(json.dumps({"op": "ping"}))
        assert until_op(ws, "pong") == {"op": "pong"}


def test_a_refresh_that_loses_a_dag_ends_its_subscription(
    client: Server, access: FakeAccess, store: Store
) -> None:
    store.apply(steps("run-1")[0])
    with client.connect() as ws:
        ws.send(json.dumps({"op": "subscribe", "pipelines": [DAG]}))
        until_op(ws, "subscribed")
        access.denied_to["alice"] = {DAG, SECRET_DAG}
        ws.send(json.dumps({"op": "auth", "token": "alice-2"}))
        error = until_op(ws, "error")
        assert (error["code"], error["pipelines"]) == ("forbidden", [DAG])
        until_op(ws, "authenticated")
        store.apply(steps("run-2")[0])
        store.apply(steps("run-1")[1])
        time.sleep(0.3)  # several polls: nothing of etl may come any more
        ws.send(json.dumps({"op": "ping"}))
        assert until_op(ws, "pong") == {"op": "pong"}
