"""The live channel's messages: what a WebSocket client may send, and what it is told.

Every frame is one JSON object. Frames from the server are either CloudEvents
(they carry ``specversion``; the same events the webhook posts) or control
messages, which carry ``op``. ``docs/live.md`` describes the protocol.

Client to server::

    {"op": "subscribe", "pipelines": ["etl"], "builds": {"b-1f2e...": 7, "b-99...": null}}
    {"op": "unsubscribe", "pipelines": ["etl"], "builds": ["b-1f2e..."]}
    {"op": "auth", "token": "<a fresh Airflow JWT>"}
    {"op": "ping"}

Server to client: ``subscribed``, ``unsubscribed``, ``authenticated``,
``pong``, ``heartbeat``, ``error`` (the connection stays open), ``resync``
(then the server closes; reconnect with the sequences you have).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

import msgspec

from airflow_bkci.exceptions import BkciError

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_MESSAGE_BYTES",
    "SUBPROTOCOL",
    "TOKEN_SUBPROTOCOL_PREFIX",
    "Auth",
    "Close",
    "Ping",
    "ProtocolError",
    "Subscribe",
    "Unsubscribe",
    "control",
    "parse",
]

SUBPROTOCOL: Final = "bkci.v1"
TOKEN_SUBPROTOCOL_PREFIX: Final = "bearer."
"""Offered next to ``bkci.v1`` as ``bearer.<jwt>``: browsers cannot set WebSocket headers."""

MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_ID_LENGTH: Final = 250


class Close:
    """Close codes (4000-4999 are the application's own, RFC 6455 section 7.4.2)."""

    UNAUTHENTICATED: Final = 4401
    FORBIDDEN: Final = 4403
    RESYNC: Final = 4409
    TOKEN_IN_QUERY: Final = 4400


class ProtocolError(BkciError):
    """A client message the server cannot act on; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        self.code = code
        self.message = message
        self.details = details
        super().__init__(message)

    def frame(self, request: Mapping[str, Any] | None = None) -> str:
        extra = {"request": request.get("op")} if isinstance(request, Mapping) else {}
        return control("error", code=self.code, message=self.message, **self.details, **extra)


@dataclass(frozen=True)
class Subscribe:
    pipelines: tuple[str, ...] = ()
    builds: Mapping[str, int | None] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.pipelines) + len(self.builds)


@dataclass(frozen=True)
class Unsubscribe:
    pipelines: tuple[str, ...] = ()
    builds: tuple[str, ...] = ()


@dataclass(frozen=True)
class Auth:
    token: str = field(repr=False)


@dataclass(frozen=True)
class Ping:
    pass


Message = Subscribe | Unsubscribe | Auth | Ping

_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()


def parse(raw: str | bytes, max_subscriptions: int) -> Message:
    """One client frame as a message; :class:`ProtocolError` names what is wrong with it."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            "too_large",
            f"message of {size} bytes is over the limit of {MAX_MESSAGE_BYTES}; "
            "subscribe in several messages",
        )
    try:
        body = _DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise ProtocolError("bad_json", f"message is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("bad_request", f"message must be a JSON object, got {_kind(body)}")
    op = body.get("op")
    if op == "subscribe":
        message = _subscribe(body)
        if message.size == 0:
            raise ProtocolError("bad_request", "subscribe names no pipelines and no builds")
        if message.size > max_subscriptions:
            raise ProtocolError(
                "too_many",
                f"subscribe names {message.size} pipelines and builds; the limit per "
                f"connection is {max_subscriptions} ([bkci] live_max_subscriptions)",
            )
        return message
    if op == "unsubscribe":
        builds = body.get("builds", [])
        ids = list(builds) if isinstance(builds, dict) else builds
        return Unsubscribe(_ids(body.get("pipelines", []), "pipelines"), _ids(ids, "builds"))
    if op == "auth":
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError("bad_request", "auth needs 'token': a non-empty string")
        return Auth(token)
    if op == "ping":
        return Ping()
    raise ProtocolError(
        "unknown_op",
        f"unknown op {op!r}; use one of subscribe, unsubscribe, auth, ping",
    )


def _subscribe(body: dict[str, Any]) -> Subscribe:
    unknown = set(body) - {"op", "pipelines", "builds"}
    if unknown:
        raise ProtocolError(
            "bad_request", f"subscribe has unknown fields {sorted(unknown)}; use pipelines, builds"
        )
    pipelines = _ids(body.get("pipelines", []), "pipelines")
    raw = body.get("builds", {})
    if isinstance(raw, list):
        raw = dict.fromkeys(_ids(raw, "builds"))
    if not isinstance(raw, dict):
        raise ProtocolError(
            "bad_request",
            "'builds' must map build ids to the last sequence you have (or null), "
            f"got {_kind(raw)}",
        )
    builds: dict[str, int | None] = {}
    for build_id, sequence in raw.items():
        _ids([build_id], "builds")
        if sequence is not None and (
            isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0
        ):
            raise ProtocolError(
                "bad_request",
                f"builds[{build_id!r}] must be the last sequence you have (an integer >= 0) "
                f"or null, got {sequence!r}",
            )
        builds[build_id] = sequence
    return Subscribe(pipelines, builds)


def _ids(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ProtocolError("bad_request", f"'{what}' must be a list of ids, got {_kind(value)}")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > MAX_ID_LENGTH:
            raise ProtocolError(
                "bad_request",
                f"'{what}' holds {str(item)[:40]!r}: ids are non-empty strings of at most "
                f"{MAX_ID_LENGTH} characters",
            )
    return tuple(dict.fromkeys(value))


def _kind(value: Any) -> str:
    return type(value).__name__ if value is not None else "null"


def control(op: str, **fields: Any) -> str:
    """A control message as a text frame."""
    return _ENCODER.encode({"op": op, **fields}).decode()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
