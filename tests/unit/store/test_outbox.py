"""The dispatcher delivers every change set to a real receiver process, whatever it does.

Each test ends the way a consumer needs: every build's tree at the receiver
equals the store's snapshot at the same sequence, with no gap left. The
builds are the event streams recorded from a real Airflow run of the example
DAGs (tests/recordings), replayed through the store as the collectors applied them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from airflow_bkci.channels.dispatcher import Dispatcher
from airflow_bkci.channels.envelope import EVENT_SNAPSHOT
from airflow_bkci.channels.webhook import Endpoint, WebhookChannel
from airflow_bkci.exceptions import ConfigError
from airflow_bkci.store import Store
from airflow_bkci.store.outbox import Outbox
from airflow_bkci.store.tables import LaneRow
from tests.proxy import TcpProxy, tcp_server
from tests.recordings import example_builds, replay
from tests.webhook import ReceiverProcess

BUILDS = example_builds()
FAST = (0.05, 0.05, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2)

pytestmark = pytest.mark.timeout(120)


def fill(store: Store, builds: Sequence[str] = BUILDS) -> None:
    replay(store, builds)


def channel(url: str, secret: str, name: str = "hook", **kw: Any) -> WebhookChannel:
    return WebhookChannel(Endpoint(name, url, secret, **kw))


def dispatcher(store: Store, *channels: WebhookChannel, **kw: Any) -> Dispatcher:
    kw.setdefault("schedule", FAST)
    kw.setdefault("circuit_threshold", 1000)
    return Dispatcher(store, channels, batch_wait=0, **kw)


def deliver_all(d: Dispatcher, timeout: float = 60.0) -> None:
    """Pass until nothing is pending anywhere (backoffs are short in these tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d.run_once()
        if not any(h["pending_lanes"] for h in d.outbox.health()):
            return
        time.sleep(0.05)
    raise AssertionError(f"still pending: {d.outbox.health()}")


def assert_mirrored(
    store: Store, receiver: ReceiverProcess, builds: Sequence[str] = BUILDS
) -> None:
    state = receiver.state()
    assert len(builds) >= 1
    for build in builds:
        snap = store.snapshot(build)
        assert snap is not None
        mirrored = state["builds"][build]
        assert mirrored["sequence"] == snap["sequence"]
        assert mirrored["document"] == snap["document"]
    assert state["pending"] == [] and state["bad_signatures"] == 0


def change_order(receiver: ReceiverProcess) -> dict[str, list[int]]:
    """Per build, the sequences of change events in the order they arrived."""
    out: dict[str, list[int]] = {}
    for event_id in receiver.state()["events"]:
        build, seq, kind = event_id.rsplit(":", 2)
        if kind == "changed":
            out.setdefault(build, []).append(int(seq))
    return out


def test_every_change_set_arrives_signed_in_order_and_rebuilds_the_tree(
    store: Store, receivers: Any
) -> None:
    receiver = receivers()
    fill(store)
    d = dispatcher(store, channel(receiver.url, receiver.secret), batch_size=5)
    deliver_all(d)
    assert_mirrored(store, receiver)
    for build, sequences in change_order(receiver).items():
        assert sequences == list(range(1, len(sequences) + 1)), build  # each once, in order
    assert receiver.state()["requests"] >= 5  # batched: 5 events at most per request


def test_receiver_down_for_the_whole_run_then_back_loses_nothing(
    store: Store, receivers: Any
) -> None:
    receiver = receivers()
    proxy = TcpProxy("127.0.0.1", receiver.port)
    proxy.cut()
    d = dispatcher(store, channel(f"http://127.0.0.1:{proxy.port}/", receiver.secret))
    fill(store)
    for _ in range(3):
        d.run_once()
        time.sleep(0.06)
    health = d.outbox.health()[0]
    assert health["pending_lanes"] == len(BUILDS) and health["dead_letters"] == 0
    proxy.restore()
    deliver_all(d)
    assert_mirrored(store, receiver)
    proxy.close()


def test_receiver_failing_at_random_ends_complete_and_ordered(store: Store, receivers: Any) -> None:
    receiver = receivers("--fail-rate", "0.5", "--seed", "7")
    fill(store)
    d = dispatcher(store, channel(receiver.url, receiver.secret), batch_size=3)
    deliver_all(d)
    assert_mirrored(store, receiver)
    assert receiver.state()["responses"].get("500", 0) > 0


def test_receiver_slower_than_the_timeout_gets_everything_once_it_answers_in_time(
    store: Store, receivers: Any
) -> None:
    receiver = receivers("--delay", "1.0")
    fill(store, BUILDS[:1])
    slow = dispatcher(store, channel(receiver.url, receiver.secret, timeout=0.3))
    slow.run_once()
    (health,) = slow.outbox.health()
    assert health["pending_lanes"] == 1  # timed out: nothing counts as delivered
    patient = dispatcher(store, channel(receiver.url, receiver.secret, timeout=5.0))
    time.sleep(0.1)
    deliver_all(patient)
    assert_mirrored(store, receiver, BUILDS[:1])  # the duplicates were dropped by id


def test_a_permanently_rejected_change_set_is_dead_lettered_and_a_snapshot_follows(
    store: Store, receivers: Any
) -> None:
    build = BUILDS[0]
    receiver = receivers("--reject", f"{build}:3")
    d = dispatcher(store, channel(receiver.url, receiver.secret), batch_size=1)
    # One step per pass, as a live build sends them.
    replay(store, [build], after_each=lambda: deliver_all(d))
    assert_mirrored(store, receiver, BUILDS[:1])
    (dead,) = d.outbox.dead_letters()
    assert (dead["build_id"], dead["first_seq"], dead["last_seq"]) == (build, 3, 3)
    assert "HTTP 422" in dead["reason"]
    assert f"{build}:3:snapshot" in receiver.state()["events"]


def test_an_endpoint_that_is_gone_stops_until_resumed_and_loses_nothing(
    store: Store, receivers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gone = receivers("--gone")
    fill(store)
    d = dispatcher(store, channel(gone.url, gone.secret))
    d.run_once()
    assert "airflow-bkci outbox resume hook" in caplog.text
    requests_then = gone.state()["requests"]
    d.run_once()
    assert gone.state()["requests"] == requests_then == 1  # stopped: no more requests
    back = receivers(secret=gone.secret)
    d2 = dispatcher(store, channel(back.url, back.secret))
    d2.outbox.set_gone("hook", None)
    deliver_all(d2)
    assert_mirrored(store, back)


def test_a_broken_endpoint_never_holds_up_another(store: Store, receivers: Any) -> None:
    good = receivers()
    broken = channel("http://127.0.0.1:9/", good.secret, name="broken")
    fill(store)
    d = dispatcher(store, broken, channel(good.url, good.secret, name="good"))
    for _ in range(3):  # a recorded build has more change sets than one pass sends
        d.run_once()
    assert_mirrored(store, good)
    health = {h["endpoint"]: h for h in d.outbox.health()}
    assert health["broken"]["pending_lanes"] == len(BUILDS)
    assert "good" not in health or health["good"]["pending_lanes"] == 0


def test_an_open_circuit_sends_nothing_until_it_cools_down(store: Store, receivers: Any) -> None:
    receiver = receivers()
    proxy = TcpProxy("127.0.0.1", receiver.port)
    proxy.cut()
    fill(store)
    d = dispatcher(
        store,
        channel(f"http://127.0.0.1:{proxy.port}/", receiver.secret),
        circuit_threshold=1,
        circuit_cooldown=60,
    )
    d.run_once()
    proxy.restore()
    time.sleep(0.2)
    report = d.run_once()
    assert report.claimed == 0 and report.skipped == ["hook: circuit open"]
    assert receiver.state()["requests"] == 0
    proxy.close()


def test_malformed_secret_names_the_endpoint_and_the_fix() -> None:
    with pytest.raises(ConfigError) as info:
        channel("http://127.0.0.1:9/", "not-a-secret", name="ops-hook")
    assert "whsec_" in str(info.value) and "not-a-secret" not in str(info.value)


def test_pipeline_filters_keep_other_pipelines_out(store: Store, receivers: Any) -> None:
    receiver = receivers()
    fill(store)
    d = dispatcher(store, channel(receiver.url, receiver.secret, pipelines=("other_*",)))
    deliver_all(d)
    assert receiver.state()["builds"] == {}


def test_snapshot_only_endpoints_get_one_snapshot_per_pass(store: Store, receivers: Any) -> None:
    receiver = receivers()
    fill(store)
    d = dispatcher(
        store, channel(receiver.url, receiver.secret, event_types=frozenset({EVENT_SNAPSHOT}))
    )
    deliver_all(d)
    assert_mirrored(store, receiver)
    assert all(e.endswith(":snapshot") for e in receiver.state()["events"])


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_two_dispatchers_at_once_never_reorder_a_build(store_url: str, receivers: Any) -> None:
    store = Store(store_url)
    store.migrate()
    receiver = receivers()
    stop = threading.Event()

    def work() -> None:
        d = dispatcher(Store(store_url), channel(receiver.url, receiver.secret), batch_size=4)
        while not stop.is_set():
            d.run_once()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    fill(store)
    deliver_all(dispatcher(store, channel(receiver.url, receiver.secret)))
    stop.set()
    for t in threads:
        t.join()
    assert_mirrored(store, receiver)
    for build, sequences in change_order(receiver).items():
        assert sequences == sorted(sequences), build
    store.dispose()


LEASE = 5.0
"""The killed dispatcher's lease: long enough that a busy machine reaches the check inside it."""


def test_dispatcher_killed_mid_batch_is_taken_over_after_its_lease(
    store_url: str, store: Store, receivers: Any, tmp_path: Path
) -> None:
    receiver = receivers("--delay", "2.0")
    fill(store)
    script = textwrap.dedent(
        f"""
        from airflow_bkci.channels.dispatcher import Dispatcher
        from airflow_bkci.channels.webhook import Endpoint, WebhookChannel
        from airflow_bkci.store import Store
        ch = WebhookChannel(Endpoint("hook", {receiver.url!r}, {receiver.secret!r}))
        print("sending", flush=True)
        Dispatcher(Store({store_url!r}), [ch], lease={LEASE}, batch_size=100).run_once()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env={**os.environ}
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"sending\n"
    deadline = time.monotonic() + 20
    while receiver.state()["requests"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-batch: the receiver is still answering
    proc.wait()
    taker = dispatcher(store, channel(receiver.url, receiver.secret, timeout=10.0))
    assert taker.run_once().claimed == 0  # the dead one's lease still holds
    time.sleep(LEASE + 0.2)
    deliver_all(taker)
    assert_mirrored(store, receiver)


def test_retention_deletes_only_what_every_lane_has(store: Store, receivers: Any) -> None:
    receiver = receivers()
    fill(store)
    outbox = Outbox(store, "cleaner")
    outbox.open_lanes("late", lambda _: True)  # an endpoint that has nothing yet
    dispatcher(store, channel(receiver.url, receiver.secret)).drain()
    assert_mirrored(store, receiver)
    assert outbox.clean(timedelta(0)) == 0  # "late" still needs every change set
    with store._write() as conn:  # "late" is removed from the configuration
        conn.execute(delete(LaneRow).where(LaneRow.endpoint == "late"))
    assert outbox.clean(timedelta(days=1)) == 0  # delivered, but not old enough yet
    heads = [store.snapshot(build) for build in BUILDS]
    assert outbox.clean(timedelta(0)) == sum(h["sequence"] for h in heads if h)
    assert store.changes(BUILDS[0]) == []
    assert store.snapshot(BUILDS[0]) == heads[0]  # snapshots stay


def test_an_endpoint_answering_garbage_is_named_and_the_others_go_on(
    store: Store, receivers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Not HTTP at all: a port that answers every connection with junk and hangs up.
    def junk(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"garbage, not HTTP\r\n\r\n")

    server = tcp_server(junk)
    port = server.getsockname()[1]
    good = receivers()
    fill(store)
    d = dispatcher(
        store,
        channel(f"http://127.0.0.1:{port}/", good.secret, name="junk"),
        channel(good.url, good.secret, name="good"),
    )
    for _ in range(3):
        d.run_once()
    server.close()
    assert_mirrored(store, good)
    health = {h["endpoint"]: h for h in d.outbox.health()}
    assert health["junk"]["pending_lanes"] == len(BUILDS) and health["junk"]["dead_letters"] == 0
    assert "check that connection 'junk' points at the receiver" in health["junk"]["last_error"]
    assert "bkci channel junk: could not deliver" in caplog.text
