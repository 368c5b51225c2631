"""Reads for the dashboard: wall tiles, a pipeline's chart series, a build's transitions.

Every statement is an index range of ``bkci_build`` (``dag_id, run_after, …``
or ``dag_id, status, run_after, …``); only the newest build of each tile is
read with its document. Durations are computed by the database so that a
window of many builds is read as plain numbers; percentiles are nearest-rank
(:func:`airflow_bkci.stats.percentile`), counted here because SQLite has no
percentile function.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Float,
    Select,
    String,
    and_,
    cast,
    false,
    func,
    or_,
    select,
    union_all,
)

from airflow_bkci.model.event import BUILD_NODE
from airflow_bkci.model.fsm import NodeState
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.model.tree import build_document
from airflow_bkci.notify.root_cause import root_causes
from airflow_bkci.stats import percentile
from airflow_bkci.store.metrics import FINAL_STATUSES
from airflow_bkci.store.queries import (
    SUMMARY_COLUMNS,
    build_summary,
    iso,
    newest_build_id,
    transition_of,
)
from airflow_bkci.store.results import Transition
from airflow_bkci.store.tables import BuildRow, NodeRow, PipelineRow, TransitionRow

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Bucket",
    "Failure",
    "Tile",
    "build_transitions",
    "pipeline_series",
    "wall_tiles",
]

B, N, P, T = BuildRow, NodeRow, PipelineRow, TransitionRow

_FINAL = tuple(s.value for s in FINAL_STATUSES)
_SUCCEED = BuildStatus.SUCCEED.value
_FAILED = BuildStatus.FAILED.value
_CANCELED = BuildStatus.CANCELED.value
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class Failure:
    """A pipeline's newest FAILED build and the tasks whose own failure ended it."""

    build_id: str
    build_num: int
    run_id: str
    ended_at: str | None
    triggering_user: str | None
    task_ids: tuple[str, ...]
    """Airflow task ids of the root causes, first to fail first (owners are per task id)."""
    node: str | None
    """Node id of the first root cause ("load[2]"), None when no task failed on its own."""


@dataclass(slots=True)
class Tile:
    """What the store knows of one pipeline on the wall."""

    dag_id: str
    latest: dict[str, Any] | None = None
    latest_document: dict[str, Any] | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    trend: list[dict[str, Any]] = field(default_factory=list)
    last_failure: Failure | None = None


def wall_tiles(
    conn: Connection, dag_ids: Sequence[str], since: datetime, until: datetime, trend: int
) -> dict[str, Tile]:
    """A tile for each pipeline of ``dag_ids`` the store knows; stats over ``[since, until)``.

    The trend and the last failure are the pipeline's newest, whatever the window.
    """
    known = _known(conn, dag_ids)
    if not known:
        return {}
    tiles = {dag_id: Tile(dag_id) for dag_id in known}
    _add_latest(conn, tiles)
    for dag_id, stats in _window_stats(conn, known, since, until).items():
        tiles[dag_id].stats = stats
    for dag_id, points in _trends(conn, known, trend).items():
        tiles[dag_id].trend = points
    for dag_id, failure in _last_failures(conn, known).items():
        tiles[dag_id].last_failure = failure
    return tiles


def _known(conn: Connection, dag_ids: Sequence[str]) -> list[str]:
    if not dag_ids:
        return []
    stmt = select(P.dag_id).where(P.dag_id.in_(sorted(set(dag_ids)))).order_by(P.dag_id)
    return list(conn.execute(stmt).scalars())


def _add_latest(conn: Connection, tiles: dict[str, Tile]) -> None:
    """The newest build of each pipeline, with its document: one index probe each."""
    newest = newest_build_id()
    stmt = (
        select(P.dag_id.label("tile"), *SUMMARY_COLUMNS, B.document)
        .select_from(P)
        .join(B, B.build_id == newest)
        .where(P.dag_id.in_(list(tiles)))
    )
    for row in conn.execute(stmt):
        tile = tiles[row.tile]
        tile.latest = build_summary(row._mapping)
        tile.latest_document = {**dict(row.document), "sequence": int(row.sequence)}


def duration_ms(dialect: str) -> ColumnElement[Any]:
    """``ended_at - started_at`` in milliseconds, computed by the database."""
    if dialect == "postgresql":
        return func.extract("epoch", B.ended_at - B.started_at) * 1000
    # SQLite keeps the naive UTC text; julianday reads it.
    return (func.julianday(B.ended_at) - func.julianday(B.started_at)) * cast(86_400_000, Float)


def _window_stats(
    conn: Connection, dag_ids: list[str], since: datetime, until: datetime
) -> dict[str, dict[str, Any]]:
    window = (B.dag_id.in_(dag_ids), B.run_after >= since, B.run_after < until)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    stmt = select(B.dag_id, B.status, func.count()).where(*window).group_by(B.dag_id, B.status)
    for dag_id, status, count in conn.execute(stmt):
        counts[dag_id][status] += int(count)
    # One text per pipeline rather than a row per build: reading a week of a busy wall
    # row by row costs more than the query itself.
    joined = func.aggregate_strings(cast(duration_ms(conn.dialect.name), String), ",")
    finished = (
        select(B.dag_id, joined)
        .where(*window, B.status.in_(_FINAL), B.started_at.is_not(None), B.ended_at.is_not(None))
        .group_by(B.dag_id)
    )
    durations: dict[str, list[float]] = defaultdict(list)
    for dag_id, text in conn.execute(finished):
        durations[dag_id] = [max(0.0, float(ms)) for ms in (text or "").split(",") if ms]
    return {dag_id: outcome(counts[dag_id], durations[dag_id]) for dag_id in dag_ids}


def outcome(counts: Counter[str], durations: list[float]) -> dict[str, Any]:
    """Counts, success rate and duration percentiles of a set of builds."""
    finished = sum(counts[s] for s in _FINAL)
    return {
        "builds": sum(counts.values()),
        "finished": finished,
        "succeeded": counts[_SUCCEED],
        "failed": counts[_FAILED],
        "canceled": counts[_CANCELED],
        "success_rate": round(counts[_SUCCEED] / finished, 3) if finished else None,
        "duration_p50_ms": _whole(percentile(durations, 50)),
        "duration_p95_ms": _whole(percentile(durations, 95)),
    }


def _whole(ms: float | None) -> int | None:
    return None if ms is None else round(ms)


def _newest_each(
    dag_ids: Iterable[str], one: Select[Unpack[tuple[Any, ...]]], limit: int
) -> Executable:
    """``one`` (a select filtered by ``B.dag_id == :dag``) for every pipeline, newest first.

    A UNION ALL of one index range per pipeline, each stopping after ``limit``
    rows: reading all of a pipeline's builds to rank them would not.
    """
    parts = [
        select(
            one.where(B.dag_id == dag_id)
            .order_by(B.run_after.desc(), B.build_num.desc())
            .limit(limit)
            .subquery()
        )
        for dag_id in dag_ids
    ]
    return parts[0] if len(parts) == 1 else union_all(*parts)


def _trends(conn: Connection, dag_ids: list[str], limit: int) -> dict[str, list[dict[str, Any]]]:
    one = select(
        B.dag_id,
        B.build_id,
        B.build_num,
        B.status,
        B.run_after,
        B.ended_at,
        duration_ms(conn.dialect.name).label("duration_ms"),
    ).where(B.status.in_(_FINAL))
    found: dict[str, list[Any]] = defaultdict(list)
    for row in conn.execute(_newest_each(dag_ids, one, limit)):
        found[row.dag_id].append(row)
    return {
        dag_id: [
            {
                "build_id": row.build_id,
                "build_num": int(row.build_num),
                "status": row.status,
                "duration_ms": None if row.duration_ms is None else max(0, round(row.duration_ms)),
                "ended_at": iso(_aware(row.ended_at)),
            }
            for row in sorted(rows, key=lambda r: (_aware(r.run_after), r.build_num))
        ]
        for dag_id, rows in found.items()
    }


def _aware(value: Any) -> datetime | None:
    """A time from a UNION: SQLite hands back its text, without the column type's processing."""
    if value is None:
        return None
    found: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return found if found.tzinfo is not None else found.replace(tzinfo=timezone.utc)


def _last_failures(conn: Connection, dag_ids: list[str]) -> dict[str, Failure]:
    one = select(
        B.dag_id, B.build_id, B.build_num, B.run_id, B.ended_at, B.triggering_user, B.run_after
    ).where(B.status == _FAILED)
    rows = list(conn.execute(_newest_each(dag_ids, one, 1)))
    causes = _root_causes(conn, [(row.build_id, row.dag_id, row.run_id) for row in rows])
    found: dict[str, Failure] = {}
    for row in rows:
        tasks = causes.get(row.build_id, [])
        found[row.dag_id] = Failure(
            build_id=row.build_id,
            build_num=int(row.build_num),
            run_id=row.run_id,
            ended_at=iso(_aware(row.ended_at)),
            triggering_user=row.triggering_user,
            task_ids=tuple(dict.fromkeys(t.task_id for t in tasks)),
            node=tasks[0].node_id if tasks else None,
        )
    return found


def _root_causes(conn: Connection, builds: list[tuple[str, str, str]]) -> dict[str, list[Any]]:
    """Root causes of each build, from its build node and FAILED nodes only (no document)."""
    if not builds:
        return {}
    stmt = select(N.build_id, N.node_id, N.state).where(
        N.build_id.in_([b[0] for b in builds]),
        N.removed == false(),
        or_(N.node_id == BUILD_NODE, N.status == _FAILED),
    )
    states: dict[str, dict[str, NodeState]] = defaultdict(dict)
    for build_id, node_id, state in conn.execute(stmt):
        states[build_id][node_id] = NodeState.from_json(state)
    found: dict[str, list[Any]] = {}
    for build_id, dag_id, run_id in builds:
        nodes = states.get(build_id, {})
        build = nodes.pop(BUILD_NODE, None)
        if build is None or not nodes:
            continue
        found[build_id] = root_causes(build_document(build_id, dag_id, run_id, None, build, nodes))
    return found


# ------------------------------------------------------------------ series
@dataclass(frozen=True, slots=True)
class Bucket:
    """A chart's bucket width: an hour or a day, aligned on UTC."""

    name: str
    width: timedelta

    def floor(self, when: datetime) -> datetime:
        step = self.width.total_seconds()
        offset = (when - _EPOCH).total_seconds()
        return _EPOCH + timedelta(seconds=offset - offset % step)

    def starts(self, since: datetime, until: datetime) -> list[datetime]:
        """Every bucket start from the one holding ``since`` to the last before ``until``."""
        first = self.floor(since)
        count = -(-(until - first) // self.width)  # ceiling division
        return [first + i * self.width for i in range(count)]


BUCKETS = {"hour": Bucket("hour", timedelta(hours=1)), "day": Bucket("day", timedelta(days=1))}


def pipeline_series(
    conn: Connection, dag_id: str, since: datetime, until: datetime, bucket: Bucket
) -> list[dict[str, Any]]:
    """Outcomes and durations of the builds due in each bucket of ``[since, until)``.

    Every bucket is there, empty ones with zeros and nulls.
    """
    starts = bucket.starts(since, until)
    counts: dict[datetime, Counter[str]] = defaultdict(Counter)
    durations: dict[datetime, list[float]] = defaultdict(list)
    ms = duration_ms(conn.dialect.name)
    final = and_(B.status.in_(_FINAL), B.started_at.is_not(None), B.ended_at.is_not(None))
    stmt = select(B.run_after, B.status, ms.label("ms"), final.label("timed")).where(
        B.dag_id == dag_id, B.run_after >= since, B.run_after < until
    )
    for run_after, status, duration, timed in conn.execute(stmt):
        start = bucket.floor(run_after)
        counts[start][status] += 1
        if timed and duration is not None:
            durations[start].append(max(0.0, float(duration)))
    return [
        {"start": start.isoformat(), **outcome(counts[start], durations[start])} for start in starts
    ]


# -------------------------------------------------------------- transitions
def build_transitions(conn: Connection, build_id: str, limit: int) -> list[Transition]:
    """Every node's transitions, newest first, at most ``limit``.

    ``from_status`` is the status the node had before, as the history route
    gives it: each node's transitions are walked in their own order first.
    """
    stmt = (
        select(T)
        .where(T.build_id == build_id)
        .order_by(T.node_id, T.clear_number, T.try_number, T.rank, T.at, T.source, T.seq, T.id)
    )
    found: list[tuple[Transition, int]] = []
    previous: dict[str, BuildStatus] = {}
    for row in conn.execute(stmt).mappings():
        status = BuildStatus(row["to_status"])
        found.append((transition_of(row, previous.get(row["node_id"])), row["id"]))
        previous[row["node_id"]] = status
    found.sort(key=lambda item: (item[0].at, item[0].recorded_at, item[1]), reverse=True)
    return [t for t, _ in found[:limit]]
