"""What Airflow's database says about DAGs: owners, tags, task owners, the DAGs with a tag.

Read with Airflow's own session (the API server has database access), in a
worker thread, one batched statement for all of a wall's tiles.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from airflow_bkci.notify.dag_owners import owner_sources

__all__ = ["AirflowDagCatalog", "DagCatalog", "DagFacts", "split_owners"]

_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class DagFacts:
    """A DAG as Airflow knows it."""

    dag_id: str
    owners: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    task_owners: Mapping[str, str] = field(default_factory=dict)
    """task_id -> owner of the DAG's latest version; only when asked for."""


class DagCatalog(Protocol):
    """What the dashboard needs from Airflow's metadata; blocking, call it from a thread."""

    def describe(
        self, dag_ids: Sequence[str], with_tasks: Sequence[str] = ()
    ) -> dict[str, DagFacts]:
        """Facts of the DAGs Airflow knows among ``dag_ids`` (task owners for ``with_tasks``)."""
        ...

    def tagged(self, tag: str) -> list[str]:
        """The DAGs (not stale) with the tag, sorted."""
        ...


def split_owners(raw: str | None) -> tuple[str, ...]:
    """``DagModel.owners`` ("alice, bob") or a task's owner as names, in order, once each."""
    return tuple(dict.fromkeys(o.strip() for o in (raw or "").split(",") if o.strip()))


class AirflowDagCatalog:
    """:class:`DagCatalog` over Airflow's database; task owners are cached per DAG version."""

    def __init__(
        self, session: Callable[[], AbstractContextManager[Session]] | None = None
    ) -> None:
        self._session = session or _airflow_session
        self._lock = threading.Lock()
        self._tasks_by_hash: dict[tuple[str, str], dict[str, str]] = {}

    def describe(
        self, dag_ids: Sequence[str], with_tasks: Sequence[str] = ()
    ) -> dict[str, DagFacts]:
        from airflow.models.dag import DagModel, DagTag

        wanted = sorted(set(dag_ids))
        if not wanted:
            return {}
        with self._session() as session:
            stmt_owners = select(DagModel.dag_id, DagModel.owners).where(
                DagModel.dag_id.in_(wanted)
            )
            owners = {dag_id: raw for dag_id, raw in session.execute(stmt_owners)}
            tags: dict[str, list[str]] = {}
            stmt = select(DagTag.dag_id, DagTag.name).where(DagTag.dag_id.in_(wanted))
            for dag_id, name in session.execute(stmt.order_by(DagTag.dag_id, DagTag.name)):
                tags.setdefault(dag_id, []).append(name)
            tasks = self._task_owners(session, sorted(set(with_tasks) & set(owners)))
        return {
            dag_id: DagFacts(
                dag_id,
                split_owners(raw),
                tuple(tags.get(dag_id, ())),
                tasks.get(dag_id, {}),
            )
            for dag_id, raw in owners.items()
        }

    def tagged(self, tag: str) -> list[str]:
        from airflow.models.dag import DagModel, DagTag

        stmt = (
            select(DagTag.dag_id)
            .join(DagModel, DagModel.dag_id == DagTag.dag_id)
            .where(DagTag.name == tag, DagModel.is_stale.is_(False))
            .order_by(DagTag.dag_id)
        )
        with self._session() as session:
            return list(session.scalars(stmt))

    def _task_owners(self, session: Session, dag_ids: list[str]) -> dict[str, dict[str, str]]:
        """Task owners of each DAG's newest serialized version; one statement, then the cache."""
        from airflow.models.serialized_dag import SerializedDagModel as SDM

        if not dag_ids:
            return {}
        newest = (
            select(SDM.dag_id, func.max(SDM.created_at).label("created_at"))
            .where(SDM.dag_id.in_(dag_ids))
            .group_by(SDM.dag_id)
            .subquery()
        )
        heads = session.execute(
            select(SDM.dag_id, SDM.dag_hash, SDM.id).join(
                newest,
                (SDM.dag_id == newest.c.dag_id) & (SDM.created_at == newest.c.created_at),
            )
        ).all()
        with self._lock:
            missing = [h for h in heads if (h.dag_id, h.dag_hash) not in self._tasks_by_hash]
        if missing:
            models = session.scalars(select(SDM).where(SDM.id.in_([h.id for h in missing])))
            read = {(m.dag_id, m.dag_hash): _owners_of(m.data) for m in models}
            with self._lock:
                if len(self._tasks_by_hash) + len(read) > _CACHE_SIZE:
                    self._tasks_by_hash.clear()
                self._tasks_by_hash.update(read)
        with self._lock:
            return {h.dag_id: self._tasks_by_hash.get((h.dag_id, h.dag_hash), {}) for h in heads}


def _owners_of(data: Any) -> dict[str, str]:
    if not isinstance(data, Mapping):
        return {}
    return dict(owner_sources(data).task_owners)


def _airflow_session() -> AbstractContextManager[Session]:
    from airflow.utils.session import create_session

    return create_session()
