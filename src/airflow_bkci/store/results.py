"""What the store hands back: the outcome of an apply and history entries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from airflow_bkci.model.event import StatusEvent
from airflow_bkci.model.fsm import Decision
from airflow_bkci.model.status import BuildStatus


@dataclass(slots=True)
class ApplyResult:
    """Outcome of one :meth:`Store.apply` call (one transaction)."""

    counts: Counter[Decision] = field(default_factory=Counter)
    build_ids: set[str] = field(default_factory=set)
    rejected: list[tuple[StatusEvent, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when some node's status changed (not only history or context)."""
        return any(
            self.counts[d]
            for d in (
                Decision.CREATE,
                Decision.ADVANCE,
                Decision.OVERRIDE,
                Decision.REOPEN,
                Decision.REMOVE,
            )
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """One status a node entered, as kept in history.

    ``from_status`` is the status before this one in event order (None for
    the first), so it does not depend on the order events arrived in.
    ``decision`` and ``stale`` record what the store made of the event when
    it arrived: a late event is stale even though it fits the timeline.
    """

    build_id: str
    node_id: str
    from_status: BuildStatus | None
    to_status: BuildStatus
    airflow_state: str | None
    detail: str | None
    clear_number: int
    try_number: int
    rank: int
    at: datetime
    recorded_at: datetime
    source: str
    seq: int
    decision: Decision
    stale: bool
