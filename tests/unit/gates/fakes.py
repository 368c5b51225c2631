"""Plain build data for gate tests, and readers over it that behave as the query API does."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from airflow_bkci.gates.builds import BuildQuery, BuildSummary, Snapshot
from airflow_bkci.gates.errors import (
    BuildNotFound,
    GateError,
    PipelineAccessDenied,
    PipelineNotFound,
)
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.model.tree import stage_status

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(hours=1)
PIPELINE = "build"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def summary(
    num: int,
    status: str,
    *,
    pipeline: str = PIPELINE,
    minute: float | None = None,
    duration_s: float | None = None,
    **extra: Any,
) -> BuildSummary:
    """Build ``num`` of the pipeline, due ``minute`` minutes after T0 (default: ``num``)."""
    due = at(num if minute is None else minute)
    ended = due + timedelta(seconds=duration_s) if duration_s is not None else None
    data: dict[str, Any] = {
        "id": f"b-{pipeline}-{num}",
        "pipeline_id": pipeline,
        "run_id": f"manual__{due.isoformat()}",
        "build_num": num,
        "status": status,
        "trigger_type": "ui",
        "triggering_user": "alice",
        "run_after": due.isoformat(),
        "queued_at": due.isoformat(),
        "started_at": due.isoformat(),
        "ended_at": ended.isoformat() if ended else None,
        "duration_ms": int(duration_s * 1000) if duration_s is not None else None,
        "updated_at": due.isoformat(),
        "sequence": 3,
        **extra,
    }
    return cast(BuildSummary, data)


def tree(status: str, stages: Mapping[str, Mapping[str, str]], **build: Any) -> dict[str, Any]:
    """A build document: ``{"stage": {"task_id" or "task[i]": status}}``, as model/tree.py makes."""
    doc_stages = {}
    for order, (stage_id, tasks) in enumerate(stages.items()):
        docs = {}
        for node_id, task_status in tasks.items():
            task_id, _, index = node_id.partition("[")
            docs[node_id] = {
                "id": node_id,
                "task_id": task_id,
                "map_index": int(index.rstrip("]")) if index else -1,
                "status": task_status,
            }
        statuses = [BuildStatus(t["status"]) for t in docs.values()]
        doc_stages[stage_id] = {
            "id": stage_id,
            "name": stage_id,
            "order": order,
            "status": stage_status(statuses).value,
            "tasks": docs,
        }
    return {"status": status, "run_type": "manual", "stages": doc_stages, **build}


class FakeReader:
    """Builds newest first by run_after, filtered as the query API and ``BuildQuery.matches``.

    A summary's ``conf`` is the run's conf as the status store keeps it: the
    fake filters on it as the server does and, as the API, never returns it.
    """

    def __init__(
        self,
        builds: list[BuildSummary] | None = None,
        documents: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        denied: set[str] | None = None,
        failure: GateError | None = None,
    ) -> None:
        self.confs = {b["id"]: cast(Any, b).get("conf") for b in builds or []}
        self._builds = [
            cast(BuildSummary, {k: v for k, v in b.items() if k != "conf"}) for b in builds or []
        ]
        self.documents = dict(documents or {})
        self.denied = denied or set()
        self.failure = failure
        self.queries: list[BuildQuery] = []

    def pipelines(self) -> list[str]:
        return sorted({b["pipeline_id"] for b in self._builds} - self.denied)

    def builds(self, query: BuildQuery) -> list[BuildSummary]:
        self.queries.append(query)
        if self.failure is not None:
            raise self.failure
        if query.pipeline in self.denied:
            raise PipelineAccessDenied(query.pipeline, 403, "you may not read it")
        mine = [b for b in self._builds if b["pipeline_id"] == query.pipeline]
        if not mine:
            raise PipelineNotFound(query.pipeline)
        mine.sort(key=lambda b: (b["run_after"], b["build_num"]), reverse=True)
        if query.conf:  # the server's filter, on the store's conf column
            mine = [b for b in mine if query.conf_holds(self.confs.get(b["id"]))]
        found = [b for b in mine if query.matches(b, self.documents.get(b["id"]))]
        return found[: query.limit] if query.limit is not None else found

    def snapshot(self, build_id: str) -> Snapshot:
        if build_id not in self.documents:
            raise BuildNotFound(build_id)
        pipeline = build_id.split("-")[1]
        return {
            "build_id": build_id,
            "pipeline_id": pipeline,
            "sequence": 3,
            "document": dict(self.documents[build_id]),
        }


class AsyncFakeReader:
    """The same data, read with ``await``."""

    def __init__(self, reader: FakeReader) -> None:
        self.reader = reader

    async def pipelines(self) -> list[str]:
        return self.reader.pipelines()

    async def builds(self, query: BuildQuery) -> list[BuildSummary]:
        return self.reader.builds(query)

    async def snapshot(self, build_id: str) -> Snapshot:
        return self.reader.snapshot(build_id)
