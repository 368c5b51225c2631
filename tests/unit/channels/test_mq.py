"""The message-queue channel over kombu's in-memory transport: keys, messages, honest results.

The memory transport routes like Redis (kombu's virtual exchanges, no
confirms), so what is checked here holds for Redis too; the RabbitMQ paths
(confirms, basic.return) run against a real broker in tests/integration/test_mq.py.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection, Exchange, Queue
from kombu.transport.virtual.exchange import TopicExchange

from airflow_bkci.channels.consumer import BuildMirror, parse_body
from airflow_bkci.channels.dispatcher import Dispatcher
from airflow_bkci.channels.envelope import (
    CONTENT_TYPE,
    CONTENT_TYPE_BATCH,
    EVENT_CHANGED,
    EVENT_SNAPSHOT,
    change_event,
    snapshot_event,
)
from airflow_bkci.channels.mq import (
    ROUTING_KEY_BYTES,
    Broker,
    MqChannel,
    connect,
    pipeline_word,
    routing_key,
)
from airflow_bkci.channels.webhook import Delivery
from airflow_bkci.exceptions import ConfigError
from airflow_bkci.store import Store
from tests.recordings import example_builds, replay

T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
FAST = (0.01, 0.01, 0.02, 0.02, 0.05)


def change(pipeline: str, build: str, sequence: int) -> dict[str, Any]:
    patch = [{"op": "add", "path": f"/n{sequence}", "value": sequence}]
    return change_event(
        source="/test",
        pipeline_id=pipeline,
        build_id=build,
        sequence=sequence,
        patch=patch,
        time=T0,
    )


def snapshot(pipeline: str, build: str, sequence: int) -> dict[str, Any]:
    return snapshot_event(
        source="/test",
        pipeline_id=pipeline,
        build_id=build,
        sequence=sequence,
        document={"status": "RUNNING"},
        time=T0,
    )


class MemoryBroker:
    """A uniquely named exchange on the memory transport, and a consumer for it."""

    def __init__(self) -> None:
        self.exchange = f"bkci-test-{uuid.uuid4().hex[:10]}"
        self.connection = Connection("memory://")
        self.queues: list[Queue] = []

    def broker(self, **kw: Any) -> Broker:
        return Broker("mq", "memory://", exchange=self.exchange, **kw)

    def bind(self, key: str = "#") -> Queue:
        exchange = Exchange(self.exchange, type="topic", durable=True)
        queue = Queue(f"{self.exchange}-{len(self.queues)}", exchange, routing_key=key)
        queue(self.connection.default_channel).declare()
        self.queues.append(queue)
        return queue

    def drain(self, queue: Queue) -> list[Any]:
        """Every message waiting in ``queue``, in order."""
        bound = queue(self.connection.default_channel)
        out = []
        while (message := bound.get(no_ack=True)) is not None:
            out.append(message)
        return out


@pytest.fixture
def memory() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.connection.release()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- routing keys ---------------------------------------------------------------------


def test_routing_keys_name_the_pipeline_and_the_event_kind() -> None:
    assert routing_key("deploy", EVENT_CHANGED) == "deploy.changed"
    assert routing_key("deploy", EVENT_SNAPSHOT) == "deploy.snapshot"
    assert routing_key("team.etl", EVENT_CHANGED) == "team%2Eetl.changed"
    assert pipeline_word("a*b#c%d") == "a%2Ab%23c%25d"
    with pytest.raises(ConfigError, match=r"'dev\.other' has no routing key"):
        routing_key("deploy", "dev.other")


def topic_match(binding: str, key: str) -> bool:
    """Whether a topic binding matches ``key``, by kombu's own topic rules."""
    return re.match(TopicExchange(None).key_to_pattern(binding), key) is not None


@given(st.text(min_size=1, max_size=300))
def test_every_pipeline_id_is_one_topic_word_within_the_size_limit(pipeline: str) -> None:
    key = routing_key(pipeline, EVENT_CHANGED)
    assert len(key.encode("utf-8")) <= ROUTING_KEY_BYTES
    word, kind = key.split(".")  # exactly one separator: the one before the kind
    assert kind == "changed" and "*" not in word and "#" not in word
    assert topic_match("*.changed", key) and topic_match(f"{word}.#", key)
    assert not topic_match("*.snapshot", key)


@given(st.text(min_size=1, max_size=300), st.text(min_size=1, max_size=300))
def test_different_pipelines_never_share_a_word(a: str, b: str) -> None:
    if a != b:
        assert pipeline_word(a) != pipeline_word(b)


def test_a_long_pipeline_id_is_cut_and_ends_in_its_digest() -> None:
    long_id = "é" * 200  # 400 bytes of UTF-8
    word = pipeline_word(long_id)
    assert len(f"{word}.snapshot".encode()) <= ROUTING_KEY_BYTES
    assert word.startswith("é") and re.search(r"~[0-9a-f]{16}$", word)
    assert pipeline_word(long_id) == word  # stable: consumers can bind it


# -- messages ---------------------------------------------------------------------------


def test_one_persistent_cloudevent_per_message_routed_by_pipeline_and_kind(
    memory: MemoryBroker,
) -> None:
    everything, etl_changes = memory.bind("#"), memory.bind("team%2Eetl.changed")
    events = [change("team.etl", "b1", 1), change("deploy", "b2", 1), snapshot("deploy", "b3", 4)]
    result = MqChannel(memory.broker()).send(events)
    assert result.delivery is Delivery.DELIVERED, result.error
    got = memory.drain(everything)
    assert [m.delivery_info["routing_key"] for m in got] == [
        "team%2Eetl.changed",
        "deploy.changed",
        "deploy.snapshot",
    ]
    assert {m.content_type for m in got} == {CONTENT_TYPE}
    assert {m.properties["delivery_mode"] for m in got} == {2}
    assert [m.properties["message_id"] for m in got] == [e["id"] for e in events]
    assert [parse_body(m.body, m.content_type)[0]["id"] for m in got] == [e["id"] for e in events]
    assert [m.properties["message_id"] for m in memory.drain(etl_changes)] == ["b1:1:changed"]


def test_batch_mode_sends_one_message_per_pipeline_and_kind_in_order(
    memory: MemoryBroker,
) -> None:
    queue = memory.bind("#")
    events = [
        change("etl", "b1", 1),
        change("deploy", "b2", 7),
        change("etl", "b1", 2),
        change("etl", "b4", 1),
        snapshot("etl", "b5", 3),
        change("deploy", "b2", 8),
    ]
    assert MqChannel(memory.broker(batch=True)).send(events).delivery is Delivery.DELIVERED
    got = memory.drain(queue)
    assert [m.delivery_info["routing_key"] for m in got] == [
        "etl.changed",
        "deploy.changed",
        "etl.snapshot",
    ]
    assert {m.content_type for m in got} == {CONTENT_TYPE_BATCH}
    ids = [[e["id"] for e in parse_body(m.body, m.content_type)] for m in got]
    assert ids == [
        ["b1:1:changed", "b1:2:changed", "b4:1:changed"],  # each build still in sequence order
        ["b2:7:changed", "b2:8:changed"],
        ["b5:3:snapshot"],
    ]


# -- what the broker did ------------------------------------------------------------------


def test_no_queue_bound_is_not_delivered_and_says_how_to_fix_it(memory: MemoryBroker) -> None:
    for batch in (False, True):
        result = MqChannel(memory.broker(batch=batch)).send([change("etl", "b1", 1)])
        assert result.delivery is Delivery.RETRY
        assert result.error is not None
        assert "no queue bound for routing key 'etl.changed'" in result.error
        assert "Bind a queue" in result.error


def test_a_pipeline_no_binding_matches_fails_the_send_and_stops_there(
    memory: MemoryBroker,
) -> None:
    deploy_only = memory.bind("deploy.#")
    events = [change("deploy", "b1", 1), change("etl", "b2", 1), change("deploy", "b1", 2)]
    result = MqChannel(memory.broker()).send(events)
    assert result.delivery is Delivery.RETRY
    assert result.error is not None and "'etl.changed'" in result.error
    assert "all 3 events of this send are sent again later" in result.error
    # Nothing after the unroutable one, so a build never gets a later change set first.
    assert [m.properties["message_id"] for m in memory.drain(deploy_only)] == ["b1:1:changed"]


def test_an_unreachable_broker_is_a_retry_and_the_next_send_reconnects(
    memory: MemoryBroker,
) -> None:
    queue = memory.bind("#")
    calls: list[str] = []
    port = closed_port()

    def factory(broker: Broker) -> Any:
        calls.append(broker.name)
        if len(calls) == 1:  # down at first, then back
            down = Broker("mq", f"amqp://guest:secret@127.0.0.1:{port}//", connect_timeout=2)
            return connect(down)
        return connect(broker)

    channel = MqChannel(memory.broker(), factory=factory)
    first = channel.send([change("etl", "b1", 1)])
    assert first.delivery is Delivery.RETRY
    assert first.error is not None and "no answer from broker" in first.error
    assert "secret" not in first.error
    assert channel.send([change("etl", "b1", 1)]).delivery is Delivery.DELIVERED
    assert len(calls) == 2
    assert [m.properties["message_id"] for m in memory.drain(queue)] == ["b1:1:changed"]


def test_a_publish_that_raises_is_a_retry_and_drops_the_connection(
    memory: MemoryBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory.bind("#")
    channel = MqChannel(memory.broker())
    assert channel.send([change("etl", "b1", 1)]).delivery is Delivery.DELIVERED
    session = channel._session
    assert session is not None

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(session.producer, "publish", broken)
    result = channel.send([change("etl", "b1", 2)])
    assert result.delivery is Delivery.RETRY and "ConnectionResetError" in str(result.error)
    assert channel._session is None  # the next send connects afresh


def test_events_that_cannot_be_encoded_are_rejected_not_retried(memory: MemoryBroker) -> None:
    memory.bind("#")
    bad = {**change("etl", "b1", 1), "data": {1j}}
    result = MqChannel(memory.broker()).send([bad])
    assert result.delivery is Delivery.REJECTED and "cannot encode" in str(result.error)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "ftp://u:hunter2@h/"}, "scheme 'ftp'"),
        ({"url": "rabbit"}, "scheme 'none'"),
        ({"exchange": ""}, "exchange '' must be 1 to 255 bytes"),
        ({"event_types": frozenset({"nope"})}, "event_types ['nope'] unknown"),
        ({"confirm_timeout": 0}, "confirm_timeout 0 must be a number of seconds above 0"),
    ],
)
def test_bad_brokers_name_the_value_and_the_fix(fields: dict[str, Any], message: str) -> None:
    fields.setdefault("url", "memory://")
    with pytest.raises(ConfigError) as info:
        Broker("mq", **fields)
    assert message in str(info.value) and "'mq'" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_filters_pick_pipelines_and_a_snapshot_only_queue() -> None:
    broker = Broker("mq", "memory://", pipelines=("deploy_*",), event_types={EVENT_SNAPSHOT})
    channel = MqChannel(broker)
    assert channel.accepts("deploy_web") and not channel.accepts("etl")
    assert not channel.wants_changes
    assert Broker("mq", "amqp://h//").confirms and not Broker("mq", "redis://h/0").confirms


# -- through the outbox -------------------------------------------------------------------


def pump(dispatcher: Dispatcher, done: Any, timeout: float = 30.0) -> None:
    """Dispatcher passes until ``done()`` (backoffs are a few milliseconds here)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, dispatcher.outbox.health()
        dispatcher.run_once()
        time.sleep(0.01)


def mirror(memory: MemoryBroker, queue: Queue, consumer: BuildMirror) -> None:
    for message in memory.drain(queue):
        consumer.receive_all(parse_body(message.body, message.content_type))


@pytest.mark.parametrize("batch", [False, True], ids=["one-per-message", "batched"])
def test_a_consumer_rebuilds_every_recorded_build_and_unroutable_waits_in_the_outbox(
    memory: MemoryBroker, tmp_path: Path, batch: bool
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    store.migrate()
    replay(store)
    channel = MqChannel(memory.broker(batch=batch))
    dispatcher = Dispatcher(
        store, [channel], batch_size=20, batch_wait=0, schedule=FAST * 20, circuit_threshold=1000
    )
    report = dispatcher.run_once()  # no queue bound yet: nothing may count as delivered
    assert report.failed_lanes > 0 and report.delivered_lanes == 0
    assert dispatcher.outbox.health()[0]["pending_lanes"] == len(example_builds())
    queue = memory.bind("#")
    consumer = BuildMirror()

    def mirrored() -> bool:
        mirror(memory, queue, consumer)
        return all(
            consumer.sequence(b) == (store.snapshot(b) or {}).get("sequence")
            for b in example_builds()
        )

    pump(dispatcher, mirrored)
    for build in example_builds():
        snap = store.snapshot(build)
        assert snap is not None and consumer.document(build) == snap["document"]
    assert consumer.gaps() == []
    assert dispatcher.outbox.dead_letters() == []
    store.dispose()
