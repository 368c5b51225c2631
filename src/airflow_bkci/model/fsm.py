"""The one state machine: how a node's state changes when an event arrives.

A node's state is a fold over its events with :class:`EventKey` as the order:
the event with the highest key decides the status, each context field keeps
the value of the highest-keyed event that carried it. Such a fold gives the
same result in any arrival order and ignores duplicates, which is what events
that arrive late, twice and from several hosts need.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_bkci.exceptions import InvalidTransition
from airflow_bkci.model.event import STATIC_FIELDS, EventKey, StatusEvent
from airflow_bkci.model.status import BuildStatus

S = BuildStatus

_TERMINAL = frozenset(s for s in BuildStatus if s.is_finished)

ALLOWED: dict[BuildStatus, frozenset[BuildStatus]] = {
    S.QUEUE: frozenset({S.QUEUE, S.PREPARE_ENV, S.RUNNING, S.REVIEWING} | _TERMINAL),
    S.PREPARE_ENV: frozenset({S.PREPARE_ENV, S.RUNNING, S.REVIEWING} | _TERMINAL),
    S.RUNNING: frozenset({S.RUNNING, S.REVIEWING} | _TERMINAL),
    S.REVIEWING: frozenset({S.RUNNING, S.REVIEWING} | _TERMINAL),
    # A finished try changes only by a manual override (mark success/failed).
    **{s: _TERMINAL for s in _TERMINAL},
}
"""Transitions inside one try (same clear_number and try_number).

A new try or a clear of the run reopens the node: any status may follow.
"""


class Decision(str, enum.Enum):
    """What applying one event did."""

    CREATE = "create"  # first event of the node
    ADVANCE = "advance"  # a later status (or sub-state) in the same try
    OVERRIDE = "override"  # a finished try re-marked (mark success / failed)
    REOPEN = "reopen"  # a new try or a clear of the run
    REMOVE = "remove"  # the task left the DAG
    ENRICH = "enrich"  # context only, status unchanged
    STALE = "stale"  # older than what we have: history only
    DUPLICATE = "duplicate"  # nothing new


NO_STATUS_KEY = EventKey(0, 0, -1, 0.0, "", 0)
"""Key of a node known only from enrichment records; every real key is higher."""


@dataclass(frozen=True, slots=True)
class NodeState:
    """Current state of one node (build or task), as plain data."""

    status: BuildStatus
    key: EventKey
    airflow_state: str | None = None
    detail: str | None = None
    removed: bool = False
    fields: dict[str, tuple[Any, EventKey]] = field(default_factory=dict)

    @property
    def has_status(self) -> bool:
        """False while only enrichment records (context, no status) have arrived."""
        return self.key.rank >= 0

    def values(self) -> dict[str, Any]:
        """Context of the current try (and static fields); later tries' fields wait."""
        attempt = self.key.attempt
        return {
            name: value
            for name, (value, key) in self.fields.items()
            if name in STATIC_FIELDS or key.attempt <= attempt or not self.has_status
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "key": self.key.as_list(),
            "airflow_state": self.airflow_state,
            "detail": self.detail,
            "removed": self.removed,
            "fields": {n: [v, k.as_list()] for n, (v, k) in self.fields.items()},
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> NodeState:
        return cls(
            status=BuildStatus(raw["status"]),
            key=EventKey.from_list(raw["key"]),
            airflow_state=raw.get("airflow_state"),
            detail=raw.get("detail"),
            removed=bool(raw.get("removed", False)),
            fields={n: (v, EventKey.from_list(k)) for n, (v, k) in raw["fields"].items()},
        )


def decide(current: NodeState | None, event: StatusEvent) -> Decision:
    """Classify ``event`` against ``current`` without changing anything."""
    if event.status is None and not event.removed:
        return Decision.ENRICH
    key = event.key
    if current is None or not current.has_status:
        return Decision.REMOVE if event.removed else Decision.CREATE
    if key == current.key:
        return Decision.DUPLICATE
    if key < current.key:
        return Decision.STALE
    if event.removed:
        return Decision.REMOVE
    assert event.status is not None
    if key.attempt > current.key.attempt or current.removed:
        return Decision.REOPEN
    if event.status not in ALLOWED[current.status]:
        raise InvalidTransition(
            event.node.node_id or event.node.build_id,
            current.status.value,
            event.status.value,
            "a finished try can only be re-marked as finished; a new try must raise try_number",
        )
    if current.status.is_finished:
        return Decision.OVERRIDE
    return Decision.ADVANCE


def _merge_fields(
    fields: dict[str, tuple[Any, EventKey]], event: StatusEvent, attempt: tuple[int, int]
) -> dict[str, tuple[Any, EventKey]]:
    key = event.key
    merged = dict(fields)
    values = {**event.fields, "clear_number": event.clear_number}
    for name, value in values.items():
        if name not in STATIC_FIELDS and key.attempt < attempt:
            continue  # a field of an earlier try says nothing about this one
        old = merged.get(name)
        if old is None or key > old[1]:
            merged[name] = (value, key)
    return merged


def _drop_old_try_fields(
    fields: dict[str, tuple[Any, EventKey]], attempt: tuple[int, int]
) -> dict[str, tuple[Any, EventKey]]:
    # fields of a later try (enrichment that overtook the try's first status)
    # stay, hidden by NodeState.values() until that try opens
    return {n: fk for n, fk in fields.items() if n in STATIC_FIELDS or fk[1].attempt >= attempt}


def apply(current: NodeState | None, event: StatusEvent) -> tuple[NodeState | None, Decision]:
    """Return the node's state after ``event`` and what the event did."""
    decision = decide(current, event)
    if decision is Decision.DUPLICATE:
        return current, decision
    if current is None:
        # Context before any status (it overtook the first status event) is
        # kept on a node without status, so no arrival order loses it.
        current = NodeState(BuildStatus.QUEUE, NO_STATUS_KEY, detail="pending")
    if decision in (Decision.STALE, Decision.ENRICH):
        fields = _merge_fields(current.fields, event, current.key.attempt)
        return replace(current, fields=fields), decision
    key = event.key
    fields = current.fields
    if key.attempt != current.key.attempt:
        fields = _drop_old_try_fields(fields, key.attempt)
    state = NodeState(
        # a removal keeps no status of its own: whatever came before it
        # depends on arrival order (removed tasks leave the tree anyway)
        status=event.status or BuildStatus.UNEXEC,
        key=key,
        airflow_state=event.airflow_state,
        detail=event.detail,
        removed=event.removed,
        fields=_merge_fields(fields, event, key.attempt),
    )
    return state, decision
