"""Real brokers: consumers rebuild every recorded build from the queue, across a cut connection.

The store is fed the event streams recorded from a real Airflow run of the
example DAGs (tests/recordings), as the collectors applied them, on SQLite and
on PostgreSQL; the dispatcher publishes through a TCP proxy that is cut half-way.
A consumer of our own (pika on RabbitMQ, kombu on Redis) mirrors each build
with :class:`BuildMirror` and must end with every document equal to the
store's, each build's change sets in order with nothing missing that no
snapshot covers. Every exchange, queue and key is named for the test and
removed after it; the brokers themselves are never touched.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pika
import pytest
import redis
import sqlalchemy as sa
from kombu import Connection, Consumer, Exchange, Queue

from airflow_bkci.channels.consumer import BuildMirror, parse_body
from airflow_bkci.channels.dispatcher import Dispatcher, PassReport
from airflow_bkci.channels.envelope import change_event
from airflow_bkci.channels.mq import Broker, MqChannel
from airflow_bkci.channels.webhook import Delivery
from airflow_bkci.store import Store
from tests.proxy import TcpProxy
from tests.recordings import example_builds, replay, steps
from tests.services import require_postgres, require_rabbitmq, require_redis

BUILDS = example_builds()
# Long enough that the outage below never exhausts it (no dead letters needed), short
# enough that the dispatcher resends within a second of the proxy coming back.
SCHEDULE = (0.05, 0.1, 0.2, 0.3, 0.5) + (0.5,) * 40

pytestmark = pytest.mark.timeout(180)


# -- stores ---------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty migrated store: a temporary SQLite file, or a database of the test's own."""
    if request.param == "sqlite":
        opened = Store(f"sqlite:///{tmp_path / 'status.db'}")
        opened.migrate()
        yield opened
        opened.dispose()
        return
    admin = sa.create_engine(
        require_postgres().replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    name = f"bkci_mq_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        opened = Store(admin.url.set(database=name).render_as_string(hide_password=False))
        opened.migrate()
        yield opened
        opened.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# -- consumers ------------------------------------------------------------------------------


class Received:
    """What a consumer got: every event in arrival order, and the mirrored builds."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.messages: list[tuple[str, str]] = []  # (routing key, content type)
        self.mirror = BuildMirror()
        self._changed = threading.Condition()
        self._on_next: Callable[[], None] | None = None

    def on_next_message(self, action: Callable[[], None]) -> None:
        """Run ``action`` (once) in the consumer's thread when the next message arrives."""
        self._on_next = action

    def add(self, routing_key: str, content_type: str, body: bytes) -> None:
        action, self._on_next = self._on_next, None
        if action is not None:
            action()  # e.g. cut the publisher's connection while it is still publishing
        events = parse_body(body, content_type)
        with self._changed:
            self.messages.append((routing_key, content_type))
            self.events.extend(events)
            self.mirror.receive_all(events)
            self._changed.notify_all()

    def wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(done, timeout):
                raise AssertionError(f"timed out waiting for {what}")

    def at(self, store: Store) -> bool:
        """True when every build is mirrored at the store's sequence (call under the lock)."""
        return all(
            self.mirror.sequence(b) == (store.snapshot(b) or {}).get("sequence") for b in BUILDS
        )

    def wait_mirrored(self, store: Store, timeout: float = 60.0) -> None:
        self.wait(lambda: self.at(store), timeout, "every build at the store's sequence")


class PikaConsumer(Received):
    """A pika consumer on a queue of its own, bound with ``binding``, in its own thread."""

    def __init__(self, url: str, exchange: str, binding: str = "#") -> None:
        super().__init__()
        self.url, self.exchange, self.queue = url, exchange, f"{exchange}.consumer"
        with pika.BlockingConnection(pika.URLParameters(url)) as admin:
            channel = admin.channel()
            channel.exchange_declare(exchange, exchange_type="topic", durable=True)
            channel.queue_declare(self.queue, durable=True)
            channel.queue_bind(self.queue, exchange, routing_key=binding)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._consume, name="pika-consumer", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the pika consumer did not start"

    def _consume(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = connection.channel()

        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            assert properties.delivery_mode == 2, "messages must be persistent"
            self.add(method.routing_key, properties.content_type, body)
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(self.queue, on_message)
        self._ready.set()
        while not self._stop.is_set():
            connection.process_data_events(time_limit=0.1)
        connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        with pika.BlockingConnection(pika.URLParameters(self.url)) as admin:
            channel = admin.channel()
            channel.queue_delete(self.queue)
            channel.exchange_delete(self.exchange)


class KombuRedisConsumer(Received):
    """A kombu consumer of a queue bound with ``#``, on keys under a prefix of its own."""

    def __init__(self, url: str, exchange: str, prefix: str) -> None:
        super().__init__()
        self.url, self.prefix = url, prefix
        self.connection = Connection(url, transport_options={"global_keyprefix": prefix})
        exchange_ = Exchange(exchange, type="topic", durable=True)
        self.queue = Queue(f"{exchange}.consumer", exchange_, routing_key="#", durable=True)
        self.queue(self.connection.default_channel).declare()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._consume, name="redis-consumer", daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        def on_message(body: Any, message: Any) -> None:
            self.add(message.delivery_info["routing_key"], message.content_type, message.body)
            message.ack()

        with Consumer(self.connection, [self.queue], callbacks=[on_message], accept=None):
            while not self._stop.is_set():
                try:
                    self.connection.drain_events(timeout=0.1)
                except TimeoutError:
                    continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.connection.release()
        client = redis.Redis.from_url(self.url)
        keys = list(client.scan_iter(match=f"{self.prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


# -- helpers --------------------------------------------------------------------------------


def proxied(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def dispatcher(store: Store, channel: MqChannel) -> Dispatcher:
    return Dispatcher(
        store, [channel], batch_size=20, batch_wait=0, schedule=SCHEDULE, circuit_threshold=1000
    )


def deliver_all(d: Dispatcher, timeout: float = 60.0) -> None:
    """Pass until no lane has anything pending (the backoffs here are sub-second)."""
    deadline = time.monotonic() + timeout
    while True:
        d.run_once()  # opens the lanes of new builds first: only then do they count
        if not any(h["pending_lanes"] for h in d.outbox.health()):
            return
        assert time.monotonic() < deadline, d.outbox.health()
        time.sleep(0.05)


class Cut:
    """Cuts the publisher's proxy half-way through the replay, in one of two ways.

    ``idle``: between two dispatcher passes, so the next send finds the
    connection dead. ``mid-send``: when the consumer gets the next message,
    which is while the dispatcher is still publishing the rest of its batch,
    so part of a batch is in the queue and all of it is sent again.
    """

    def __init__(self, mode: str, proxy: TcpProxy, consumer: Received) -> None:
        self.mode, self.proxy, self.consumer = mode, proxy, consumer
        self.done = threading.Event()

    def arm(self) -> None:
        if self.mode == "idle":
            self._cut()
        else:
            self.consumer.on_next_message(self._cut)

    def _cut(self) -> None:
        self.proxy.cut()
        self.done.set()


def replay_with_a_cut(store: Store, d: Dispatcher, cut: Cut) -> list[PassReport]:
    """Replay the recording with a dispatcher pass after each step; cut half-way.

    Returns the reports of the passes that started with the proxy cut.
    """
    total = len(steps(BUILDS))
    done = 0
    during_outage: list[PassReport] = []

    def after_each() -> None:
        nonlocal done
        done += 1
        if done == total // 2:
            cut.arm()
        was_cut = cut.done.is_set()
        report = d.run_once()
        if was_cut:
            during_outage.append(report)

    replay(store, BUILDS, after_each=after_each)
    assert cut.done.is_set(), "the connection was never cut: no message after the half-way step"
    return during_outage


def assert_nothing_lost(store: Store, received: Received) -> None:
    """Every build mirrored equal to the store, its change sets in order, gaps only under snapshots.

    Resent events (after a cut) are dropped by id first, as consumers must.
    """
    first: list[dict[str, Any]] = []
    seen: set[str] = set()
    for event in received.events:
        if event["id"] not in seen:
            seen.add(event["id"])
            first.append(event)
    for build in BUILDS:
        snap = store.snapshot(build)
        assert snap is not None
        expected = 1
        for event in (e for e in first if e["subject"] == build):
            sequence = event["data"]["sequence"]
            if event["type"].endswith(".snapshot"):
                assert sequence >= expected - 1, (build, event["id"], "snapshot went back")
                expected = sequence + 1
            else:
                assert sequence == expected, (build, event["id"], f"expected {expected}")
                expected += 1
        assert expected - 1 == snap["sequence"], build
        assert received.mirror.document(build) == snap["document"], build
    assert received.mirror.gaps() == []


# -- RabbitMQ ---------------------------------------------------------------------------------


@pytest.fixture
def rabbitmq() -> str:
    return require_rabbitmq()


@pytest.fixture
def exchange() -> str:
    return f"bkci-test-{uuid.uuid4().hex[:12]}"


@pytest.mark.rabbitmq
@pytest.mark.parametrize("cut_mode", ["idle", "mid-send"])
@pytest.mark.parametrize("batch", [False, True], ids=["one-per-message", "batched"])
def test_pika_consumer_gets_every_change_set_in_order_across_a_cut_connection(
    store: Store, rabbitmq: str, exchange: str, batch: bool, cut_mode: str
) -> None:
    consumer = PikaConsumer(rabbitmq, exchange)
    target = urlsplit(rabbitmq)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5672)
    channel = MqChannel(Broker("rabbit", proxied(rabbitmq, proxy), exchange=exchange, batch=batch))
    try:
        d = dispatcher(store, channel)
        during_outage = replay_with_a_cut(store, d, Cut(cut_mode, proxy, consumer))
        # While cut, sends fail and nothing is counted as delivered.
        assert sum(r.failed_lanes for r in during_outage) > 0
        assert sum(r.delivered_lanes for r in during_outage) == 0
        assert any(h["pending_lanes"] for h in d.outbox.health())
        proxy.restore()
        deliver_all(d)
        consumer.wait_mirrored(store)
        assert_nothing_lost(store, consumer)
        assert d.outbox.dead_letters() == []
        wanted = "application/cloudevents-batch+json" if batch else "application/cloudevents+json"
        assert {content_type for _, content_type in consumer.messages} == {wanted}
        assert {key.rsplit(".", 1)[1] for key, _ in consumer.messages} <= {"changed", "snapshot"}
    finally:
        channel.close()
        proxy.close()
        consumer.close()


@pytest.mark.rabbitmq
def test_unroutable_messages_are_not_delivered_and_wait_for_a_queue(
    rabbitmq: str, exchange: str, tmp_path: Path
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    store.migrate()
    replay(store, BUILDS)
    channel = MqChannel(Broker("rabbit", rabbitmq, exchange=exchange))
    consumer: PikaConsumer | None = None
    try:
        # The exchange exists (the channel declares it) but no queue is bound to it:
        # RabbitMQ returns each message (basic.return) before it acks it.
        result = channel.send(_first_events(store))
        assert result.delivery is Delivery.RETRY
        assert result.error is not None and "has no queue bound for routing key" in result.error
        d = dispatcher(store, channel)
        report = d.run_once()
        assert report.delivered_lanes == 0 and report.failed_lanes > 0
        assert {h["pending_lanes"] for h in d.outbox.health()} == {len(BUILDS)}
        # A consumer binds a queue later: the outbox still has everything for it.
        consumer = PikaConsumer(rabbitmq, exchange)
        deliver_all(d)
        consumer.wait_mirrored(store)
        assert_nothing_lost(store, consumer)
    finally:
        channel.close()
        if consumer is not None:
            consumer.close()
        else:
            with pika.BlockingConnection(pika.URLParameters(rabbitmq)) as admin:
                admin.channel().exchange_delete(exchange)
        store.dispose()


@pytest.mark.rabbitmq
def test_a_binding_for_one_pipeline_gets_only_its_routing_keys(
    store: Store, rabbitmq: str, exchange: str
) -> None:
    replay(store, BUILDS)
    pipeline = store.snapshot(BUILDS[0])
    assert pipeline is not None
    dag_id = pipeline["document"]["pipeline_id"]
    consumer = PikaConsumer(rabbitmq, exchange, binding=f"{dag_id}.*")
    channel = MqChannel(Broker("rabbit", rabbitmq, exchange=exchange, pipelines=(dag_id,)))
    try:
        deliver_all(dispatcher(store, channel))
        build = BUILDS[0]
        snap = store.snapshot(build)
        assert snap is not None
        consumer.wait(
            lambda: consumer.mirror.sequence(build) == snap["sequence"], 30, f"{build} mirrored"
        )
        assert consumer.mirror.document(build) == snap["document"]
        assert {e["data"]["pipeline_id"] for e in consumer.events} == {dag_id}
    finally:
        channel.close()
        consumer.close()


def _first_events(store: Store) -> list[dict[str, Any]]:
    """The first change set of every build, as the dispatcher would send it."""
    out = []
    for build in BUILDS:
        (first,) = store.changes(build, after=0, limit=1)
        snap = store.snapshot(build)
        assert snap is not None
        out.append(
            change_event(
                source="/test",
                pipeline_id=snap["document"]["pipeline_id"],
                build_id=build,
                sequence=first["sequence"],
                patch=first["patch"],
                time=first["created_at"],
            )
        )
    return out


# -- Redis --------------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("cut_mode", ["idle", "mid-send"])
@pytest.mark.parametrize("batch", [False, True], ids=["one-per-message", "batched"])
def test_redis_consumer_gets_every_change_set_in_order_across_a_cut_connection(
    store: Store, exchange: str, batch: bool, cut_mode: str
) -> None:
    url = require_redis()
    prefix = f"{exchange}:"
    consumer = KombuRedisConsumer(url, exchange, prefix)
    target = urlsplit(url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    broker = Broker(
        "redis",
        proxied(url, proxy),
        exchange=exchange,
        batch=batch,
        transport_options={"global_keyprefix": prefix},
    )
    channel = MqChannel(broker)
    try:
        d = dispatcher(store, channel)
        during_outage = replay_with_a_cut(store, d, Cut(cut_mode, proxy, consumer))
        assert sum(r.failed_lanes for r in during_outage) > 0
        assert sum(r.delivered_lanes for r in during_outage) == 0
        proxy.restore()
        deliver_all(d)
        consumer.wait_mirrored(store)
        assert_nothing_lost(store, consumer)
        assert d.outbox.dead_letters() == []
    finally:
        channel.close()
        proxy.close()
        consumer.close()


@pytest.mark.redis
def test_redis_without_a_bound_queue_is_not_delivered(exchange: str, tmp_path: Path) -> None:
    url = require_redis()
    prefix = f"{exchange}:"
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    store.migrate()
    replay(store, BUILDS)
    channel = MqChannel(
        Broker("redis", url, exchange=exchange, transport_options={"global_keyprefix": prefix})
    )
    try:
        report = dispatcher(store, channel).run_once()
        assert report.delivered_lanes == 0 and report.failed_lanes > 0
    finally:
        channel.close()
        client = redis.Redis.from_url(url)
        assert list(client.scan_iter(match=f"{prefix}*")) == []  # nothing was written
        client.close()
        store.dispose()
