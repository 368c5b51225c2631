"""Reads: documents, build summaries, history and node states."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, func, select

from airflow_bkci.model.fsm import Decision, NodeState
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.store.results import Transition
from airflow_bkci.store.tables import BuildRow, ChangeRow, NodeRow, TransitionRow

B, C, N, T = BuildRow, ChangeRow, NodeRow, TransitionRow


def build_tree(conn: Connection, build_id: str) -> dict[str, Any] | None:
    doc = conn.execute(select(B.document).where(B.build_id == build_id)).scalar_one_or_none()
    return dict(doc) if doc is not None else None


def snapshot(conn: Connection, build_id: str) -> dict[str, Any] | None:
    """The build's document and the sequence that made it, read in one row."""
    row = conn.execute(
        select(B.dag_id, B.document, B.sequence).where(B.build_id == build_id)
    ).one_or_none()
    if row is None:
        return None
    return {
        "build_id": build_id,
        "pipeline_id": row.dag_id,
        "sequence": int(row.sequence),
        "document": dict(row.document),
    }


def changes(
    conn: Connection, build_id: str, after: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """The build's change sets with a sequence above ``after``, in order."""
    stmt = (
        select(C.sequence, C.patch, C.created_at)
        .where(C.build_id == build_id, C.sequence > after)
        .order_by(C.sequence)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [
        {"sequence": int(r.sequence), "patch": list(r.patch), "created_at": r.created_at}
        for r in conn.execute(stmt)
    ]


def build_refs(
    conn: Connection, build_ids: Sequence[str], chunk: int = 500
) -> dict[str, tuple[str, str]]:
    """``{build_id: (dag_id, run_id)}`` of the ids the store knows; unknown ids are left out."""
    wanted = sorted(set(build_ids))
    found: dict[str, tuple[str, str]] = {}
    for start in range(0, len(wanted), chunk):
        stmt = select(B.build_id, B.dag_id, B.run_id).where(
            B.build_id.in_(wanted[start : start + chunk])
        )
        found.update({row.build_id: (row.dag_id, row.run_id) for row in conn.execute(stmt)})
    return found


def find_build(conn: Connection, dag_id: str, run_id: str) -> dict[str, Any] | None:
    stmt = select(B.document).where(B.dag_id == dag_id, B.run_id == run_id)
    doc = conn.execute(stmt).scalar_one_or_none()
    return dict(doc) if doc is not None else None


def builds(
    conn: Connection,
    dag_id: str | None,
    *,
    status: Sequence[BuildStatus] | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    """Summaries newest first; ``since`` is inclusive, ``until`` exclusive."""
    stmt = select(
        B.build_id,
        B.dag_id,
        B.run_id,
        B.build_num,
        B.status,
        B.run_after,
        B.started_at,
        B.ended_at,
        B.updated_at,
    )
    if dag_id is not None:
        stmt = stmt.where(B.dag_id == dag_id)
    if status is not None:
        stmt = stmt.where(B.status.in_([BuildStatus(s).value for s in status]))
    if since is not None:
        stmt = stmt.where(B.run_after >= since)
    if until is not None:
        stmt = stmt.where(B.run_after < until)
    stmt = stmt.order_by(B.run_after.desc(), B.build_num.desc(), B.build_id)
    stmt = stmt.limit(limit).offset(offset)
    return [_summary(row._mapping) for row in conn.execute(stmt)]


def last_update(conn: Connection) -> datetime | None:
    """When the store last changed a build (None for an empty store)."""
    value = conn.execute(select(func.max(B.updated_at))).scalar()
    if isinstance(value, str):  # SQLite without the type's processor on an aggregate
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


def _summary(row: Any) -> dict[str, Any]:
    """Named like the document's keys, times as ISO strings like the document's."""
    return {
        "id": row["build_id"],
        "pipeline_id": row["dag_id"],
        "run_id": row["run_id"],
        "build_num": row["build_num"],
        "status": row["status"],
        "run_after": _iso(row["run_after"]),
        "started_at": _iso(row["started_at"]),
        "ended_at": _iso(row["ended_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def history(conn: Connection, build_id: str, node_id: str) -> list[Transition]:
    stmt = (
        select(T)
        .where(T.build_id == build_id, T.node_id == node_id)
        .order_by(T.clear_number, T.try_number, T.rank, T.at, T.source, T.seq, T.id)
    )
    result: list[Transition] = []
    previous: BuildStatus | None = None
    for row in conn.execute(stmt).mappings():
        status = BuildStatus(row["to_status"])
        result.append(
            Transition(
                build_id=row["build_id"],
                node_id=row["node_id"],
                from_status=previous,
                to_status=status,
                airflow_state=row["airflow_state"],
                detail=row["detail"] or None,
                clear_number=row["clear_number"],
                try_number=row["try_number"],
                rank=row["rank"],
                at=row["at"],
                recorded_at=row["recorded_at"],
                source=row["source"],
                seq=row["seq"],
                decision=Decision(row["decision"]),
                stale=bool(row["stale"]),
            )
        )
        previous = status
    return result


def node_states(conn: Connection, build_id: str) -> dict[str, NodeState]:
    stmt = select(N.node_id, N.state).where(N.build_id == build_id)
    return {node_id: NodeState.from_json(state) for node_id, state in conn.execute(stmt)}
