"""The message-queue channel: CloudEvents published to a topic exchange through kombu.

Each send publishes persistent messages (delivery mode 2) with the mandatory
flag to one durable topic exchange, routed by ``<pipeline>.<changed|snapshot>``
(:func:`routing_key`): one event per message (``application/cloudevents+json``)
or, in batch mode, one message per pipeline and event type carrying that
group's events in the dispatcher's order (``application/cloudevents-batch+json``).

What the broker did decides the answer, and ``send`` never raises:

- RabbitMQ (``amqp://``): the channel is in confirm mode. A send publishes all
  its messages, then reads the broker's acks; it is DELIVERED only when every
  message was acked. A nack or no answer within ``confirm_timeout`` is RETRY.
  An unroutable message comes back as basic.return, which RabbitMQ sends
  *before* that message's ack on the same channel, so once everything is acked
  every return has been seen, with no timing involved. That is why the
  mandatory flag is used rather than an alternate exchange: a message taken by
  an alternate exchange is acked like a routed one, so the publisher cannot
  tell, and it is still dropped when the alternate exchange has no queue.
  (kombu's own ``confirm_publish`` waits for each message's ack in turn: one
  round trip and one disk flush per message, five times slower.)
- Redis and the in-memory transport (kombu's virtual transports) have no
  confirms and ignore the mandatory flag; kombu routes topic messages on the
  publishing side and drops what matches no binding. So the channel looks the
  routing key up in the exchange's binding table itself before each publish,
  and stops the send at the first message nothing would take.

Unroutable and lost-connection sends are RETRY: the dispatcher keeps the
change sets in the outbox, backs off and resends the whole send (dead letters
only when its schedule runs out), and consumers drop what they already have by
CloudEvents id. A failed connection is thrown away; the next send connects afresh.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from amqp.exceptions import MessageNacked
from kombu.connection import Connection
from kombu.entity import Exchange
from kombu.messaging import Producer
from kombu.transport import virtual

from airflow_bkci.channels.envelope import (
    CONTENT_TYPE,
    CONTENT_TYPE_BATCH,
    EVENT_CHANGED,
    EVENT_SNAPSHOT,
    batch_id,
    encode_batch,
    encode_event,
)
from airflow_bkci.channels.webhook import Delivery, SendResult
from airflow_bkci.exceptions import ConfigError

__all__ = ["DEFAULT_EXCHANGE", "Broker", "MqChannel", "pipeline_word", "routing_key"]

log = logging.getLogger(__name__)

DEFAULT_EXCHANGE: Final = "bkci.builds"
APP_ID: Final = "airflow-bkci"

# Broker URL schemes kombu maps to a transport we document; memory:// is for tests.
SCHEMES: Final = frozenset({"amqp", "amqps", "pyamqp", "redis", "rediss", "memory"})
_CONFIRMING: Final = frozenset({"amqp", "amqps", "pyamqp"})

# AMQP routing keys are short strings: at most 255 bytes of UTF-8.
ROUTING_KEY_BYTES: Final = 255
_KIND_WORDS: Final = {EVENT_CHANGED: "changed", EVENT_SNAPSHOT: "snapshot"}
# The characters a topic exchange treats specially, and the escape character itself.
_ESCAPES: Final = str.maketrans({"%": "%25", ".": "%2E", "*": "%2A", "#": "%23"})
_HASH_CHARS: Final = 16


def pipeline_word(pipeline_id: str) -> str:
    """``pipeline_id`` as one topic word: ``%``, ``.``, ``*``, ``#`` percent-encoded.

    A DAG id may hold dots (``team.etl``); unescaped they would split the
    pipeline into several words and ``*.changed`` would not match it. An id too
    long for a routing key keeps its first characters and ends in ``~`` and
    16 hex digits of its SHA-256, so it stays unique and stable.
    """
    word = pipeline_id.translate(_ESCAPES)
    room = ROUTING_KEY_BYTES - len(".snapshot")
    if len(word.encode("utf-8")) <= room:
        return word
    digest = hashlib.sha256(pipeline_id.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    head = word.encode("utf-8")[: room - _HASH_CHARS - 1].decode("utf-8", "ignore")
    if "%" in head[-2:]:  # never leave half an escape before the digest
        head = head[: head.rindex("%")]
    return f"{head}~{digest}"


def routing_key(pipeline_id: str, event_type: str) -> str:
    """The routing key of ``event_type`` events of ``pipeline_id``: ``<pipeline>.<kind>``.

    ``kind`` is ``changed`` or ``snapshot``; bind ``#`` for everything,
    ``*.changed`` for every pipeline's change sets, ``deploy.#`` for one pipeline.
    """
    if event_type not in _KIND_WORDS:
        raise ConfigError(
            f"event type {event_type!r} has no routing key; use {EVENT_CHANGED!r} or "
            f"{EVENT_SNAPSHOT!r}"
        )
    return f"{pipeline_word(pipeline_id)}.{_KIND_WORDS[event_type]}"


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True)
class Broker:
    """Where one message-queue channel publishes; ``name`` is its Airflow connection id."""

    name: str
    url: str = field(repr=False)
    exchange: str = DEFAULT_EXCHANGE
    batch: bool = False
    pipelines: tuple[str, ...] = ("*",)
    event_types: frozenset[str] = frozenset({EVENT_CHANGED, EVENT_SNAPSHOT})
    confirm_timeout: float = 10.0
    connect_timeout: float = 5.0
    declare: bool = True
    transport_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        scheme = self.url.split("://", 1)[0].lower() if "://" in self.url else ""
        if scheme not in SCHEMES:
            raise ConfigError(
                f"message queue {self.name!r}: broker URL {masked(self.url)!r} has scheme "
                f"{scheme or 'none'!r}; use amqp://user:password@host:5672/vhost (RabbitMQ) or "
                "redis://host:6379/0 (Redis)"
            )
        size = len(self.exchange.encode("utf-8"))
        if not 0 < size <= ROUTING_KEY_BYTES:
            raise ConfigError(
                f"message queue {self.name!r}: exchange {self.exchange!r} must be 1 to "
                f"{ROUTING_KEY_BYTES} bytes; set extra 'exchange' to a name such as "
                f"{DEFAULT_EXCHANGE!r}"
            )
        unknown = set(self.event_types) - set(_KIND_WORDS)
        if unknown or not self.event_types:
            raise ConfigError(
                f"message queue {self.name!r}: event_types {sorted(unknown) or '[]'} unknown; "
                f"use any of {EVENT_CHANGED!r}, {EVENT_SNAPSHOT!r}"
            )
        for option in ("confirm_timeout", "connect_timeout"):
            value = getattr(self, option)
            if not value > 0:
                raise ConfigError(
                    f"message queue {self.name!r}: {option} {value!r} must be a number of "
                    "seconds above 0"
                )

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0].lower()

    @property
    def confirms(self) -> bool:
        """True when the broker acknowledges each message (publisher confirms)."""
        return self.scheme in _CONFIRMING

    def accepts(self, pipeline_id: str) -> bool:
        return any(fnmatch.fnmatchcase(pipeline_id, glob) for glob in self.pipelines)

    @property
    def wants_changes(self) -> bool:
        """False when the queue takes snapshots only: every change then goes as one."""
        return EVENT_CHANGED in self.event_types


@dataclass(frozen=True)
class Message:
    """One message as published: its routing key, body and AMQP properties."""

    routing_key: str
    body: bytes
    content_type: str
    message_id: str
    event_type: str
    events: int


def messages(events: Sequence[Mapping[str, Any]], *, batch: bool) -> list[Message]:
    """The messages for ``events``, in the order they must be published.

    Batch mode groups by (pipeline, event type) in order of first appearance;
    the dispatcher sends each build's events together and in sequence, so a
    build's events stay in one message, in order.
    """
    if not batch:
        return [
            Message(
                routing_key(e["pipelineid"], e["type"]),
                encode_event(e),
                CONTENT_TYPE,
                str(e["id"]),
                e["type"],
                1,
            )
            for e in events
        ]
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for e in events:
        groups.setdefault((e["pipelineid"], e["type"]), []).append(e)
    return [
        Message(
            routing_key(pipeline, kind),
            encode_batch(group),
            CONTENT_TYPE_BATCH,
            batch_id(group),
            kind,
            len(group),
        )
        for (pipeline, kind), group in groups.items()
    ]


@dataclass
class _Confirms:
    """RabbitMQ's publisher confirms on one channel, as they stream in.

    Every message of a send is published before any confirm is awaited, and
    the acks (cumulative when ``multiple``) are collected afterwards: one round
    trip and one disk flush per send rather than per message.
    """

    published: int = 0
    outstanding: set[int] = field(default_factory=set)
    nacked: int = 0

    def sent(self) -> None:
        self.published += 1  # delivery tags count from 1 after confirm.select
        self.outstanding.add(self.published)

    def ack(self, tag: int, multiple: bool) -> None:
        done = {t for t in self.outstanding if t <= tag} if multiple else {tag}
        self.outstanding -= done

    def nack(self, tag: int, multiple: bool) -> None:
        before = len(self.outstanding)
        self.ack(tag, multiple)
        self.nacked += before - len(self.outstanding)


@dataclass
class _Session:
    """An open connection with its producer, and what the broker said about our messages."""

    # kombu's objects are untyped: Any keeps mypy strict everywhere else.
    connection: Any
    producer: Any
    confirms: _Confirms | None  # None on the virtual transports (Redis, memory)
    returned: list[tuple[str, str]] = field(default_factory=list)  # (routing key, message id)


class Unroutable(Exception):
    """The broker had no queue for a message (internal: becomes a RETRY result)."""


ConnectionFactory = Callable[[Broker], Any]


def connect(broker: Broker) -> Any:
    """A kombu connection for ``broker`` (the channel turns publisher confirms on itself)."""
    return Connection(  # type: ignore[no-untyped-call]
        broker.url,
        connect_timeout=broker.connect_timeout,
        transport_options=dict(broker.transport_options),
    )


class MqChannel:
    """Publishes batches of events to one broker's exchange. ``send`` never raises."""

    def __init__(self, broker: Broker, factory: ConnectionFactory = connect) -> None:
        self.broker = broker
        self.exchange: Any = Exchange(  # type: ignore[no-untyped-call]
            broker.exchange, type="topic", durable=True, auto_delete=False
        )
        self._factory = factory
        self._session: _Session | None = None
        # The transport's "could not reach the broker" errors, known before connecting.
        self._connection_errors: tuple[type[BaseException], ...] = (OSError, TimeoutError)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.broker.name

    @property
    def wants_changes(self) -> bool:
        return self.broker.wants_changes

    def accepts(self, pipeline_id: str) -> bool:
        return self.broker.accepts(pipeline_id)

    def send(self, events: Sequence[Mapping[str, Any]]) -> SendResult:
        if not events:
            return SendResult(Delivery.DELIVERED)
        with self._lock:
            try:
                outgoing = messages(events, batch=self.broker.batch)
            except Exception as exc:  # events the dispatcher built always encode
                return SendResult(Delivery.REJECTED, error=f"cannot encode events: {exc}")
            try:
                self._publish(outgoing)
            except Unroutable as exc:
                return SendResult(Delivery.RETRY, error=str(exc))
            except Exception as exc:
                self.close()
                return SendResult(Delivery.RETRY, error=self._describe(exc))
        return SendResult(Delivery.DELIVERED)

    def _publish(self, outgoing: Sequence[Message]) -> None:
        session = self._open()
        routable: dict[str, bool] = {}
        for message in outgoing:
            key = message.routing_key
            if session.confirms is None:
                if key not in routable:
                    routable[key] = self._bound(session, key)
                if not routable[key]:
                    # Stop here: the rest of the send would only arrive out of order.
                    session.returned.append((key, message.message_id))
                    break
            session.producer.publish(
                message.body,
                routing_key=key,
                delivery_mode=2,
                mandatory=True,
                content_type=message.content_type,
                content_encoding="utf-8",
                message_id=message.message_id,
                type=message.event_type,
                app_id=APP_ID,
                timeout=self.broker.confirm_timeout,
                retry=False,
            )
            if session.confirms is not None:
                session.confirms.sent()
        if session.confirms is not None:
            self._await_confirms(session, session.confirms)
        if session.returned:
            returned = list(session.returned)
            session.returned.clear()
            raise Unroutable(self._unroutable(returned, outgoing))

    def _await_confirms(self, session: _Session, confirms: _Confirms) -> None:
        """Read the broker's answers until every message is acked or nacked.

        RabbitMQ sends a message's basic.return before its ack, so once all are
        acked every return has been seen too. A timeout raises (socket.timeout):
        the connection is then dropped, since late acks would confuse the next send.
        """
        deadline = time.monotonic() + self.broker.confirm_timeout
        while confirms.outstanding:
            session.connection.drain_events(timeout=max(0.001, deadline - time.monotonic()))
        if confirms.nacked:
            nacked, confirms.nacked = confirms.nacked, 0
            raise MessageNacked(f"{nacked} message(s) nacked")

    def _open(self) -> _Session:
        if self._session is not None:
            return self._session
        connection: Any = self._factory(self.broker)
        self._connection_errors = (OSError, TimeoutError, *connection.connection_errors)
        try:
            # No retries here: the dispatcher backs off, and kombu's own retry sleeps.
            connection.ensure_connection(max_retries=0, reraise_as_library_errors=False)
            channel: Any = connection.channel()
            emulated = isinstance(channel, virtual.Channel)
            if self.broker.declare or emulated:
                # Once per connection. A virtual transport keeps exchanges in this
                # process only, and routes by their type: it must always hear of it.
                self.exchange(channel).declare()
            session = _Session(connection, None, None if emulated else _Confirms())
            if session.confirms is not None:
                self._listen(channel, session, session.confirms)
            session.producer = Producer(  # type: ignore[no-untyped-call]
                channel, self.exchange, auto_declare=False
            )
        except BaseException:
            connection.collect()
            raise
        self._session = session
        return session

    @staticmethod
    def _listen(channel: Any, session: _Session, confirms: _Confirms) -> None:
        """Turn publisher confirms on and hear acks, nacks and returns (py-amqp channel events)."""

        def on_return(exc: Exception, exchange: str, key: str, message: Any) -> None:
            properties = getattr(message, "properties", None) or {}
            session.returned.append((key, str(properties.get("message_id", "?"))))

        channel.events["basic_ack"].add(confirms.ack)
        channel.events["basic_nack"].add(confirms.nack)
        # Without a listener py-amqp raises a return out of the read loop.
        channel.events["basic_return"].add(on_return)
        channel.confirm_select()

    def _bound(self, session: _Session, key: str) -> bool:
        """True when a virtual exchange has a binding matching ``key`` (kombu would drop it)."""
        channel = session.producer.channel
        name = self.exchange.name
        try:
            table = channel.get_table(name)
        except KeyError:
            return False
        return bool(channel.typeof(name).lookup(table, name, key, None))

    def _unroutable(self, returned: list[tuple[str, str]], outgoing: Sequence[Message]) -> str:
        (key, message_id), more = returned[0], len(returned) - 1
        total = sum(m.events for m in outgoing)
        also = f", and {more} more message(s)" if more else ""
        return (
            f"unroutable: exchange {self.broker.exchange!r} on {masked(self.broker.url)} has no "
            f"queue bound for routing key {key!r} (message {message_id!r}{also}); all {total} "
            f"events of this send are sent again later. Bind a queue to the exchange (routing "
            f"key '#' takes everything) or narrow extra 'pipelines' of connection {self.name!r}"
        )

    def _describe(self, exc: Exception) -> str:
        where = f"broker {masked(self.broker.url)}, exchange {self.broker.exchange!r}"
        kind = type(exc).__name__
        code = getattr(exc, "reply_code", None) or getattr(exc, "code", None)
        if isinstance(code, int) and code in (403, 404, 406):
            return (
                f"{where} refused the channel ({kind} {code}: {exc}); check that connection "
                f"{self.name!r} may write to the exchange, that it is a durable topic exchange, "
                "or set extra 'exchange' to another name"
            )
        if isinstance(exc, MessageNacked):
            return (
                f"{where} refused a message (nack: the queue is full or the broker short of "
                "resources); it is resent later"
            )
        if isinstance(exc, self._connection_errors):
            return (
                f"no answer from {where} ({kind}: {exc}); check that connection {self.name!r} "
                "points at the broker and that it is up"
            )
        log.warning("bkci mq %s: publish failed", self.name, exc_info=True)
        return f"{where}: {kind}: {exc}"

    def close(self) -> None:
        """Drop the connection without a goodbye (it may be dead); the next send reconnects."""
        session, self._session = self._session, None
        if session is not None:
            try:
                session.connection.collect()
            except Exception:
                log.debug("bkci mq %s: closing the connection failed", self.name, exc_info=True)
