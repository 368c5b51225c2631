"""Apply a batch of status events in one transaction: lock, fold, write, render.

Lock order, the same in every process so two writers never deadlock: the
existing build rows of the batch in build_id order, then the pipeline rows of
builds to create in dag_id order (the counter for their numbers), then the new
build rows. Everything else a batch writes hangs off a build it has locked.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from airflow_bkci.exceptions import ConfigError, InvalidEvent, InvalidTransition
from airflow_bkci.model import fsm
from airflow_bkci.model.diff import diff_documents
from airflow_bkci.model.event import AUTHORITATIVE_SOURCE, BUILD_NODE, NodeRef, StatusEvent
from airflow_bkci.model.fsm import NO_STATUS_KEY, Decision, NodeState
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.model.tree import build_document
from airflow_bkci.store.engine import dumps
from airflow_bkci.store.results import ApplyResult
from airflow_bkci.store.tables import BuildRow, ChangeRow, NodeRow, PipelineRow, TransitionRow

log = logging.getLogger(__name__)

B, C, N, P, T = BuildRow, ChangeRow, NodeRow, PipelineRow, TransitionRow

HISTORY_DECISIONS = frozenset(
    {
        Decision.CREATE,
        Decision.ADVANCE,
        Decision.OVERRIDE,
        Decision.REOPEN,
        Decision.REMOVE,
        Decision.STALE,
    }
)

NOT_STARTED = NodeState(BuildStatus.QUEUE, NO_STATUS_KEY, detail="pending")
"""How a build renders before anything about its own node arrived."""

_PLAIN = (str, int, float, bool, type(None))
_MAX_LEN = {"dag_id": 250, "run_id": 250, "task_id": 250, "source": 100, "detail": 100}


@dataclass(slots=True)
class _Build:
    build_id: str
    dag_id: str
    run_id: str
    build_num: int
    created_at: datetime
    document: dict[str, Any] = field(default_factory=dict)
    sequence: int = 0
    nodes: dict[str, NodeState] = field(default_factory=dict)
    refs: dict[str, NodeRef] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    created: bool = False
    conf: dict[str, Any] | None = None
    conf_told: bool = False  # an event of the batch said what the run's conf is


def apply_events(conn: Connection, events: Sequence[StatusEvent], now: datetime) -> ApplyResult:
    """Fold ``events`` into the store through ``conn``'s open transaction."""
    result = ApplyResult()
    by_build: dict[str, list[StatusEvent]] = defaultdict(list)
    for event in events:
        try:
            checked = _checked(event)
        except (InvalidEvent, ValueError) as exc:
            result.rejected.append((event, str(exc)))
            continue
        by_build[checked.node.build_id].append(checked)
    if not by_build:
        return result
    builds = _lock_builds(conn, by_build, now)
    _load_nodes(conn, builds)
    transitions: list[dict[str, Any]] = []
    for build_id in sorted(by_build):
        _fold(builds[build_id], by_build[build_id], result, transitions, now)
    touched = [b for b in builds.values() if b.dirty or b.created]
    _write_nodes(conn, touched, now)
    _write_transitions(conn, transitions)
    _write_builds(conn, touched, now)
    _write_confs(conn, [b for b in builds.values() if b.conf_told])
    result.build_ids.update(b.build_id for b in touched)
    return result


def _checked(event: StatusEvent) -> StatusEvent:
    """Reject what would fail the whole transaction later; make fields plain JSON."""
    if not isinstance(event, StatusEvent):
        raise InvalidEvent(f"{type(event).__name__} is not a StatusEvent", event)
    if event.status is not None and not isinstance(event.status, BuildStatus):
        raise InvalidEvent(f"status {event.status!r} is not a BuildStatus", event)
    values = {
        "dag_id": event.node.dag_id,
        "run_id": event.node.run_id,
        "task_id": event.node.task_id or "",
        "source": event.source,
        "detail": event.detail or "",
    }
    for name, value in values.items():
        if len(value) > _MAX_LEN[name]:
            raise InvalidEvent(f"{name} {value[:40]!r}... is longer than {_MAX_LEN[name]}", event)
    if all(isinstance(v, _PLAIN) for v in event.fields.values()):
        return event
    try:
        # Stored states and rendered documents must hold the same values.
        plain = json.loads(dumps(dict(event.fields)))
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"fields of {event.node} cannot be stored: {exc}", event) from exc
    return replace(event, fields=plain)


def _insert(conn: Connection, table: type[Any]) -> Any:
    """The dialect's INSERT, which has ON CONFLICT on both databases we support."""
    if conn.dialect.name == "postgresql":
        return pg_insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite_insert(table)
    raise ConfigError(
        f"[bkci] store_url uses {conn.dialect.name}; the status store supports "
        "sqlite and postgresql only"
    )


def _lock_builds(
    conn: Connection, by_build: dict[str, list[StatusEvent]], now: datetime
) -> dict[str, _Build]:
    ids = sorted(by_build)
    builds = _select_builds(conn, ids)
    # Numbered in the order the batch first mentions them: a collector lists
    # new runs in the order they were created.
    missing = {b: events[0].node for b, events in by_build.items() if b not in builds}
    if missing:
        builds.update(_create_builds(conn, missing, now))
    return builds


def _select_builds(conn: Connection, ids: Iterable[str]) -> dict[str, _Build]:
    stmt = (
        select(B.build_id, B.dag_id, B.run_id, B.build_num, B.created_at, B.document, B.sequence)
        .where(B.build_id.in_(list(ids)))
        .order_by(B.build_id)
        .with_for_update()
    )
    return {r.build_id: _Build(*r) for r in conn.execute(stmt)}


def _create_builds(
    conn: Connection, missing: dict[str, NodeRef], now: datetime
) -> dict[str, _Build]:
    by_dag: dict[str, list[tuple[str, NodeRef]]] = defaultdict(list)
    for build_id, ref in missing.items():
        by_dag[ref.dag_id].append((build_id, ref))
    created: dict[str, _Build] = {}
    for dag_id in sorted(by_dag):
        last = _lock_pipeline(conn, dag_id, now)
        # Whoever held the pipeline lock before us may have created some of
        # these builds meanwhile; the lock makes their commit visible here.
        wanted = by_dag[dag_id]
        created.update(_select_builds(conn, (b for b, _ in wanted)))
        rows = []
        for build_id, ref in wanted:
            if build_id in created:
                continue
            last += 1
            build = _Build(build_id, ref.dag_id, ref.run_id, last, now, created=True)
            created[build_id] = build
            rows.append(
                {
                    "build_id": build_id,
                    "dag_id": ref.dag_id,
                    "run_id": ref.run_id,
                    "build_num": last,
                    "status": BuildStatus.QUEUE.value,
                    "run_after": now,
                    "created_at": now,
                    "updated_at": now,
                    "document": {},
                }
            )
        if rows:
            conn.execute(_insert(conn, B), rows)
            conn.execute(update(P).where(P.dag_id == dag_id).values(last_build_num=last))
    return created


def _lock_pipeline(conn: Connection, dag_id: str, now: datetime) -> int:
    """Lock the pipeline's counter row (creating it) and return its last number."""
    row = {"dag_id": dag_id, "last_build_num": 0, "created_at": now}
    conn.execute(_insert(conn, P).values(row).on_conflict_do_nothing())
    stmt = select(P.last_build_num).where(P.dag_id == dag_id).with_for_update()
    return int(conn.execute(stmt).scalar_one())


def _load_nodes(conn: Connection, builds: dict[str, _Build]) -> None:
    """One SELECT for every node of the batch's builds (the document needs all)."""
    stmt = select(N.build_id, N.node_id, N.state).where(N.build_id.in_(list(builds)))
    for build_id, node_id, state in conn.execute(stmt):
        builds[build_id].nodes[node_id] = NodeState.from_json(state)


def _fold(
    build: _Build,
    events: list[StatusEvent],
    result: ApplyResult,
    transitions: list[dict[str, Any]],
    now: datetime,
) -> None:
    # In event order, so a batch's outcome (and what counts as stale) does not
    # depend on the order its events were listed in.
    for told in sorted(events, key=lambda e: (e.node.node_id, e.key)):
        event = _take_conf(build, told) if "conf" in told.fields and told.node.is_build else told
        node_id = event.node.node_id
        current = build.nodes.get(node_id)
        try:
            new, decision = fsm.apply(current, event)
        except (InvalidTransition, InvalidEvent, ValueError) as exc:
            result.rejected.append((event, str(exc)))
            continue
        result.counts[decision] += 1
        if new is not None and new != current:  # replayed events change nothing
            build.nodes[node_id] = new
            build.refs[node_id] = event.node
            build.dirty.add(node_id)
        if decision in HISTORY_DECISIONS and (event.status is not None or event.removed):
            transitions.append(_transition(build.build_id, event, decision, new, now))


def _take_conf(build: _Build, event: StatusEvent) -> StatusEvent:
    """Keep the run's conf for its column and return the event without it.

    The conf is a fact of the run, not of this status: a stale or refused
    event still tells it. It never reaches the node's state, so the document
    (what every receiver gets) never shows it and it makes no change set.
    """
    fields = dict(event.fields)
    conf = fields.pop("conf")
    if conf is None or isinstance(conf, dict):
        build.conf, build.conf_told = conf or None, True
    else:
        log.debug("ignoring conf of %s: %s is not a JSON object", event.node, type(conf).__name__)
    return replace(event, fields=fields)


def _transition(
    build_id: str, event: StatusEvent, decision: Decision, new: NodeState | None, now: datetime
) -> dict[str, Any]:
    status = event.status or (new.status if new else BuildStatus.UNEXEC)
    detail = event.detail or ""
    if event.removed and not detail:
        detail = "removed"  # else it would collide with the status it had before
    key = event.key
    return {
        "build_id": build_id,
        "node_id": event.node.node_id,
        "to_status": status.value,
        "detail": detail,
        "airflow_state": event.airflow_state,
        # The key's clear number (always 0 for tasks, whose tries already
        # count clears): sources that saw different clear counts for the same
        # try must collide here, not write the same step twice.
        "clear_number": key.clear_number,
        "try_number": key.try_number,
        "rank": key.rank,
        "at": event.at,
        "recorded_at": now,
        "source": event.source,
        "seq": event.seq,
        "decision": decision.value,
        "stale": decision is Decision.STALE,
    }


def _write_nodes(conn: Connection, builds: list[_Build], now: datetime) -> None:
    rows = [
        _node_row(build.build_id, build.refs[node_id], build.nodes[node_id], now)
        for build in builds
        for node_id in sorted(build.dirty)
    ]
    if not rows:
        return
    stmt = _insert(conn, N)
    keys = {"build_id", "node_id"}
    stmt = stmt.on_conflict_do_update(
        index_elements=sorted(keys),
        set_={name: stmt.excluded[name] for name in rows[0] if name not in keys},
    )
    conn.execute(stmt, rows)


def _node_row(build_id: str, ref: NodeRef, state: NodeState, now: datetime) -> dict[str, Any]:
    return {
        "build_id": build_id,
        "node_id": ref.node_id,
        "task_id": ref.task_id,
        "map_index": ref.map_index,
        "status": state.status.value,
        "detail": state.detail,
        "airflow_state": state.airflow_state,
        "clear_number": int(state.values().get("clear_number") or state.key.clear_number),
        "try_number": state.key.try_number,
        "removed": state.removed,
        "state": state.to_json(),
        "updated_at": now,
    }


_HISTORY_KEY = ("build_id", "node_id", "clear_number", "try_number", "to_status", "detail")


def _write_transitions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    stmt = _insert(conn, T)
    # The first report of a step keeps its row, except that a report read from
    # Airflow's database replaces one from another source: Airflow's times are
    # the truth, a worker's or a hook's clock only an early estimate.
    stmt = stmt.on_conflict_do_update(
        index_elements=list(_HISTORY_KEY),
        set_={name: stmt.excluded[name] for name in ("at", "source", "seq")},
        where=stmt.excluded.source.startswith(AUTHORITATIVE_SOURCE)
        & ~T.source.startswith(AUTHORITATIVE_SOURCE),
    )
    conn.execute(stmt, rows)


def _write_builds(conn: Connection, builds: list[_Build], now: datetime) -> None:
    rows = [_build_row(build, now) for build in builds]
    if not rows:
        return
    changes = []
    for build, row in zip(builds, rows, strict=True):
        patch = diff_documents(build.document, row["document"])
        if patch:  # an empty diff takes no number
            build.sequence += 1
            changes.append(
                {
                    "build_id": build.build_id,
                    "dag_id": build.dag_id,
                    "sequence": build.sequence,
                    "patch": patch,
                    "created_at": now,
                }
            )
        row["sequence"] = build.sequence
    if changes:
        conn.execute(insert(C), changes)
    names = [name for name in rows[0] if name != "build_id"]
    # Bind names must differ from column names in an executemany UPDATE.
    stmt = (
        update(B)
        .where(B.build_id == bindparam("b_build_id"))
        .values({name: bindparam(f"b_{name}") for name in names})
    )
    conn.execute(stmt, [{f"b_{k}": v for k, v in row.items()} for row in rows])


def _write_confs(conn: Connection, builds: list[_Build]) -> None:
    """The conf column, only for builds whose events told it (run events, not task events)."""
    if not builds:
        return
    stmt = update(B).where(B.build_id == bindparam("b_build_id")).values(conf=bindparam("b_conf"))
    conn.execute(stmt, [{"b_build_id": b.build_id, "b_conf": b.conf} for b in builds])


def _build_row(build: _Build, now: datetime) -> dict[str, Any]:
    state = build.nodes.get(BUILD_NODE, NOT_STARTED)
    tasks = {nid: st for nid, st in build.nodes.items() if nid != BUILD_NODE}
    document = build_document(
        build.build_id, build.dag_id, build.run_id, build.build_num, state, tasks
    )
    values = state.values()
    return {
        "build_id": build.build_id,
        "status": state.status.value,
        "run_after": _as_datetime(values.get("run_after")) or build.created_at,
        "started_at": _as_datetime(values.get("started_at")),
        "ended_at": _as_datetime(values.get("ended_at")),
        "updated_at": now,
        "document": document,
        # Indexed copies for the query API's filters and queue-time metrics.
        "trigger_type": _as_text(values.get("trigger_type"), 50),
        "triggering_user": _as_text(values.get("triggering_user"), 512),
        "queued_at": _as_datetime(values.get("queued_at")),
    }


def _as_text(value: Any, limit: int) -> str | None:
    """A document field as its column holds it (cut to the column's size)."""
    return None if value is None else str(value)[:limit]


def _as_datetime(value: Any) -> datetime | None:
    """Event fields carry times as ISO strings; a bad one only loses a column."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            log.debug("ignoring time %r that is not ISO 8601", value)
            return None
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed
