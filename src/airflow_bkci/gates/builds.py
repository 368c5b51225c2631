"""What a gate reads: build summaries and snapshots as the query API returns them, and readers.

The shapes are the JSON of ``GET /bkci/v1/pipelines/{dag_id}/builds`` (a build
summary) and ``GET /bkci/v1/builds/{build_id}`` (a snapshot), so a reader over
the REST API hands them through; a test keeps them equal to the API's models.
"""

from __future__ import annotations

import json
import re
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
    "conf_text",
    "conf_value_matches",
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


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def conf_text(value: Any) -> str:
    """A conf value as the query API's ``conf.<key>=<value>`` parameter spells it."""
    if isinstance(value, str):
        return value
    return json.dumps(value)  # true, false, 3, 0.5


def conf_value_matches(found: Any, wanted: str) -> bool:
    """The query API's conf match of one value (store/queries.py ``conf_matches``).

    A string equal to ``wanted``; a number equal to it as a number when it is
    a JSON number; a boolean when it is ``true`` or ``false``.
    """
    if isinstance(found, str):
        return found == wanted
    if isinstance(found, bool):
        return wanted == json.dumps(found)
    if isinstance(found, int | float) and _JSON_NUMBER.fullmatch(wanted):
        return bool(found == json.loads(wanted))
    return False


@dataclass(frozen=True)
class BuildQuery:
    """Which builds of a pipeline to read, newest first (by run_after, then build number).

    ``since``, ``statuses`` and ``conf`` are the query API's own filters (conf
    as ``conf.<key>=<value>``, see :func:`conf_text`); ``run_type`` is not
    among them, so a reader matches it against each build's document
    (:meth:`matches`). ``limit`` None means every matching build.
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
        return self.run_type is not None

    def conf_params(self) -> list[tuple[str, str]]:
        """The conf filter as the query API's parameters: ``conf.branch=main``."""
        return [(f"conf.{key}", conf_text(value)) for key, value in sorted(self.conf.items())]

    def matches(self, build: Mapping[str, Any], document: Mapping[str, Any] | None = None) -> bool:
        """Whether the build passes every filter, from its summary and (if given) document.

        The conf filter is the server's: summaries and documents do not carry
        a run's conf (it may be large or secret), so it is checked here only
        when one does. Raises :class:`GateReadError` when neither tells the
        run_type: a filter the reader cannot apply must not be dropped silently.
        """
        if self.statuses and build.get("status") not in {s.value for s in self.statuses}:
            return False
        if self.since is not None and datetime.fromisoformat(build["run_after"]) < self.since:
            return False
        if self.run_type is not None and self._field("run_type", build, document) != self.run_type:
            return False
        told = [s["conf"] for s in (build, document or {}) if "conf" in s]
        if self.conf and told:
            return self.conf_holds(told[0])
        return True

    def conf_holds(self, conf: Any) -> bool:
        """Whether a run's conf (None: none kept) has every key of the filter."""
        if not isinstance(conf, Mapping):
            return not self.conf
        return all(
            key in conf and conf_value_matches(conf[key], conf_text(value))
            for key, value in self.conf.items()
        )

    def _field(
        self, name: str, build: Mapping[str, Any], document: Mapping[str, Any] | None
    ) -> Any:
        for source in (build, document or {}):
            if name in source:
                return source[name]
        raise GateReadError(
            f"builds of {self.pipeline!r} do not say their {name}, so the rule's {name} filter "
            f"cannot be applied: the API server's airflow-bkci writes no {name} in build "
            f"documents; upgrade it, or remove the {name} filter (window and conf work)"
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
