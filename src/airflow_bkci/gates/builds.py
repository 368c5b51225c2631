"""What a gate reads: build summaries and snapshots as the query API returns them, and readers.

The shapes are the JSON of ``GET /bkci/v1/pipelines/{dag_id}/builds`` (a build
summary) and ``GET /bkci/v1/builds/{build_id}`` (a snapshot), so a reader over
the REST API hands them through; a test keeps them equal to the API's models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypedDict

from airflow_bkci.gates.errors import GateReadError
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.model.tree import UNGROUPED_STAGE, stage_status

__all__ = [
    "AsyncBuildReader",
    "BuildQuery",
    "BuildReader",
    "BuildSummary",
    "NodeHit",
    "Snapshot",
    "find_node",
    "node_ids",
]


class BuildSummary(TypedDict):
    """One build as the query API lists it (``BuildSummary`` in api/query_schemas.py)."""

    id: str
    pipeline_id: str
    run_id: str
    build_num: int
    status: str
    trigger_type: str | None
    triggering_user: str | None
    run_after: str
    queued_at: str | None
    started_at: str | None
    ended_at: str | None
    duration_ms: int | None
    updated_at: str
    sequence: int


class Snapshot(TypedDict):
    """A build's tree and its sequence (``Snapshot`` in api/query_schemas.py)."""

    build_id: str
    pipeline_id: str
    sequence: int
    document: dict[str, Any]


@dataclass(frozen=True)
class BuildQuery:
    """Which builds of a pipeline to read, newest first (by run_after, then build number).

    ``since`` and ``statuses`` are the query API's own filters; ``run_type`` and
    ``conf`` are not among them yet, so a reader matches them against each
    build's summary or document (:meth:`matches`). ``limit`` None means every
    matching build.
    """

    pipeline: str
    since: datetime | None = None
    statuses: tuple[BuildStatus, ...] = ()
    run_type: str | None = None
    conf: Mapping[str, Any] = field(default_factory=dict, hash=False)
    limit: int | None = None

    @property
    def filters_documents(self) -> bool:
        """True when a build's summary may not say whether it matches: read its document."""
        return self.run_type is not None or bool(self.conf)

    def matches(self, build: Mapping[str, Any], document: Mapping[str, Any] | None = None) -> bool:
        """Whether the build passes every filter, from its summary and (if given) document.

        Raises :class:`GateReadError` when neither tells a filtered field: a
        filter the reader cannot apply must not be dropped silently.
        """
        if self.statuses and build.get("status") not in {s.value for s in self.statuses}:
            return False
        if self.since is not None and datetime.fromisoformat(build["run_after"]) < self.since:
            return False
        if self.run_type is not None and self._field("run_type", build, document) != self.run_type:
            return False
        if self.conf:
            conf = self._field("conf", build, document)
            if not isinstance(conf, Mapping):
                return False
            return all(key in conf and conf[key] == value for key, value in self.conf.items())
        return True

    def _field(
        self, name: str, build: Mapping[str, Any], document: Mapping[str, Any] | None
    ) -> Any:
        for source in (build, document or {}):
            if name in source:
                return source[name]
        raise GateReadError(
            f"builds of {self.pipeline!r} do not say their {name}, so the rule's {name} filter "
            f"cannot be applied: the status store does not keep a run's {name} yet; remove the "
            f"{name} filter (window and run_type work), or upgrade airflow-bkci once its query "
            f"API returns {name}"
        )


class BuildReader(Protocol):
    """The reads a gate needs; :class:`airflow_bkci.gates.reader.RestBuildReader` is one."""

    def pipelines(self) -> list[str]:
        """The pipelines (DAG ids) the reader's user may read that have builds."""
        ...

    def builds(self, query: BuildQuery) -> list[BuildSummary]:
        """The pipeline's builds that match ``query``, newest first, at most ``query.limit``.

        Raises PipelineNotFound, PipelineAccessDenied, ReadUnavailable (gates.errors).
        """
        ...

    def snapshot(self, build_id: str) -> Snapshot:
        """One build's tree. Raises BuildNotFound, PipelineAccessDenied, ReadUnavailable."""
        ...


class AsyncBuildReader(Protocol):
    """:class:`BuildReader` for asyncio (a deferred gate's trigger runs in the triggerer's loop)."""

    async def pipelines(self) -> list[str]: ...

    async def builds(self, query: BuildQuery) -> list[BuildSummary]: ...

    async def snapshot(self, build_id: str) -> Snapshot: ...


# ------------------------------------------------------------ nodes of a tree
@dataclass(frozen=True)
class NodeHit:
    """A stage, task group or task of a build tree that a rule named, and its status.

    ``kind`` says what the name was: a stage (a top-level task group), a
    nested task group (``outer.inner``), a task, a mapped task as a whole
    (``t``: all its instances) or one mapped instance (``t[2]``).
    """

    name: str
    kind: Literal["stage", "group", "task", "mapped", "instance"]
    status: BuildStatus
    task_id: str | None = None
    map_index: int | None = None


def _tasks(document: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    stages = document.get("stages") or {}
    return {tid: t for s in stages.values() for tid, t in (s.get("tasks") or {}).items()}


def find_node(document: Mapping[str, Any], name: str) -> NodeHit | None:
    """The stage, group or task ``name`` in the build tree, None when the build has none."""
    stages = document.get("stages") or {}
    if name in stages:
        return NodeHit(name, "stage", BuildStatus(stages[name]["status"]))
    tasks = _tasks(document)
    if name in tasks:
        task = tasks[name]
        index = int(task.get("map_index", -1))
        return NodeHit(
            name,
            "instance" if index >= 0 else "task",
            BuildStatus(task["status"]),
            task_id=str(task.get("task_id", name)),
            map_index=index if index >= 0 else None,
        )
    mapped = [t for t in tasks.values() if t.get("task_id") == name]
    if mapped:
        status = stage_status(BuildStatus(t["status"]) for t in mapped)
        return NodeHit(name, "mapped", status, task_id=name)
    members = [t for tid, t in tasks.items() if tid.startswith(name + ".")]
    if members:
        return NodeHit(name, "group", stage_status(BuildStatus(t["status"]) for t in members))
    return None


def node_ids(document: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The build's stage ids and task ids (mapped tasks by task_id), each sorted."""
    stages = sorted(s for s in (document.get("stages") or {}) if s != UNGROUPED_STAGE)
    tasks = sorted({str(t.get("task_id", tid)) for tid, t in _tasks(document).items()})
    return stages, tasks


def names_in(document: Mapping[str, Any]) -> Iterable[str]:
    """Every name :func:`find_node` resolves in this tree (for "did you mean")."""
    stages, tasks = node_ids(document)
    parts = [tid.split(".") for tid in tasks]
    groups = {".".join(p[:i]) for p in parts for i in range(1, len(p))}
    return [*stages, *sorted(groups - set(stages)), *tasks]
