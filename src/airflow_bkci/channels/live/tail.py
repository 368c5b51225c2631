"""The store reads behind the live channel: build heads, change sets, snapshots.

The tailer follows builds by their per-build ``sequence``, never by a global
row id: ids are handed out when a transaction inserts and become visible when
it commits, so a reader that remembers "the highest id I saw" skips a
transaction that committed after a later one. A build's sequence only grows
and is written with its change set in one transaction, so comparing what a
build's row says with what a worker last saw never misses a change; the
``updated_at`` window only narrows which rows are compared.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, select

from airflow_bkci.model.status import BuildStatus
from airflow_bkci.store.store import Store
from airflow_bkci.store.tables import BuildRow, ChangeRow, PipelineRow

__all__ = ["ChangeSet", "Head", "StoreTail"]

B, C, P = BuildRow, ChangeRow, PipelineRow
_FINISHED = [s.value for s in BuildStatus if s.is_finished and s is not BuildStatus.RETRY]
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Head:
    """Where a build is: its pipeline and the sequence of its last change set."""

    build_id: str
    pipeline_id: str
    sequence: int


@dataclass(frozen=True, slots=True)
class ChangeSet:
    build_id: str
    sequence: int
    patch_json: str
    created_at: datetime


class StoreTail:
    """Reads for the live channel; blocking, so callers run them in a worker thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def changed_since(
        self,
        since: datetime,
        pipelines: Collection[str] | None = None,
        builds: Collection[str] | None = None,
    ) -> list[Head]:
        """Heads of builds updated at or after ``since``, of these pipelines or builds.

        ``None`` for both means every build; an empty collection matches nothing.
        """
        stmt = select(B.build_id, B.dag_id, B.sequence).where(B.updated_at >= since)
        if pipelines is not None or builds is not None:
            scope = []
            if pipelines:
                scope.append(B.dag_id.in_(sorted(pipelines)))
            if builds:
                scope.append(B.build_id.in_(sorted(builds)))
            if not scope:
                return []
            stmt = stmt.where(scope[0] if len(scope) == 1 else scope[0] | scope[1])
        with self.store._read() as conn:
            return [Head(r.build_id, r.dag_id, int(r.sequence)) for r in conn.execute(stmt)]

    def heads(self, build_ids: Collection[str]) -> dict[str, Head]:
        """The current heads of these builds; unknown ids are left out."""
        wanted = sorted(set(build_ids))
        out: dict[str, Head] = {}
        with self.store._read() as conn:
            for start in range(0, len(wanted), _CHUNK):
                stmt = select(B.build_id, B.dag_id, B.sequence).where(
                    B.build_id.in_(wanted[start : start + _CHUNK])
                )
                out.update(
                    {
                        r.build_id: Head(r.build_id, r.dag_id, int(r.sequence))
                        for r in conn.execute(stmt)
                    }
                )
        return out

    def active(self, pipelines: Collection[str]) -> list[Head]:
        """Builds of these pipelines that have not finished: what a new subscriber is shown."""
        if not pipelines:
            return []
        stmt = select(B.build_id, B.dag_id, B.sequence).where(
            B.dag_id.in_(sorted(pipelines)), B.status.not_in(_FINISHED), B.sequence > 0
        )
        with self.store._read() as conn:
            return [Head(r.build_id, r.dag_id, int(r.sequence)) for r in conn.execute(stmt)]

    def known_pipelines(self, pipelines: Collection[str]) -> set[str]:
        if not pipelines:
            return set()
        stmt = select(P.dag_id).where(P.dag_id.in_(sorted(pipelines)))
        with self.store._read() as conn:
            return set(conn.execute(stmt).scalars())

    def changes(self, after: Mapping[str, int], upto: Mapping[str, int]) -> list[ChangeSet]:
        """Change sets of each build with ``after[b] < sequence <= upto[b]``, in order per build.

        The patch comes as its stored JSON text: it is sent as it is.
        """
        ranges = [(b, a, upto[b]) for b, a in after.items() if upto.get(b, a) > a]
        out: list[ChangeSet] = []
        with self.store._read() as conn:
            for start in range(0, len(ranges), _CHUNK):
                part = ranges[start : start + _CHUNK]
                low = min(a for _, a, _ in part)
                stmt = (
                    select(
                        C.build_id,
                        C.sequence,
                        cast(C.patch, Text).label("patch_json"),
                        C.created_at,
                    )
                    .where(C.build_id.in_([b for b, _, _ in part]), C.sequence > low)
                    .order_by(C.build_id, C.sequence)
                )
                bounds = {b: (a, u) for b, a, u in part}
                for r in conn.execute(stmt):
                    a, u = bounds[r.build_id]
                    if a < r.sequence <= u:
                        out.append(
                            ChangeSet(r.build_id, int(r.sequence), r.patch_json, r.created_at)
                        )
        return out

    def snapshot(self, build_id: str) -> dict[str, Any] | None:
        return self.store.snapshot(build_id)
