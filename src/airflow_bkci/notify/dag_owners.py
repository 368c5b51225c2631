"""Who owns a DAG's tasks, as Airflow knows it: task owners and ``owner_links``, per DAG version.

Both come from the serialized DAG of the version the run was created with:
each task's ``owner`` (``partial_kwargs.owner`` for a mapped task) and the
DAG's ``owner_links``. Airflow's ``dag_owner_attributes`` table holds the
same links, but only for the latest version of the DAG, so a run of an older
version would get the new owners. The serializer leaves out an owner equal
to ``[operators] default_owner`` (``airflow``): such a task has that owner.

The reader runs where the dispatcher runs (scheduler, API server), on an
engine of its own, never on the scheduler's session.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from airflow_bkci.forksafe import sqlite_section
from airflow_bkci.notify.routing import AIRFLOW_DEFAULT_OWNER, OwnerSources

__all__ = ["DagOwnerReader", "owner_sources"]

log = logging.getLogger(__name__)

_CACHE_SIZE = 256


def owner_sources(
    data: Mapping[str, Any], default_owner: str = AIRFLOW_DEFAULT_OWNER
) -> OwnerSources:
    """The owners a serialized DAG (``SerializedDagModel.data``) names."""
    dag = data.get("dag") or {}
    owners: dict[str, str] = {}
    for entry in dag.get("tasks") or ():
        task = entry.get("__var", entry) if isinstance(entry, Mapping) else {}
        task_id = task.get("task_id")
        if not task_id:
            continue
        partial = task.get("partial_kwargs")
        owner = task.get("owner") or (partial or {}).get("owner")  # partial: a mapped task
        owners[str(task_id)] = str(owner or default_owner)
    links = dag.get("owner_links")
    return OwnerSources(
        task_owners=owners,
        owner_links={str(k): str(v) for k, v in (links or {}).items()},
        default_owner=default_owner,
    )


class DagOwnerReader:
    """:class:`OwnerSources` of a build's DAG version, read from Airflow's database and cached."""

    def __init__(self, engine: Engine, default_owner: str = AIRFLOW_DEFAULT_OWNER) -> None:
        self.engine = engine
        self.default_owner = default_owner
        self._guard = sqlite_section(engine.url)
        self._by_version: dict[str, OwnerSources] = {}

    @classmethod
    def from_airflow(cls) -> DagOwnerReader:
        from airflow import settings
        from airflow.configuration import conf

        if settings.engine is None:
            raise RuntimeError(
                "Airflow's database is not configured in this process: notifications need it "
                "for task owners; run the dispatcher in the scheduler or the API server"
            )
        engine = create_engine(settings.engine.url, pool_size=1, max_overflow=1, pool_pre_ping=True)
        default = conf.get("operators", "default_owner", fallback="") or AIRFLOW_DEFAULT_OWNER
        return cls(engine, str(default))

    def sources(self, dag_id: str, run_id: str) -> OwnerSources:
        """Owners of the DAG version the run was created with (the latest if it has none)."""
        from airflow.models.dagrun import DagRun
        from airflow.models.serialized_dag import SerializedDagModel as SDM

        with self._guard, Session(self.engine) as session:
            version = session.scalar(
                select(DagRun.created_dag_version_id).where(
                    DagRun.dag_id == dag_id, DagRun.run_id == run_id
                )
            )
            key = str(version) if version is not None else None
            cached = self._by_version.get(key) if key is not None else None
            if cached is not None:
                return cached
            stmt = select(SDM)
            if version is not None:
                stmt = stmt.where(SDM.dag_version_id == version)
            else:
                stmt = stmt.where(SDM.dag_id == dag_id).order_by(SDM.created_at.desc()).limit(1)
            model = session.scalar(stmt)
            data = model.data if model is not None else None
        if not isinstance(data, Mapping):
            log.warning(
                "bkci notify: no serialized DAG for %s run %s; its task owners are unknown",
                dag_id,
                run_id,
            )
            return OwnerSources(default_owner=self.default_owner)
        found = owner_sources(data, self.default_owner)
        if key is not None:  # a run without a version reads the latest: never cached
            if len(self._by_version) >= _CACHE_SIZE:
                self._by_version.clear()
            self._by_version[key] = found
        return found

    def dispose(self) -> None:
        with self._guard:
            self.engine.dispose()
