"""The outbox: per (endpoint, build) lanes over the stored change sets.

A lane's pending change sets are its build's change sets after the lane's
``acked_seq``; nothing is copied per endpoint. A dispatcher claims lanes
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the write lock on SQLite) and holds
each with a lease while it sends, so two dispatchers never send one build's
change sets to one endpoint at the same time or out of order. Every update
after a send is fenced by the lease owner: a dispatcher that lost its lease
(it was slower than the lease) changes nothing, and ``acked_seq`` only grows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import aliased

from airflow_bkci.model.event import utcnow
from airflow_bkci.store.store import Store
from airflow_bkci.store.tables import BuildRow, ChangeRow, DeadLetterRow, EndpointRow, LaneRow

__all__ = ["Lane", "Outbox"]

B, C, D, E, L = BuildRow, ChangeRow, DeadLetterRow, EndpointRow, LaneRow
EPOCH = datetime(1970, 1, 1, tzinfo=utcnow().tzinfo)


@dataclass(frozen=True)
class Lane:
    """A claimed lane: where the endpoint is in one build, and where the build is."""

    endpoint: str
    build_id: str
    dag_id: str
    acked_seq: int
    head_seq: int
    needs_snapshot: bool
    attempts: int

    @property
    def backlog(self) -> int:
        return max(0, self.head_seq - self.acked_seq)


def _insert(conn: Connection, table: type[Any]) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def _circuit(row: Any, now: datetime) -> dict[str, Any]:
    """The circuit as last recorded; an open one whose time is up is half-open by now.

    A dispatcher only writes its circuit when it changes, so the move from open
    to half-open, which is the clock passing ``open_until``, is read from here.
    """
    if row is None or row.circuit_changed_at is None:
        return {
            "state": "closed",
            "failures": 0,
            "open_until": None,
            "owner": None,
            "changed_at": None,
        }
    state = row.circuit_state
    if state == "open" and (row.circuit_open_until is None or row.circuit_open_until <= now):
        state = "half_open"
    return {
        "state": state,
        "failures": int(row.circuit_failures),
        "open_until": _iso(row.circuit_open_until),
        "owner": row.circuit_owner,
        "changed_at": _iso(row.circuit_changed_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class Outbox:
    """Lane bookkeeping for one dispatcher (``owner``) on one store."""

    def __init__(self, store: Store, owner: str, *, lease: float = 120.0) -> None:
        self.store = store
        self.owner = owner
        self.lease = timedelta(seconds=lease)

    # -- lanes ----------------------------------------------------------------

    def open_lanes(
        self, endpoint: str, accepts: Callable[[str], bool], since: datetime | None = None
    ) -> int:
        """Give the endpoint a lane for every build with change sets (changed since ``since``)."""
        stmt = select(B.build_id, B.dag_id).where(
            B.sequence > 0,
            ~select(L.build_id).where(L.endpoint == endpoint, L.build_id == B.build_id).exists(),
        )
        if since is not None:
            stmt = stmt.where(B.updated_at >= since)
        # Read first: most passes find nothing new, and on SQLite a write
        # transaction would take the store's one write lock every pass.
        with self.store._read() as conn:
            found = [r for r in conn.execute(stmt) if accepts(r.dag_id)]
        if not found:
            return 0
        now = utcnow()
        rows = [
            {
                "endpoint": endpoint,
                "build_id": r.build_id,
                "dag_id": r.dag_id,
                "acked_seq": 0,
                "needs_snapshot": False,
                "attempts": 0,
                "next_attempt_at": now,
                "updated_at": now,
            }
            # In build order: two dispatchers opening the same lanes at once then
            # lock them in the same order (PostgreSQL would see a deadlock otherwise).
            for r in sorted(found, key=lambda r: r.build_id)
        ]
        with self.store._write() as conn:  # a lane another dispatcher opened meanwhile stays
            conn.execute(_insert(conn, L).on_conflict_do_nothing(), rows)
        return len(rows)

    def claim(self, endpoint: str, limit: int) -> list[Lane]:
        """Lease up to ``limit`` lanes with something to send and no backoff running."""
        now = utcnow()
        # Look before leasing: most passes find nothing, and on SQLite the lease
        # would take the store's one write lock every pass.
        with self.store._read() as conn:
            if conn.execute(self._due(endpoint, now).limit(1)).first() is None:
                return []
        with self.store._write() as conn:
            stmt = (
                select(
                    L.endpoint,
                    L.build_id,
                    L.dag_id,
                    L.acked_seq,
                    B.sequence,
                    L.needs_snapshot,
                    L.attempts,
                )
                .join(B, B.build_id == L.build_id)
                .where(
                    L.endpoint == endpoint,
                    or_(B.sequence > L.acked_seq, L.needs_snapshot),
                    L.next_attempt_at <= now,
                    or_(L.lease_until.is_(None), L.lease_until < now),
                )
                .order_by(L.next_attempt_at, L.build_id)
                .limit(limit)
            )
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update(of=L, skip_locked=True)
            lanes = [Lane(*row) for row in conn.execute(stmt)]
            if lanes:
                conn.execute(
                    update(L)
                    .where(L.endpoint == endpoint, L.build_id.in_([x.build_id for x in lanes]))
                    .values(lease_owner=self.owner, lease_until=now + self.lease)
                )
        return lanes

    @staticmethod
    def _due(endpoint: str, now: datetime) -> Any:
        return (
            select(L.build_id)
            .join(B, B.build_id == L.build_id)
            .where(
                L.endpoint == endpoint,
                or_(B.sequence > L.acked_seq, L.needs_snapshot),
                L.next_attempt_at <= now,
                or_(L.lease_until.is_(None), L.lease_until < now),
            )
        )

    def pending(self, lanes: Sequence[Lane], limit: int) -> dict[str, list[dict[str, Any]]]:
        """Each lane's next change sets (at most ``limit``), in sequence order, in one query.

        ``lanes`` are lanes of one endpoint that this dispatcher claimed.

        ``patch_json`` is the stored JSON text: the dispatcher sends it as it
        is, so no change set is decoded and encoded again on its way out.
        """
        if not lanes:
            return {}
        # One statement whatever the lanes (so it is compiled once and cached):
        # the lanes' own rows bound the range, and only lanes we hold count.
        stmt = (
            select(C.build_id, C.sequence, cast(C.patch, Text).label("patch_json"), C.created_at)
            .join(L, and_(L.build_id == C.build_id, L.endpoint == bindparam("endpoint")))
            .where(
                L.lease_owner == bindparam("owner"),
                C.build_id.in_(bindparam("build_ids", expanding=True)),
                C.sequence > L.acked_seq,
                C.sequence <= L.acked_seq + bindparam("limit"),
            )
            .order_by(C.build_id, C.sequence)
        )
        params = {
            "endpoint": lanes[0].endpoint,
            "owner": self.owner,
            "build_ids": [lane.build_id for lane in lanes],
            "limit": limit,
        }
        out: dict[str, list[dict[str, Any]]] = {lane.build_id: [] for lane in lanes}
        with self.store._read() as conn:
            for row in conn.execute(stmt, params):
                out[row.build_id].append(
                    {
                        "sequence": int(row.sequence),
                        "patch_json": row.patch_json,
                        "created_at": row.created_at,
                    }
                )
        return out

    def delivered(self, acks: Sequence[tuple[Lane, int]]) -> None:
        """The endpoint has everything up to the given sequence of each lane."""
        now = utcnow()
        with self.store._write() as conn:
            greatest = func.max if conn.dialect.name == "sqlite" else func.greatest
            self._update_mine(
                conn,
                [
                    (lane, {"b_seq": sequence, "b_snap": lane.needs_snapshot})
                    for lane, sequence in acks
                ],
                acked_seq=greatest(L.acked_seq, bindparam("b_seq")),
                # Only the request this claim answered: one made while we sent stays.
                needs_snapshot=case(
                    (bindparam("b_snap", type_=Boolean), false()), else_=L.needs_snapshot
                ),
                attempts=0,
                next_attempt_at=now,
                lease_owner=None,
                lease_until=None,
                last_error=None,
                updated_at=now,
            )

    def failed(self, lanes: Sequence[Lane], error: str, delay: Callable[[Lane], float]) -> None:
        """The send failed: count the attempt, back off, give the lane back."""
        now = utcnow()
        with self.store._write() as conn:
            self._update_mine(
                conn,
                [
                    (
                        lane,
                        {
                            "b_attempts": lane.attempts + 1,
                            "b_next": now + timedelta(seconds=max(0.0, delay(lane))),
                        },
                    )
                    for lane in lanes
                ],
                attempts=bindparam("b_attempts"),
                next_attempt_at=bindparam("b_next", type_=L.next_attempt_at.type),
                lease_owner=None,
                lease_until=None,
                last_error=error[:2000],
                updated_at=now,
            )

    def release(self, lanes: Sequence[Lane]) -> None:
        """Give lanes back untouched (not sent in this pass)."""
        now = utcnow()
        with self.store._write() as conn:
            self._update_mine(
                conn,
                [(lane, {}) for lane in lanes],
                lease_owner=None,
                lease_until=None,
                updated_at=now,
            )

    def _update_mine(
        self, conn: Connection, lanes: list[tuple[Lane, dict[str, Any]]], **values: Any
    ) -> None:
        """One executemany UPDATE of the given lanes, only where this dispatcher holds them."""
        if not lanes:
            return
        stmt = (
            update(L)
            .where(
                L.endpoint == bindparam("b_endpoint"),
                L.build_id == bindparam("b_build_id"),
                L.lease_owner == self.owner,
            )
            .values(**values)
        )
        conn.execute(
            stmt,
            [
                {"b_endpoint": lane.endpoint, "b_build_id": lane.build_id, **params}
                for lane, params in lanes
            ],
        )

    def dead_letter(
        self,
        lane: Lane,
        events: Sequence[dict[str, Any]],
        last_seq: int,
        reason: str,
        *,
        snapshot_next: bool = True,
    ) -> None:
        """Set the lane's events aside; the lane moves past them (to a snapshot, by default).

        A refused snapshot asks for no other snapshot: the next change set
        shows the consumer its gap, and it can ask for one.
        """
        now = utcnow()
        with self.store._write() as conn:
            conn.execute(
                _insert(conn, D).values(
                    endpoint=lane.endpoint,
                    build_id=lane.build_id,
                    dag_id=lane.dag_id,
                    first_seq=lane.acked_seq + 1,
                    last_seq=last_seq,
                    reason=reason[:2000],
                    events=list(events),
                    created_at=now,
                )
            )
            conn.execute(
                self._mine(lane).values(
                    acked_seq=max(lane.acked_seq, last_seq),
                    needs_snapshot=snapshot_next,
                    attempts=0,
                    next_attempt_at=now,
                    lease_owner=None,
                    lease_until=None,
                    last_error=reason[:2000],
                    updated_at=now,
                )
            )

    def _mine(self, lane: Lane) -> Any:
        return update(L).where(
            L.endpoint == lane.endpoint,
            L.build_id == lane.build_id,
            L.lease_owner == self.owner,
        )

    # -- endpoints ------------------------------------------------------------

    def gone(self, endpoint: str) -> str | None:
        """Why the endpoint was stopped (it answered 410 Gone), or None."""
        with self.store._read() as conn:
            row = conn.execute(select(E.gone, E.last_error).where(E.name == endpoint)).one_or_none()
        return (row.last_error or "410 Gone") if row is not None and row.gone else None

    def set_gone(self, endpoint: str, reason: str | None) -> None:
        """Stop (reason given) or resume (None) delivery to an endpoint."""
        now = utcnow()
        with self.store._write() as conn:
            stmt = _insert(conn, E).values(
                name=endpoint, gone=reason is not None, last_error=reason, updated_at=now
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[E.name],
                    set_={
                        "gone": stmt.excluded.gone,
                        "last_error": stmt.excluded.last_error,
                        "updated_at": now,
                    },
                )
            )

    def save_circuit(
        self, endpoint: str, state: str, failures: int, open_until: datetime | None
    ) -> None:
        """Record the endpoint's circuit as this dispatcher sees it, for readers elsewhere.

        Several dispatchers (HA schedulers, API server workers) share the row:
        the last one whose circuit changed wins, and ``circuit_owner`` says which.
        """
        now = utcnow()
        values = {
            "circuit_state": state,
            "circuit_failures": failures,
            "circuit_open_until": open_until,
            "circuit_owner": self.owner[:100],
            "circuit_changed_at": now,
        }
        with self.store._write() as conn:
            stmt = _insert(conn, E).values(name=endpoint, gone=False, updated_at=now, **values)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[E.name], set_={k: stmt.excluded[k] for k in values}
                )
            )

    # -- looking after it -----------------------------------------------------

    def health(self, *, include_idle: bool = False) -> list[dict[str, Any]]:
        """Per endpoint: lanes with something pending, oldest pending age, dead letters,
        lanes backing off after a failure (with an error of theirs), whether it is gone,
        and its circuit.

        ``oldest_pending_s`` is the age of the oldest change set an endpoint has
        not acknowledged (for a lane waiting for a snapshot: since the lane last
        changed). ``include_idle`` lists endpoints with nothing to report too:
        every endpoint with a lane or a recorded circuit.
        """
        now = utcnow()
        first = aliased(C)  # each pending lane's first unacknowledged change set
        with self.store._read() as conn:
            pending = conn.execute(
                select(
                    L.endpoint,
                    func.count(),
                    func.min(func.coalesce(first.created_at, L.updated_at)),
                )
                .join(B, B.build_id == L.build_id)
                .outerjoin(
                    first, and_(first.build_id == L.build_id, first.sequence == L.acked_seq + 1)
                )
                .where(or_(B.sequence > L.acked_seq, L.needs_snapshot))
                .group_by(L.endpoint)
            ).all()
            dead = dict(
                conn.execute(
                    select(D.endpoint, func.count())
                    .where(D.replayed_at.is_(None))
                    .group_by(D.endpoint)
                ).all()
            )
            endpoints = {row.name: row for row in conn.execute(select(E))}
            # Lanes backing off after a failed send, and one of their errors to show.
            retrying = {
                r.endpoint: (int(r.lanes), r.last_error)
                for r in conn.execute(
                    select(
                        L.endpoint,
                        func.count().label("lanes"),
                        func.max(L.last_error).label("last_error"),
                    )
                    .where(L.attempts > 0)
                    .group_by(L.endpoint)
                )
            }
            idle = (
                set(conn.execute(select(L.endpoint).distinct()).scalars()) if include_idle else ()
            )
        empty = {"pending_lanes": 0, "oldest_pending_s": None}
        out: dict[str, dict[str, Any]] = {}
        for endpoint, count, oldest in pending:
            age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else None
            out[endpoint] = {"pending_lanes": int(count), "oldest_pending_s": age}
        gone = {name for name, row in endpoints.items() if row.gone}
        shown = set(dead) | gone | set(retrying)
        if include_idle:
            shown |= set(endpoints) | set(idle)
        for endpoint in shown:
            out.setdefault(endpoint, dict(empty))
        return [
            {
                "endpoint": name,
                **values,
                "dead_letters": int(dead.get(name, 0)),
                "retrying_lanes": retrying.get(name, (0, None))[0],
                "last_error": retrying.get(name, (0, None))[1],
                "gone": (endpoints[name].last_error or "410 Gone") if name in gone else None,
                "circuit": _circuit(endpoints.get(name), now),
            }
            for name, values in sorted(out.items())
        ]

    def dead_letters(
        self,
        endpoint: str | None = None,
        *,
        build_id: str | None = None,
        ids: Sequence[int] | None = None,
        include_replayed: bool = False,
    ) -> list[dict[str, Any]]:
        """Dead letters, oldest first; each holds the events exactly as they were sent."""
        with self.store._read() as conn:
            stmt = select(D).order_by(D.id)
            if endpoint is not None:
                stmt = stmt.where(D.endpoint == endpoint)
            if build_id is not None:
                stmt = stmt.where(D.build_id == build_id)
            if ids is not None:
                stmt = stmt.where(D.id.in_(list(ids)))
            if not include_replayed:
                stmt = stmt.where(D.replayed_at.is_(None))
            return [
                dict(row._mapping) for row in conn.execute(stmt.with_only_columns(*D.__table__.c))
            ]

    def mark_replayed(self, ids: Iterable[int]) -> None:
        now = utcnow()
        with self.store._write() as conn:
            conn.execute(update(D).where(D.id.in_(list(ids))).values(replayed_at=now))

    def request_snapshot(self, endpoint: str, build_ids: Sequence[str] | None = None) -> int:
        """Send the endpoint a fresh snapshot of these builds (all it has) next; lanes changed.

        For a consumer that lost its state: the snapshot resets it at the
        current sequence, and change sets follow from there.
        """
        now = utcnow()
        with self.store._write() as conn:
            stmt = update(L).where(L.endpoint == endpoint)
            if build_ids is not None:
                stmt = stmt.where(L.build_id.in_(list(build_ids)))
            result = conn.execute(
                stmt.values(needs_snapshot=True, attempts=0, next_attempt_at=now, updated_at=now)
            )
            return int(result.rowcount or 0)

    def clean(self, retention: timedelta) -> int:
        """Delete change sets older than ``retention`` that every lane of their build has."""
        cutoff = utcnow() - retention
        with self.store._write() as conn:
            unacked = (
                select(L.build_id)
                .where(L.build_id == C.build_id, L.acked_seq < C.sequence)
                .exists()
            )
            result = conn.execute(delete(C).where(and_(C.created_at < cutoff, ~unacked)))
            return int(result.rowcount or 0)
