"""CloudEvents envelopes for build change sets and snapshots, and their data schemas.

Events are CloudEvents 1.0 in structured JSON mode: one event per body
(:data:`CONTENT_TYPE`) or a JSON array of them (:data:`CONTENT_TYPE_BATCH`).
The SDK checks every attribute we set; the dicts returned here are exactly
what goes on the wire. ``docs/wire-format.md`` describes the format for users.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import cache, lru_cache
from importlib import resources
from typing import Any, Final

import msgspec
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.v1.event import CloudEvent
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from airflow_bkci.exceptions import InvalidEvent

EVENT_CHANGED: Final = "dev.airflow-bkci.build.changed"
EVENT_SNAPSHOT: Final = "dev.airflow-bkci.build.snapshot"
CONTENT_TYPE: Final = "application/cloudevents+json"
CONTENT_TYPE_BATCH: Final = "application/cloudevents-batch+json"
SPEC_VERSION: Final = "1.0"
DATA_CONTENT_TYPE: Final = "application/json"

SCHEMA_CHANGED: Final = "urn:airflow-bkci:schema:build-changed:1"
SCHEMA_SNAPSHOT: Final = "urn:airflow-bkci:schema:build-snapshot:1"

# The sequence extension asks for strings whose plain string order is the
# event order, so the number is zero-padded; ten digits outlast any build.
SEQUENCE_DIGITS: Final = 10

# Per event type: the short tag used in event ids, the schema URI, the schema file.
_KINDS: Final[dict[str, tuple[str, str, str]]] = {
    EVENT_CHANGED: ("changed", SCHEMA_CHANGED, "build-changed.json"),
    EVENT_SNAPSHOT: ("snapshot", SCHEMA_SNAPSHOT, "build-snapshot.json"),
}

# Schema messages quote the offending value; a whole document is too long to read.
_MAX_REASON = 300


def event_id(build_id: str, sequence: int, kind: str) -> str:
    """The id of the ``kind`` event (an event type) for ``build_id`` at ``sequence``.

    The same inputs always give the same id, so a resent event keeps its id
    and the receiver can drop it; the change set and the snapshot at one
    sequence differ in the last part: ``b-1f2e:7:changed``, ``b-1f2e:7:snapshot``.
    """
    if kind not in _KINDS:
        raise InvalidEvent(f"unknown event kind {kind!r}; use EVENT_CHANGED or EVENT_SNAPSHOT")
    return f"{build_id}:{sequence}:{_KINDS[kind][0]}"


def sequence_attribute(sequence: int) -> str:
    """The ``sequence`` extension value: the number, zero-padded to sort as a string."""
    return str(sequence).zfill(SEQUENCE_DIGITS)


def change_event(
    *,
    source: str,
    pipeline_id: str,
    build_id: str,
    sequence: int,
    patch: list[dict[str, Any]] | msgspec.Raw,
    time: datetime,
) -> dict[str, Any]:
    """The ``build.changed`` event for one change set (``patch`` is shared, not copied).

    ``patch`` may be the stored JSON text as ``msgspec.Raw``: it goes on the wire
    as it is, never decoded and encoded again (the dispatcher's hot path);
    :func:`plain` decodes it where a Python value is needed.
    """
    _check_sequence(sequence, minimum=1)
    if isinstance(patch, msgspec.Raw) and bytes(patch).strip() in (b"", b"[]"):
        patch = []
    if not patch:
        raise InvalidEvent(
            f"change set {build_id}:{sequence} has an empty patch; an empty diff takes no sequence"
        )
    data = {"pipeline_id": pipeline_id, "build_id": build_id, "sequence": sequence, "patch": patch}
    return _event(EVENT_CHANGED, source, pipeline_id, build_id, sequence, time, data)


def snapshot_event(
    *,
    source: str,
    pipeline_id: str,
    build_id: str,
    sequence: int,
    document: dict[str, Any],
    time: datetime,
) -> dict[str, Any]:
    """The ``build.snapshot`` event: the whole ``document`` as of change set ``sequence``."""
    _check_sequence(sequence, minimum=0)
    data = {
        "pipeline_id": pipeline_id,
        "build_id": build_id,
        "sequence": sequence,
        "document": document,
    }
    return _event(EVENT_SNAPSHOT, source, pipeline_id, build_id, sequence, time, data)


def _check_sequence(sequence: int, *, minimum: int) -> None:
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < minimum:
        raise InvalidEvent(f"sequence must be an integer >= {minimum}, got {sequence!r}")
    if len(str(sequence)) > SEQUENCE_DIGITS:
        raise InvalidEvent(f"sequence {sequence} has more than {SEQUENCE_DIGITS} digits")


def _event(
    kind: str,
    source: str,
    pipeline_id: str,
    build_id: str,
    sequence: int,
    time: datetime,
    data: dict[str, Any],
) -> dict[str, Any]:
    if time.tzinfo is None:
        raise InvalidEvent(
            f"event time {time.isoformat()} has no time zone; pass an aware UTC time"
        )
    attributes: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event_id(build_id, sequence, kind),
        "source": source,
        "type": kind,
        "subject": build_id,
        "time": time,
        "datacontenttype": DATA_CONTENT_TYPE,
        "dataschema": _KINDS[kind][1],
        "sequence": sequence_attribute(sequence),
        "pipelineid": pipeline_id,
    }
    if not build_id or not pipeline_id:
        raise InvalidEvent(f"{attributes['id']}: build and pipeline ids must not be empty")
    _check_attributes(kind, source, attributes)
    attributes["time"] = rfc3339(time)
    attributes["data"] = data
    return attributes


def _check_attributes(kind: str, source: str, attributes: dict[str, Any]) -> None:
    """The SDK's checks (required attributes, types, extension names), once per source.

    Every other attribute is built here from a non-empty id, a number and an
    aware time, so one event of a (type, source) shows what all of them are;
    checking each costs more than the rest of the event.
    """
    if (kind, source) in _CHECKED:
        return
    try:
        CloudEvent(dict(attributes), None)
    except BaseCloudEventException as exc:
        raise InvalidEvent(f"{attributes['id']}: not a valid CloudEvent: {exc}") from exc
    _CHECKED.add((kind, source))


_CHECKED: set[tuple[str, str]] = set()


def plain(event: Mapping[str, Any]) -> dict[str, Any]:
    """``event`` with a raw patch decoded: for storing or inspecting it as a Python value."""
    data = event.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("patch"), msgspec.Raw):
        data = {**data, "patch": msgspec.json.decode(data["patch"])}
        return {**event, "data": data}
    return dict(event)


@lru_cache(maxsize=4096)
def rfc3339(time: datetime) -> str:
    """``time`` in UTC as RFC 3339 with milliseconds and a ``Z``.

    Cached: the change sets of one store transaction share their time, and a
    dispatcher pass formats thousands of them.
    """
    utc = time.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return utc.replace("+00:00", "Z")


def encode_event(event: Mapping[str, Any]) -> bytes:
    """One event as a structured-mode body (:data:`CONTENT_TYPE`): compact UTF-8 JSON."""
    return _dumps(event)


def encode_batch(events: Sequence[Mapping[str, Any]]) -> bytes:
    """Events as a batch-mode body (:data:`CONTENT_TYPE_BATCH`): a compact UTF-8 JSON array."""
    if not events:
        raise InvalidEvent("a batch needs at least one event")
    return _dumps(list(events))


def _dumps(value: Any) -> bytes:
    # Compact UTF-8; raw patches are copied in as they are. msgspec writes NaN
    # and infinities as null (they are not JSON); a document never holds them.
    return _ENCODER.encode(value)


_ENCODER = msgspec.json.Encoder()


def batch_id(events: Sequence[Mapping[str, Any]]) -> str:
    """The ``webhook-id`` of a batch: a digest of its event ids, in order.

    Resending the same batch gives the same id; a batch made up differently
    gets another. Receivers dedupe by event id, never by this one.
    """
    if not events:
        raise InvalidEvent("a batch needs at least one event")
    digest = hashlib.sha256("\n".join(str(e["id"]) for e in events).encode("utf-8"))
    return f"batch-{digest.hexdigest()[:32]}"


def validate_data(event: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidEvent` unless the event's ``data`` matches its type's schema."""
    kind = event.get("type")
    if kind not in _KINDS:
        raise InvalidEvent(
            f"event {event.get('id')!r}: unknown type {kind!r}; "
            f"expected {EVENT_CHANGED} or {EVENT_SNAPSHOT}",
            event,
        )
    if "data" not in event:
        raise InvalidEvent(f"{kind} event {event.get('id')!r} has no data", event)
    error = best_match(_validator(kind).iter_errors(event["data"]))
    if error is not None:
        message = error.message
        if len(message) > _MAX_REASON:
            message = message[:_MAX_REASON] + "..."
        where = error.json_path.replace("$", "data", 1)
        raise InvalidEvent(
            f"{kind} event {event.get('id')!r}: {where}: {message} (schema {_KINDS[kind][1]})",
            event,
        )


def validate_event(event: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidEvent` unless ``event`` is one of ours, consistent and well formed.

    Beyond :func:`validate_data`: ``subject``, ``sequence`` and ``pipelineid``
    must agree with the data, so routing on attributes and reading the data
    give the same answer.
    """
    validate_data(event)
    data = event["data"]
    name = f"{event['type']} event {event.get('id')!r}"
    if event.get("specversion") != SPEC_VERSION:
        raise InvalidEvent(f"{name}: specversion {event.get('specversion')!r} is not 1.0", event)
    if event.get("subject") != data["build_id"]:
        raise InvalidEvent(
            f"{name}: subject {event.get('subject')!r} is not data.build_id {data['build_id']!r}",
            event,
        )
    sequence = event.get("sequence")
    digits = isinstance(sequence, str) and sequence.isascii() and sequence.isdigit()
    if not digits or int(str(sequence)) != data["sequence"]:
        raise InvalidEvent(
            f"{name}: sequence attribute {sequence!r} is not data.sequence {data['sequence']} "
            "as a string of digits",
            event,
        )
    if event.get("pipelineid") != data["pipeline_id"]:
        raise InvalidEvent(
            f"{name}: pipelineid {event.get('pipelineid')!r} is not data.pipeline_id "
            f"{data['pipeline_id']!r}",
            event,
        )


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the ``data`` of events of type ``kind``."""
    return dict(_validator(kind).schema)


@cache
def _validator(kind: str) -> Any:
    name = _KINDS[kind][2]
    text = resources.files("airflow_bkci.channels").joinpath("schemas", name).read_text("utf-8")
    return Draft202012Validator(json.loads(text))
