"""Finding what a cancel is about, before anything is locked: targets and teardowns.

Read-only queries on Airflow's database. Lookups go per DAG with
``run_id IN (...)``: PostgreSQL plans a ``(dag_id, run_id) IN`` list of 1,000
pairs as 1,000 index probes and spends over 100 ms planning each chunk.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from airflow_bkci.cancel.request import CancelRejected, CancelRequest, RunFilter, RunKey
from airflow_bkci.model.layout import teardown_tasks


@dataclass(frozen=True, slots=True)
class Target:
    """One run to cancel, as found when planning (its state is read again under the lock)."""

    id: int
    dag_id: str
    run_id: str
    state: str
    clear_number: int

    @property
    def key(self) -> RunKey:
        return (self.dag_id, self.run_id)


@dataclass(frozen=True)
class Plan:
    """The validated request: targets in lock order (id), and each DAG's teardown tasks."""

    request: CancelRequest
    targets: list[Target]
    duplicates: list[RunKey]
    teardowns: dict[str, frozenset[str]]

    @property
    def dag_ids(self) -> list[str]:
        return sorted({t.dag_id for t in self.targets})


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def by_dag(targets: Sequence[Target], size: int) -> Iterator[tuple[str, list[Target]]]:
    """Targets grouped by DAG (sorted), in chunks of ``size``, id order kept."""
    groups: dict[str, list[Target]] = defaultdict(list)
    for target in targets:
        groups[target.dag_id].append(target)
    for dag_id in sorted(groups):
        for part in chunks(groups[dag_id], size):
            yield dag_id, list(part)


def _target(row: Any) -> Target:
    return Target(row[0], row[1], row[2], str(row[3]), row[4] or 0)


def find_named(
    conn: Connection, runs: Sequence[RunKey], size: int
) -> tuple[list[Target], list[RunKey]]:
    """The named runs (sorted by id) and the duplicates; raises 404 naming unknown ones."""
    from airflow.models.dagrun import DagRun

    dr = DagRun.__table__.c
    unique = list(dict.fromkeys(runs))
    duplicates: list[RunKey] = []
    seen: set[RunKey] = set()
    for key in runs:
        if key in seen:
            duplicates.append(key)
        seen.add(key)
    wanted: dict[str, list[str]] = defaultdict(list)
    for dag_id, run_id in unique:
        wanted[dag_id].append(run_id)
    found: dict[RunKey, Target] = {}
    for dag_id in sorted(wanted):
        for part in chunks(wanted[dag_id], size):
            stmt = select(dr.id, dr.dag_id, dr.run_id, dr.state, dr.clear_number).where(
                dr.dag_id == dag_id, dr.run_id.in_(list(part))
            )
            for row in conn.execute(stmt):
                found[(row[1], row[2])] = _target(row)
    unknown = [k for k in unique if k not in found]
    if unknown:
        shown = ", ".join(f"{d}/{r}" for d, r in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise CancelRejected([f"{len(unknown)} unknown builds: {shown}{more}"], status=404)
    return sorted(found.values(), key=lambda t: t.id), duplicates


def find_filtered(conn: Connection, flt: RunFilter) -> list[Target]:
    """The runs a filter matches, by id; conf is matched here (its JSON differs per backend)."""
    from airflow.models.dagrun import DagRun

    dr = DagRun.__table__.c
    stmt = select(dr.id, dr.dag_id, dr.run_id, dr.state, dr.clear_number, dr.conf).where(
        dr.state.in_(list(flt.states))
    )
    if flt.dag_ids:
        stmt = stmt.where(dr.dag_id.in_(list(flt.dag_ids)))
    if flt.older_than is not None:
        stmt = stmt.where(dr.run_after < datetime.now(timezone.utc) - flt.older_than)
    if flt.due_before is not None:
        stmt = stmt.where(dr.run_after < flt.due_before)
    excluded = set(flt.exclude)
    return [
        _target(row)
        for row in conn.execute(stmt.order_by(dr.id))
        if (row[1], row[2]) not in excluded and (not flt.conf or conf_matches(row[5], flt.conf))
    ]


def conf_matches(conf: Any, wanted: Any) -> bool:
    if not isinstance(conf, dict):
        return False
    return all(key in conf and conf[key] == value for key, value in wanted.items())


def find_teardowns(
    conn: Connection, targets: Sequence[Target], size: int
) -> dict[str, frozenset[str]]:
    """Teardown task ids per DAG, over every serialized version its target runs use."""
    from airflow.models.serialized_dag import SerializedDagModel as SDM
    from airflow.models.taskinstance import TaskInstance as TI

    if not targets:
        return {}
    ti = TI.__table__.c
    versions: set[Any] = set()
    for dag_id, part in by_dag(targets, size):
        stmt = (
            select(ti.dag_version_id)
            .distinct()
            .where(ti.dag_id == dag_id, ti.run_id.in_([t.run_id for t in part]))
        )
        versions.update(v for v in conn.scalars(stmt) if v is not None)
    found: dict[str, set[str]] = {t.dag_id: set() for t in targets}
    with Session(bind=conn) as session:
        models = list(session.scalars(select(SDM).where(SDM.dag_version_id.in_(list(versions)))))
        for dag_id in set(found) - {m.dag_id for m in models}:
            # runs with no task instance yet: the DAG's latest version
            latest = session.scalar(
                select(SDM).where(SDM.dag_id == dag_id).order_by(SDM.created_at.desc()).limit(1)
            )
            if latest is not None:
                models.append(latest)
        for model in models:
            data = model.data
            if isinstance(data, dict) and model.dag_id in found:
                found[model.dag_id] |= teardown_tasks(data)
    return {dag_id: frozenset(ids) for dag_id, ids in found.items()}
