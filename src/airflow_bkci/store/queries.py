"""Reads: documents, build summaries, history and node states."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB

from airflow_bkci.model.fsm import Decision, NodeState
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.store.results import Transition
from airflow_bkci.store.tables import BuildRow, ChangeRow, NodeRow, PipelineRow, TransitionRow

B, C, N, P, T = BuildRow, ChangeRow, NodeRow, PipelineRow, TransitionRow


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
        "run_after": iso(row["run_after"]),
        "started_at": iso(row["started_at"]),
        "ended_at": iso(row["ended_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def iso(value: datetime | None) -> str | None:
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
        result.append(transition_of(row, previous))
        previous = status
    return result


def transition_of(row: Any, from_status: BuildStatus | None) -> Transition:
    """A transition history row (mapping) as a :class:`Transition` from ``from_status``."""
    return Transition(
        build_id=row["build_id"],
        node_id=row["node_id"],
        from_status=from_status,
        to_status=BuildStatus(row["to_status"]),
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


def node_states(conn: Connection, build_id: str) -> dict[str, NodeState]:
    stmt = select(N.node_id, N.state).where(N.build_id == build_id)
    return {node_id: NodeState.from_json(state) for node_id, state in conn.execute(stmt)}


# ----------------------------------------------------------------- query API
@dataclass(frozen=True, slots=True)
class BuildFilter:
    """What the query API narrows a pipeline's builds by; every field narrows further.

    ``since`` is inclusive and ``until`` exclusive, both on ``run_after`` (when
    the run was due; the time the store first saw it when Airflow gave none).
    """

    statuses: tuple[BuildStatus, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    trigger_types: tuple[str, ...] = ()
    triggering_user: str | None = None
    conf: tuple[tuple[str, str], ...] = ()
    """(key, value) pairs that must all hold; see :func:`conf_matches`."""


BuildKey = tuple[datetime, int]
"""Where a build sorts in its pipeline: (run_after, build_num), unique per pipeline."""

SUMMARY_COLUMNS = (
    B.build_id,
    B.dag_id,
    B.run_id,
    B.build_num,
    B.status,
    B.trigger_type,
    B.triggering_user,
    B.run_after,
    B.queued_at,
    B.started_at,
    B.ended_at,
    B.updated_at,
    B.sequence,
)


def pipeline_ids(conn: Connection) -> list[str]:
    """Every pipeline the store has a build number counter for, sorted."""
    return list(conn.execute(select(P.dag_id).order_by(P.dag_id)).scalars())


def newest_build_id() -> Any:
    """The id of a pipeline row's newest build (by run_after, then number), correlated to it."""
    return (
        select(B.build_id)
        .where(B.dag_id == P.dag_id)
        .order_by(B.run_after.desc(), B.build_num.desc())
        .limit(1)
        .correlate(P)
        .scalar_subquery()
    )


def pipelines(conn: Connection, dag_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Each pipeline of ``dag_ids`` the store knows, with its newest build (None if none)."""
    if not dag_ids:
        return []
    newest = newest_build_id()
    stmt = (
        select(P.dag_id.label("pipeline_id"), P.last_build_num, P.created_at, *SUMMARY_COLUMNS)
        .select_from(P)
        .outerjoin(B, B.build_id == newest)
        .where(P.dag_id.in_(list(dag_ids)))
        .order_by(P.dag_id)
    )
    return [
        {
            "pipeline_id": row.pipeline_id,
            "builds": int(row.last_build_num),
            "created_at": iso(row.created_at),
            "latest_build": build_summary(row._mapping) if row.build_id is not None else None,
        }
        for row in conn.execute(stmt)
    ]


def build_page(
    conn: Connection, dag_id: str, flt: BuildFilter, after: BuildKey | None, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` builds of the pipeline, newest first, strictly after ``after``.

    Keyset pagination on (run_after, build_num): a page starts where the last
    one ended whatever was added meanwhile, so a build is never listed twice.
    """
    stmt = select(*SUMMARY_COLUMNS).where(B.dag_id == dag_id)
    if flt.statuses:
        stmt = stmt.where(B.status.in_([s.value for s in flt.statuses]))
    if flt.trigger_types:
        stmt = stmt.where(B.trigger_type.in_(list(flt.trigger_types)))
    if flt.triggering_user is not None:
        stmt = stmt.where(B.triggering_user == flt.triggering_user)
    if flt.since is not None:
        stmt = stmt.where(B.run_after >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(B.run_after < flt.until)
    for key, value in flt.conf:
        stmt = stmt.where(conf_matches(conn.dialect.name, key, value))
    if after is not None:
        run_after = bindparam("after_run_after", after[0], type_=B.run_after.type)
        stmt = stmt.where(tuple_(B.run_after, B.build_num) < tuple_(run_after, after[1]))
    stmt = stmt.order_by(B.run_after.desc(), B.build_num.desc()).limit(limit)
    return [build_summary(row._mapping) for row in conn.execute(stmt)]


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def conf_matches(dialect: str, key: str, value: str) -> ColumnElement[bool]:
    """True for builds whose run conf has the top-level ``key`` matching ``value``.

    ``value`` matches a JSON string equal to it, a number equal to it as a
    number when it is a JSON number (``3`` matches 3 and 3.0), and a boolean
    when it is ``true`` or ``false``. Null, lists and objects never match.
    Numbers compare by value because PostgreSQL's jsonb rewrites their text
    (1e3 is 1000 there): by value, both databases answer alike.
    """
    number = _number(value)
    if dialect == "postgresql":
        item = B.conf.op("->")(literal(key, String))
        wanted = [literal(value, JSONB)]
        if number is not None or value in ("true", "false"):
            wanted.append(literal(json.loads(value), JSONB))
        return item.in_(wanted)
    # SQLite: json_extract gives 1/0 for booleans, json_type tells them apart.
    path = literal(f'$."{key}"', String)
    kind = func.json_type(B.conf, path)
    found = func.json_extract(B.conf, path)
    matches = [and_(kind == "text", found == literal(value, String))]
    if value in ("true", "false"):
        matches.append(kind == value)
    if number is not None:
        matches.append(and_(kind.in_(("integer", "real")), found == literal(number)))
    return or_(*matches)


def _number(value: str) -> int | float | None:
    if not _JSON_NUMBER.fullmatch(value):
        return None
    parsed: int | float = json.loads(value)
    if isinstance(parsed, int) and not -(2**63) <= parsed < 2**63:
        parsed = float(parsed)  # SQLite holds larger integers as reals
    if isinstance(parsed, float) and not math.isfinite(parsed):
        return None  # 1e400: no JSON number equals it, and PostgreSQL refuses Infinity
    return parsed


def build_key(conn: Connection, build_id: str) -> tuple[str, BuildKey] | None:
    """The build's pipeline and sort key, or None for an unknown build."""
    row = conn.execute(
        select(B.dag_id, B.run_after, B.build_num).where(B.build_id == build_id)
    ).one_or_none()
    return None if row is None else (row.dag_id, (row.run_after, int(row.build_num)))


def changes_since(conn: Connection, build_id: str, after: int, limit: int) -> dict[str, Any] | None:
    """The build's current sequence and up to ``limit`` change sets after ``after``, in order.

    Bounded by the sequence read first: a change set committed between the two
    statements is left for the next call, so the answer is consistent.
    """
    head = conn.execute(select(B.dag_id, B.sequence).where(B.build_id == build_id)).one_or_none()
    if head is None:
        return None
    stmt = (
        select(C.sequence, C.patch, C.created_at)
        .where(C.build_id == build_id, C.sequence > after, C.sequence <= head.sequence)
        .order_by(C.sequence)
        .limit(limit)
    )
    return {
        "build_id": build_id,
        "pipeline_id": head.dag_id,
        "sequence": int(head.sequence),
        "changes": [
            {"sequence": int(r.sequence), "patch": list(r.patch), "created_at": r.created_at}
            for r in conn.execute(stmt)
        ],
    }


def node_known(conn: Connection, build_id: str, node_id: str) -> bool:
    """True when the build has the node now or had it in its history."""
    now = select(N.node_id).where(N.build_id == build_id, N.node_id == node_id).exists()
    before = select(T.id).where(T.build_id == build_id, T.node_id == node_id).exists()
    return bool(conn.execute(select(now | before)).scalar())


def build_summary(row: Any) -> dict[str, Any]:
    """A build as the query API lists it: the summary plus its filters and queue time."""
    summary = _summary(row)
    started, ended = row["started_at"], row["ended_at"]
    summary.update(
        trigger_type=row["trigger_type"],
        triggering_user=row["triggering_user"],
        queued_at=iso(row["queued_at"]),
        duration_ms=(
            max(0, int((ended - started).total_seconds() * 1000)) if started and ended else None
        ),
        sequence=int(row["sequence"]),
    )
    return summary
