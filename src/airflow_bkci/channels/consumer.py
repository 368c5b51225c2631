"""A reference consumer: parse webhook bodies and mirror build documents from the events.

The protocol it follows is the one ``docs/wire-format.md`` asks of every
consumer: drop events whose id was seen, apply change sets of a build in
sequence order, hold back a change set that arrives after a gap (and report
the gap so the caller can resync), and let a snapshot replace the build.
"""

from __future__ import annotations

import copy
import enum
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import jsonpointer
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_structured
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import REQUIRED_ATTRIBUTES, CloudEvent

from airflow_bkci.channels.envelope import (
    CONTENT_TYPE,
    CONTENT_TYPE_BATCH,
    EVENT_CHANGED,
    EVENT_SNAPSHOT,
    validate_event,
)
from airflow_bkci.exceptions import InvalidEvent

log = logging.getLogger(__name__)

_FORMAT = JSONFormat()


def media_type(content_type: str | None) -> str:
    """The bare media type of a ``Content-Type`` value, lower case, parameters dropped."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_body(body: bytes, content_type: str | None) -> list[dict[str, Any]]:
    """The events in a structured-mode body, each checked by the CloudEvents SDK.

    ``content_type`` picks single (:data:`CONTENT_TYPE`) or batch
    (:data:`CONTENT_TYPE_BATCH`) mode. The SDK has no batch reader, so a
    batch is split here and each element goes through the SDK's structured
    reader like a single event. Returns the events as sent (plain dicts).
    """
    kind = media_type(content_type)
    if kind not in (CONTENT_TYPE, CONTENT_TYPE_BATCH):
        raise InvalidEvent(
            f"unsupported content type {content_type!r}; "
            f"expected {CONTENT_TYPE} or {CONTENT_TYPE_BATCH}"
        )
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidEvent(f"body is not UTF-8 JSON: {exc}") from None
    if kind == CONTENT_TYPE:
        _sdk_read(parsed, body, where="event")
        return [parsed]
    if not isinstance(parsed, list):
        raise InvalidEvent(f"a {CONTENT_TYPE_BATCH} body must be a JSON array")
    for index, element in enumerate(parsed):
        _sdk_read(element, None, where=f"batch[{index}]")
    return parsed


def _sdk_read(element: Any, body: bytes | None, *, where: str) -> BaseCloudEvent:
    if not isinstance(element, dict):
        raise InvalidEvent(f"{where} is not a JSON object")
    raw = body if body is not None else json.dumps(element).encode("utf-8")
    try:
        return from_structured(HTTPMessage({"content-type": CONTENT_TYPE}, raw), _FORMAT, _strict)
    except (BaseCloudEventException, InvalidEvent, TypeError, ValueError) as exc:
        raise InvalidEvent(f"{where} is not a CloudEvent 1.0: {exc}", element) from None


def _strict(attributes: dict[str, Any], data: dict[str, Any] | str | bytes | None) -> CloudEvent:
    # The SDK makes up an id and a time when they are missing; a made-up id
    # would defeat deduplication, so a missing required attribute is an error.
    missing = [name for name in REQUIRED_ATTRIBUTES if name not in attributes]
    if missing:
        raise InvalidEvent(f"missing required attribute(s) {', '.join(missing)}")
    return CloudEvent(attributes, data)


class Result(str, enum.Enum):
    """What :meth:`BuildMirror.receive` did with an event."""

    APPLIED = "applied"  # a change set (and any held ones it unblocked) applied
    RESET = "reset"  # a snapshot replaced the build's document
    DUPLICATE = "duplicate"  # the event id was seen before
    STALE = "stale"  # the mirror is already at or past the event's sequence
    GAP = "gap"  # change sets are missing before this one; it is held back
    IGNORED = "ignored"  # an event type this consumer does not know


@dataclass(frozen=True)
class Outcome:
    """The result of one event, and where its build stands afterwards."""

    result: Result
    build_id: str
    sequence: int  # the build's sequence in the mirror after this event
    event_sequence: int  # the sequence the event carried (0 for IGNORED)
    applied: tuple[int, ...] = ()  # change sets applied by this call, in order

    @property
    def changed(self) -> bool:
        """True when the build's document changed."""
        return self.result in (Result.APPLIED, Result.RESET)


@dataclass(frozen=True)
class Gap:
    """Change sets ``have + 1`` to ``got - 1`` of a build are missing."""

    build_id: str
    have: int
    got: int


@dataclass
class _Build:
    document: dict[str, Any] = field(default_factory=dict)
    sequence: int = 0
    seen: set[str] = field(default_factory=set)
    pending: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


class BuildMirror:
    """Per build: the document, the last applied sequence and the event ids seen.

    A build not heard of yet stands at sequence 0 with an empty document,
    which is where the store starts it too, so change set 1 applies to ``{}``.
    Not thread-safe: serialize calls.
    """

    def __init__(self, *, validate: bool = True) -> None:
        """``validate=False`` skips the schema check of each event (trusted input only)."""
        self._validate = validate
        self._builds: dict[str, _Build] = {}

    @property
    def documents(self) -> dict[str, dict[str, Any]]:
        """Build id to its current document (the mirror's own objects: do not mutate)."""
        return {build_id: b.document for build_id, b in self._builds.items()}

    def document(self, build_id: str) -> dict[str, Any] | None:
        build = self._builds.get(build_id)
        return build.document if build is not None else None

    def sequence(self, build_id: str) -> int:
        """The last change set applied to ``build_id`` (0 when none)."""
        build = self._builds.get(build_id)
        return build.sequence if build is not None else 0

    def gaps(self) -> list[Gap]:
        """Builds holding change sets back because earlier ones are missing."""
        return [
            Gap(build_id, b.sequence, min(b.pending))
            for build_id, b in sorted(self._builds.items())
            if b.pending
        ]

    def receive_all(self, events: Iterable[Mapping[str, Any]]) -> list[Outcome]:
        """:meth:`receive` each event in order (a batch is applied in array order)."""
        return [self.receive(event) for event in events]

    def receive(self, event: Mapping[str, Any]) -> Outcome:
        """Apply one parsed event; :class:`InvalidEvent` if it is malformed or does not apply."""
        if event.get("type") not in (EVENT_CHANGED, EVENT_SNAPSHOT):
            # Newer senders may add event types; skipping them keeps old consumers working.
            log.debug("ignoring event %r of type %r", event.get("id"), event.get("type"))
            return Outcome(Result.IGNORED, str(event.get("subject", "")), 0, 0)
        if self._validate:
            validate_event(event)
        data = event["data"]
        build_id, sequence = data["build_id"], data["sequence"]
        build = self._builds.setdefault(build_id, _Build())
        if event["id"] in build.seen:
            return Outcome(Result.DUPLICATE, build_id, build.sequence, sequence)
        if event["type"] == EVENT_SNAPSHOT:
            outcome = self._snapshot(build_id, build, data["document"], sequence)
        else:
            outcome = self._change(build_id, build, data["patch"], sequence)
        build.seen.add(event["id"])
        return outcome

    def reset(self, build_id: str, document: Mapping[str, Any], sequence: int) -> Outcome:
        """Resync ``build_id`` from a snapshot fetched out of band (``GET …/builds/<id>``)."""
        build = self._builds.setdefault(build_id, _Build())
        return self._snapshot(build_id, build, document, sequence)

    def _snapshot(
        self, build_id: str, build: _Build, document: Mapping[str, Any], sequence: int
    ) -> Outcome:
        if sequence < build.sequence:
            return Outcome(Result.STALE, build_id, build.sequence, sequence)
        # Our copy: the caller's event may be reused or changed after this call.
        build.document = copy.deepcopy(dict(document))
        build.sequence = sequence
        for held in [n for n in build.pending if n <= sequence]:
            del build.pending[held]
        applied = self._drain(build_id, build)
        return Outcome(Result.RESET, build_id, build.sequence, sequence, applied)

    def _change(
        self, build_id: str, build: _Build, patch: list[dict[str, Any]], sequence: int
    ) -> Outcome:
        if sequence <= build.sequence:
            return Outcome(Result.STALE, build_id, build.sequence, sequence)
        if sequence > build.sequence + 1:
            build.pending[sequence] = patch
            return Outcome(Result.GAP, build_id, build.sequence, sequence)
        build.document = _apply(build_id, build.document, patch, sequence)
        build.sequence = sequence
        applied = (sequence, *self._drain(build_id, build))
        return Outcome(Result.APPLIED, build_id, build.sequence, sequence, applied)

    def _drain(self, build_id: str, build: _Build) -> tuple[int, ...]:
        """Apply held change sets that now follow on; stop at the next hole."""
        applied: list[int] = []
        while build.sequence + 1 in build.pending:
            sequence = build.sequence + 1
            patch = build.pending.pop(sequence)
            try:
                build.document = _apply(build_id, build.document, patch, sequence)
            except InvalidEvent as exc:
                # Dropping it leaves a gap that gaps() reports, so the caller resyncs.
                log.warning("dropping held change set %s:%d: %s", build_id, sequence, exc.reason)
                break
            build.sequence = sequence
            applied.append(sequence)
        return tuple(applied)


def _apply(
    build_id: str, document: dict[str, Any], patch: list[dict[str, Any]], sequence: int
) -> dict[str, Any]:
    """``patch`` applied to a copy of ``document``; the original is untouched on failure."""
    try:
        result = jsonpatch.JsonPatch(patch).apply(document, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise InvalidEvent(
            f"change set {build_id}:{sequence} does not apply to the document at "
            f"{sequence - 1}: {exc}; resync the build from a snapshot",
            patch,
        ) from None
    if not isinstance(result, dict):
        raise InvalidEvent(f"change set {build_id}:{sequence} makes the document a non-object")
    return result
