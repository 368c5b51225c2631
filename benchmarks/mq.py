"""Benchmark the message-queue channel: RabbitMQ publishing with confirms, change sets per second.

    .venv/bin/python benchmarks/mq.py                  # about a minute
    .venv/bin/python benchmarks/mq.py --reps 5 --amqp amqp://guest:guest@127.0.0.1:5672/%2F

No Airflow stack. A SQLite status store is filled with builds of several pipelines
(not timed); their change sets are then published to a durable topic exchange with
one durable queue bound ``#``, so every message is routed, persisted and confirmed.
See benchmarks/README.md ("Message queue") for what each figure includes.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from delivery import event, task_fields  # benchmarks/ is on sys.path: the same build shape
from kombu import Connection, Exchange, Producer, Queue

from airflow_bkci.channels.dispatcher import Dispatcher
from airflow_bkci.channels.envelope import change_event
from airflow_bkci.channels.mq import Broker, Message, MqChannel, messages
from airflow_bkci.channels.webhook import Delivery
from airflow_bkci.model import BuildStatus
from airflow_bkci.store import Store

TARGET_BATCHED = 10_000.0
T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
S = BuildStatus


def fill(store: Store, pipelines: int, builds: int, per_build: int) -> int:
    """``builds`` builds spread over ``pipelines`` pipelines, ``per_build`` change sets each."""
    names = [(f"pipe_{b % pipelines:02d}", f"r{b}") for b in range(builds)]
    store.apply([event(dag, run, None, S.RUNNING, 0) for dag, run in names])
    for i in range(per_build // 2):
        for status, at in ((S.RUNNING, i * 2 + 1), (S.SUCCEED, i * 2 + 2)):
            store.apply(
                [
                    event(dag, run, f"t{i:03d}", status, at, **task_fields(i, 5))
                    for dag, run in names
                ]
            )
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM bkci_change").scalar_one())


def dispatcher_batches(store: Store, batch: int, per_lane: int) -> list[list[dict[str, Any]]]:
    """Every change set as an event, in sends shaped like a live dispatcher's.

    Each send holds ``batch`` events: ``per_lane`` consecutive change sets of
    each of ``batch // per_lane`` builds, builds taken in turn.
    """
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT c.build_id, b.dag_id, c.sequence, c.patch FROM bkci_change c "
            "JOIN bkci_build b ON b.build_id = c.build_id ORDER BY c.build_id, c.sequence"
        ).all()
    lanes: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        patch = r.patch if isinstance(r.patch, list) else json.loads(r.patch)
        lanes.setdefault(r.build_id, []).append(
            change_event(
                source="/airflow-bkci",
                pipeline_id=r.dag_id,
                build_id=r.build_id,
                sequence=r.sequence,
                patch=patch,
                time=T0,
            )
        )
    chunks: list[list[dict[str, Any]]] = []
    queues = list(lanes.values())
    while any(queues):
        for lane in queues:
            if lane:
                chunks.append(lane[:per_lane])
                del lane[:per_lane]
    lanes_per_send = max(1, batch // per_lane)
    return [
        [e for chunk in chunks[i : i + lanes_per_send] for e in chunk]
        for i in range(0, len(chunks), lanes_per_send)
    ]


class Rabbit:
    """A uniquely named durable topic exchange with one durable queue bound ``#``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.exchange = f"bkci-bench-{uuid.uuid4().hex[:10]}"
        self.admin = Connection(url)
        self.queue = Queue(
            f"{self.exchange}.all",
            Exchange(self.exchange, type="topic", durable=True),
            routing_key="#",
            durable=True,
        )
        self.queue(self.admin.default_channel).declare()

    def purge(self) -> int:
        return int(self.queue(self.admin.default_channel).purge() or 0)

    def close(self) -> None:
        bound = self.queue(self.admin.default_channel)
        bound.delete()
        bound.exchange.delete()
        self.admin.release()


def timed(sends: Sequence[Any], send: Callable[[Any], None]) -> float:
    t0 = time.perf_counter()
    for item in sends:
        send(item)
    return time.perf_counter() - t0


def ours(rabbit: Rabbit, sends: list[list[dict[str, Any]]], batch: bool) -> float:
    channel = MqChannel(Broker("bench", rabbit.url, exchange=rabbit.exchange, batch=batch))
    assert channel.send(sends[0]).delivery is Delivery.DELIVERED  # warm-up: connect, declare

    def send(events: list[dict[str, Any]]) -> None:
        result = channel.send(events)
        assert result.delivery is Delivery.DELIVERED, result

    seconds = timed(sends, send)
    channel.close()
    return seconds


def raw(rabbit: Rabbit, sends: list[list[dict[str, Any]]], batch: bool) -> float:
    """The same messages, encoded beforehand, published with confirms by a bare kombu Producer."""
    ready: list[list[Message]] = [messages(events, batch=batch) for events in sends]
    with Connection(rabbit.url, transport_options={"confirm_publish": True}) as conn:
        producer = Producer(conn.channel(), Exchange(rabbit.exchange, type="topic", durable=True))

        def send(group: list[Message]) -> None:
            for m in group:
                producer.publish(
                    m.body,
                    routing_key=m.routing_key,
                    delivery_mode=2,
                    mandatory=True,
                    content_type=m.content_type,
                    content_encoding="utf-8",
                    message_id=m.message_id,
                    type=m.event_type,
                    confirm_timeout=10,
                )

        send(ready[0])  # warm-up
        return timed(ready, send)


def raw_streamed(rabbit: Rabbit, sends: list[list[dict[str, Any]]], batch: bool) -> float:
    """The same messages, pre-encoded, by a bare kombu Producer on a channel in confirm mode,
    each send's acks awaited after all its messages (the technique MqChannel uses)."""
    ready: list[list[Message]] = [messages(events, batch=batch) for events in sends]
    with Connection(rabbit.url) as conn:
        channel = conn.channel()
        acked = [0]
        channel.events["basic_ack"].add(lambda tag, multiple: acked.__setitem__(0, tag))
        channel.confirm_select()
        producer = Producer(channel, Exchange(rabbit.exchange, type="topic", durable=True))
        published = [0]

        def send(group: list[Message]) -> None:
            for m in group:
                producer.publish(
                    m.body,
                    routing_key=m.routing_key,
                    delivery_mode=2,
                    mandatory=True,
                    content_type=m.content_type,
                    content_encoding="utf-8",
                    message_id=m.message_id,
                    type=m.event_type,
                )
                published[0] += 1
            while acked[0] < published[0]:  # acks come in order on one channel
                conn.drain_events(timeout=10)

        send(ready[0])  # warm-up
        return timed(ready, send)


def drain(url: str, rabbit: Rabbit, store_url: str, batch: bool, size: int) -> tuple[float, int]:
    store = Store(store_url)
    # A new endpoint name each run: its lanes start at sequence 0, so it sends everything.
    name = f"bench-{'batched' if batch else 'single'}-{uuid.uuid4().hex[:6]}"
    channel = MqChannel(Broker(name, url, exchange=rabbit.exchange, batch=batch))
    dispatcher = Dispatcher(store, [channel], batch_size=size, batch_wait=0)
    t0 = time.perf_counter()
    report = dispatcher.drain(timeout=900)
    seconds = time.perf_counter() - t0
    assert report.failed_lanes == 0 and report.snapshots == 0, report
    channel.close()
    store.dispose()
    return seconds, report.sent_events


def label(batch: bool) -> str:
    return "batched per pipeline" if batch else "one event per message"


def runs_text(*series: tuple[str, list[float]]) -> str:
    return "; ".join(f"{', '.join(f'{x:,.0f}' for x in xs)} ({name})" for name, xs in series)


def report_publishing(rabbit: Rabbit, sends: list[list[dict[str, Any]]], reps: int) -> bool:
    """Print ours against both baselines, one event per message and batched; True on target."""
    total = sum(len(events) for events in sends)
    ok = True
    for batch in (False, True):
        mine, streamed, base = [], [], []
        for _ in range(reps):
            for into, measure in ((mine, ours), (streamed, raw_streamed), (base, raw)):
                into.append(total / measure(rabbit, sends, batch))
                rabbit.purge()
        m, s, b = (statistics.median(x) for x in (mine, streamed, base))
        verdict = ""
        if batch:
            ok = m >= TARGET_BATCHED
            verdict = f" (target >= {TARGET_BATCHED:,.0f}/s) {'PASS' if ok else 'FAIL'}"
        print(
            f"MqChannel.send, {label(batch)}: median of {reps} {m:,.0f} change sets/s{verdict}\n"
            f"    baseline 1, same run: bare kombu Producer, same messages pre-encoded, "
            f"acks awaited per send: {s:,.0f}/s; ours/baseline = {m / s:.2f}\n"
            f"    baseline 2, same run: bare kombu Producer with kombu's confirm_publish "
            f"(ack awaited per message): {b:,.0f}/s; ours/baseline = {m / b:.2f}\n"
            f"    runs: {runs_text(('ours', mine), ('1', streamed), ('2', base))}"
        )
    return ok


def report_drain(url: str, rabbit: Rabbit, store_url: str, total: int, args: Any) -> None:
    for batch in (False, True):
        runs = []
        for _ in range(args.reps):
            seconds, sent = drain(url, rabbit, store_url, batch, args.batch)
            assert sent == total, (sent, total)
            runs.append(total / seconds)
            rabbit.purge()
        print(
            f"Dispatcher.drain through the outbox (SQLite), {label(batch)}: median "
            f"{statistics.median(runs):,.0f} change sets/s (runs: {runs_text(('ours', runs))})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--pipelines", type=int, default=20)
    parser.add_argument("--builds", type=int, default=200)
    parser.add_argument("--per-build", type=int, default=100, help="change sets per build")
    parser.add_argument("--batch", type=int, default=100, help="events per send")
    parser.add_argument("--per-lane", type=int, default=10, help="change sets per build per send")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-drain", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        rabbit = Rabbit(args.amqp)
    except Exception as exc:
        print(f"skipped: RabbitMQ at {args.amqp} is not reachable ({exc})")
        return 2
    ok = False
    with tempfile.TemporaryDirectory() as tmp:
        store_url = f"sqlite:///{Path(tmp) / 'status.db'}"
        store = Store(store_url)
        store.migrate()
        total = fill(store, args.pipelines, args.builds, args.per_build)
        sends = dispatcher_batches(store, args.batch, args.per_lane)
        store.dispose()
        per_message = [len(messages(s, batch=True)) for s in sends]
        print(
            f"{total:,} change sets of {args.builds} builds in {args.pipelines} pipelines; "
            f"{len(sends)} sends of {args.batch} events ({args.per_lane} per build); batched: "
            f"{statistics.mean(per_message):.1f} messages per send, "
            f"{total / sum(per_message):.1f} events per message"
        )
        try:
            ok = report_publishing(rabbit, sends, args.reps)
            if not args.skip_drain:
                report_drain(args.amqp, rabbit, store_url, total, args)
        finally:
            rabbit.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
