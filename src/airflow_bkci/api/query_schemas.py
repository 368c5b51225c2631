"""Response models of the query routes: pipelines, builds, history, metrics, delivery health.

Times are ISO 8601 strings in UTC, as in the build document, so a summary
and the document it summarises spell a time the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from airflow_bkci.model.status import BuildStatus

IsoTime = str


class BuildSummary(BaseModel):
    """One build as lists show it: the indexed columns, never the whole document."""

    id: str = Field(description="The build id (b-…); GET /v1/builds/{id} gives its tree")
    pipeline_id: str = Field(description="The DAG id")
    run_id: str
    build_num: int = Field(description="Number of the build in its pipeline, from 1")
    status: BuildStatus
    trigger_type: str | None = Field(
        description="How the run was triggered (Airflow's triggered_by: ui, rest_api, cli, "
        "timetable, asset, backfill, operator, test)"
    )
    triggering_user: str | None = Field(description="Who triggered it, when Airflow knows")
    run_after: IsoTime = Field(
        description="When the run was due (Airflow's run_after); the list's order"
    )
    queued_at: IsoTime | None
    started_at: IsoTime | None
    ended_at: IsoTime | None
    duration_ms: int | None = Field(description="ended_at - started_at, once the build ended")
    updated_at: IsoTime = Field(description="When the status store last changed the build")
    sequence: int = Field(description="Sequence of the build's latest change set")


class BuildPage(BaseModel):
    """One page of a pipeline's builds, newest first."""

    pipeline_id: str
    builds: list[BuildSummary]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= with the same filters for the next page; null on the last"
    )
    conf: dict[str, str] = Field(
        default_factory=dict,
        description="The conf.<key>=<value> filters applied, by key ({} without): a client "
        "can tell that the server filtered, since builds never show their conf",
    )


class PipelineSummary(BaseModel):
    pipeline_id: str = Field(description="The DAG id")
    builds: int = Field(description="Builds the status store has numbered for it")
    created_at: IsoTime = Field(description="When the store saw its first build")
    latest_build: BuildSummary | None = Field(description="Its newest build by run_after")


class PipelinePage(BaseModel):
    """Pipelines the caller may read, by DAG id."""

    pipelines: list[PipelineSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page")


class Snapshot(BaseModel):
    """A build's document and the sequence of the change set that made it, read together."""

    build_id: str
    pipeline_id: str
    sequence: int = Field(description="Apply change sets after this one to stay current")
    document: dict[str, Any] = Field(description="The build tree: build, stages, tasks")


class ChangeSet(BaseModel):
    sequence: int
    patch: list[dict[str, Any]] = Field(description="RFC 6902 JSON Patch from sequence - 1")
    created_at: IsoTime


class ChangePage(BaseModel):
    """Change sets after ``after``, in order, up to the build's sequence when read."""

    build_id: str
    pipeline_id: str
    after: int
    sequence: int = Field(description="The build's current sequence")
    changes: list[ChangeSet]
    next_after: int | None = Field(
        description="More change sets follow: ask again with ?after= this; null when current"
    )


class TransitionEntry(BaseModel):
    """One status the node entered, as history keeps it."""

    from_status: BuildStatus | None = Field(description="The status before, in event order")
    to_status: BuildStatus
    airflow_state: str | None
    detail: str | None
    clear_number: int
    try_number: int
    at: IsoTime = Field(description="When it happened (Airflow's time when Airflow reported it)")
    recorded_at: IsoTime = Field(description="When the status store recorded it")
    source: str = Field(description="Who reported it: db@host (Airflow's database) or a process")
    decision: str = Field(description="What the store made of the report (create, advance, …)")
    stale: bool = Field(description="Arrived after a later status: history only")


class NodeHistory(BaseModel):
    build_id: str
    pipeline_id: str
    node_id: str = Field(description="'' for the build itself, else task_id or task_id[i]")
    transitions: list[TransitionEntry]


class Spread(BaseModel):
    count: int = Field(description="Builds that have this figure")
    p50: float | None = Field(description="Nearest-rank median, milliseconds")
    p95: float | None = Field(description="Nearest-rank 95th percentile, milliseconds")


class FailingTask(BaseModel):
    task_id: str
    failed_builds: int = Field(description="Builds of the window in which it ended FAILED")
    last_failed_build_num: int


class PipelineMetrics(BaseModel):
    """Builds due (run_after) in [since, until)."""

    pipeline_id: str
    since: IsoTime
    until: IsoTime
    builds: int
    finished: int = Field(description="Builds that ended: SUCCEED, FAILED, CANCELED, …")
    unfinished: int = Field(description="Builds still queued or running")
    success_rate: float | None = Field(
        description="SUCCEED / finished (canceled builds count as not successful); "
        "null when none finished"
    )
    by_status: dict[str, int] = Field(description="Finished builds by final status")
    duration_ms: Spread = Field(description="started_at to ended_at of finished builds")
    queue_ms: Spread = Field(
        description="queued_at to started_at of the run (Airflow's DagRun times): how long "
        "a triggered run waited to start, e.g. behind max_active_runs"
    )
    failing_tasks: list[FailingTask] = Field(description="Most failing first")


class Circuit(BaseModel):
    state: Literal["closed", "open", "half_open"] = Field(
        description="closed: sending; open: not trying until open_until; half_open: trying "
        "one lane to see whether the endpoint is back"
    )
    failures: int = Field(description="Failed sends in a row")
    open_until: IsoTime | None
    owner: str | None = Field(description="The dispatcher (host:pid:…) that last changed it")
    changed_at: IsoTime | None


class EndpointHealth(BaseModel):
    endpoint: str = Field(description="The channel's Airflow connection id")
    pending_lanes: int = Field(description="Builds with change sets the endpoint lacks")
    oldest_pending_s: float | None = Field(
        description="Age of the oldest change set the endpoint has not acknowledged"
    )
    dead_letters: int = Field(description="Dead letters not replayed yet")
    retrying_lanes: int = Field(description="Builds backing off after a failed send")
    last_error: str | None
    gone: str | None = Field(description="Why delivery is stopped (410 Gone), else null")
    circuit: Circuit


class DeliveryHealth(BaseModel):
    endpoints: list[EndpointHealth]


class Problem(BaseModel):
    message: str = Field(description="What is wrong and how to fix it")
    problems: list[str]


class ProblemAnswer(BaseModel):
    """A 4xx answer (nothing changed), or a 503 (retry after Retry-After)."""

    detail: Problem


class Forbidden(BaseModel):
    message: str
    dags: list[str] = Field(description="The DAGs the caller may not read")


class ForbiddenAnswer(BaseModel):
    detail: Forbidden
