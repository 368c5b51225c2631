"""Status events: one observed fact about one node of one build."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_bkci.model.status import STATUS_RANK, BuildStatus, Rank

AUTHORITATIVE_SOURCE = "db@"
"""Prefix of the sources that read Airflow's database: their times are the truth."""

BUILD_NODE = ""
"""The node id of the build itself; task nodes use :meth:`NodeRef.node_id`."""


def build_id_for(dag_id: str, run_id: str) -> str:
    """A stable, URL-safe build id for a DAG run (run ids hold ``:`` and ``+``)."""
    digest = hashlib.sha1(f"{dag_id}\x00{run_id}".encode(), usedforsecurity=False)
    return "b-" + digest.hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class NodeRef:
    """Which node an event is about: a build (``task_id is None``) or a task."""

    dag_id: str
    run_id: str
    task_id: str | None = None
    map_index: int = -1

    @property
    def build_id(self) -> str:
        return build_id_for(self.dag_id, self.run_id)

    @property
    def node_id(self) -> str:
        if self.task_id is None:
            return BUILD_NODE
        if self.map_index < 0:
            return self.task_id
        return f"{self.task_id}[{self.map_index}]"

    @property
    def is_build(self) -> bool:
        return self.task_id is None


@dataclass(frozen=True, slots=True, order=True)
class EventKey:
    """Total order of events on one node.

    Clears of the run come first, then tries, then the rank of the status
    inside the try. Only events of the same rank in the same try compare by
    time; each source keeps its ``at`` non-decreasing and its ``seq`` strictly
    increasing, so inside one source this is the order of its counter, and
    clock skew between hosts can only reorder two events of equal rank.
    """

    clear_number: int
    try_number: int
    rank: int
    at: float
    source: str
    seq: int

    @property
    def attempt(self) -> tuple[int, int]:
        return (self.clear_number, self.try_number)

    def as_list(self) -> list[Any]:
        return [self.clear_number, self.try_number, self.rank, self.at, self.source, self.seq]

    @classmethod
    def from_list(cls, raw: list[Any]) -> EventKey:
        c, t, r, a, s, q = raw
        return cls(int(c), int(t), int(r), float(a), str(s), int(q))


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One observation of a node, from one source.

    ``status`` is None for a pure enrichment record (context, no state).
    ``removed`` marks a task that left the DAG: it leaves the tree.
    ``fields`` holds context: per-try values (host, times, error) and static
    ones (operator, stage); see :data:`STATIC_FIELDS`.
    """

    node: NodeRef
    status: BuildStatus | None
    clear_number: int
    try_number: int
    source: str
    seq: int
    at: datetime
    airflow_state: str | None = None
    detail: str | None = None
    rank: Rank | None = None
    removed: bool = False
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError(f"event time {self.at!r} has no time zone; pass an aware datetime")
        if self.try_number < 0 or self.clear_number < 0:
            raise ValueError("try_number and clear_number must be >= 0")

    @property
    def effective_rank(self) -> int:
        if self.rank is not None:
            return int(self.rank)
        if self.removed:
            return int(Rank.FINISHED)
        if self.status is None:
            return int(Rank.PENDING)
        return int(STATUS_RANK[self.status])

    @property
    def key(self) -> EventKey:
        # Airflow 3 gives every clear of a task a new try, so try_number alone
        # orders a task's attempts; the run's clear_number only orders the
        # build node. Sources that saw different clear counts for the same
        # try (a worker, then the scheduler after another task was cleared)
        # must still agree on the key, so tasks leave it out.
        return EventKey(
            self.clear_number if self.node.is_build else 0,
            self.try_number,
            self.effective_rank,
            self.at.timestamp(),
            self.source,
            self.seq,
        )


STATIC_FIELDS = frozenset(
    {
        "operator",
        "stage",
        "stage_name",
        "stage_order",
        "order",
        "label",
        "is_setup",
        "is_teardown",
        "run_type",
        "trigger_type",
        "triggering_user",
        "logical_date",
        "run_after",
        "executor",
        "note",
        "max_tries",
    }
)
"""Fields that survive a new try; every other field belongs to one try."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
