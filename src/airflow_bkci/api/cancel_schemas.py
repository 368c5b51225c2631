"""Request and response models of the batch cancel routes (cancel builds, show a cancel)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

CancelableState = Literal["queued", "running"]
CANCELABLE: tuple[CancelableState, ...] = ("queued", "running")
MAX_FILTER_AGE_SECONDS = 10 * 366 * 24 * 3600.0
DagId = Annotated[str, StringConstraints(min_length=1, max_length=250)]
RunId = Annotated[str, StringConstraints(min_length=1, max_length=250)]
BuildId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _Strict(BaseModel):
    # A misspelt key must not be ignored: in a filter it would cancel more than meant.
    model_config = ConfigDict(extra="forbid")


class BuildRef(_Strict):
    """One build, named by its DAG run."""

    dag_id: DagId
    run_id: RunId


class CancelFilter(_Strict):
    """Every build that matches; each field narrows the set."""

    dag_ids: list[DagId] = Field(
        default_factory=list, description="Only runs of these DAGs; empty means every DAG"
    )
    states: list[CancelableState] = Field(
        default_factory=lambda: list(CANCELABLE), description="Only runs in these states"
    )
    older_than_seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_FILTER_AGE_SECONDS,
        allow_inf_nan=False,
        description="Only runs due (run_after) more than this many seconds ago",
    )
    due_before: AwareDatetime | None = Field(
        default=None,
        description="Only runs due (run_after) before this time: a run's earlier runs",
    )
    exclude: list[BuildRef] = Field(
        default_factory=list, max_length=1000, description="Never these builds"
    )
    conf: dict[str, Any] | None = Field(
        default=None, description="Only runs whose conf holds every one of these keys and values"
    )


class CancelBody(_Strict):
    """Exactly one of ``builds``, ``build_ids`` or ``filter``, and why."""

    builds: list[BuildRef] | None = Field(default=None, description="Builds by (dag_id, run_id)")
    build_ids: list[BuildId] | None = Field(
        default=None, description="Builds by BK-CI build id (b-…), as the status store knows them"
    )
    filter: CancelFilter | None = Field(default=None, description="Builds that match a filter")
    reason: str = Field(description="Why; kept in each run's note, the audit log and the marker")
    dry_run: bool = Field(
        default=False, description="Report exactly what would change, and change nothing"
    )
    chunked: bool = Field(
        default=False,
        description="Above [bkci] cancel_atomic_limit: cancel in atomic batches of that size",
    )

    @model_validator(mode="after")
    def _one_selector(self) -> CancelBody:
        given = [
            name for name in ("builds", "build_ids", "filter") if getattr(self, name) is not None
        ]
        if len(given) != 1:
            found = " and ".join(given) if given else "none of them"
            raise ValueError(f"give exactly one of 'builds', 'build_ids' or 'filter'; got {found}")
        return self


class BuildOutcome(BaseModel):
    """What the cancel did to one build."""

    build_id: str
    dag_id: str
    run_id: str
    outcome: Literal[
        "canceled", "canceled_teardown_running", "already_finished", "already_canceled"
    ]
    prior_state: str = Field(description="The run's state when the cancel locked it")
    state: str = Field(description="The run's state after the cancel")
    failed_tasks: list[str] = Field(description="Tasks killed: task_id, or task_id[map_index]")
    skipped_tasks: list[str] = Field(description="Tasks that had not started, now skipped")
    teardown_tasks: list[str] = Field(description="Teardown tasks left to run as the clean-up")


class RunRef(BaseModel):
    dag_id: str
    run_id: str


class CancelResponse(BaseModel):
    """The whole batch: one entry per distinct build, in lock order."""

    cancel_id: str = Field(description="Look it up later at GET /v1/cancels/{cancel_id}")
    dry_run: bool
    summary: dict[str, int] = Field(description="How many builds had each outcome")
    builds: list[BuildOutcome]
    duplicates: list[RunRef] = Field(description="Builds named more than once (counted once)")
    attempts: int = Field(description="Transactions tried (lock conflicts are retried)")
    batches: int = Field(description="Atomic batches committed (more than 1 only when chunked)")
    committed_at: str | None = Field(description="ISO time of the last commit; null on a dry run")
    seconds: float


class CanceledBuild(BaseModel):
    """One run a cancel changed, as its marker has it, and the run's state now."""

    build_id: str
    dag_id: str
    run_id: str
    prior_state: str = Field(description="The run's state when it was canceled")
    state: str | None = Field(description="The run's state now")
    cleared_since: bool = Field(description="The run was cleared after the cancel and runs again")
    canceled_at: str
    failed_tasks: list[str]
    skipped_tasks: list[str]


class CancelRecord(BaseModel):
    """What one cancel changed: kept with the runs, gone with them (``airflow db clean``)."""

    cancel_id: str
    reason: str
    canceled_by: str | None
    canceled_at: str = Field(description="ISO time of the (last) commit")
    builds: list[CanceledBuild]

    @property
    def dag_ids(self) -> list[str]:
        return sorted({b.dag_id for b in self.builds})


class Problem(BaseModel):
    message: str
    problems: list[str]


class ProblemAnswer(BaseModel):
    """A 400, 404 or 413 answer (nothing was canceled), or a 503 (retry after Retry-After)."""

    detail: Problem


class Forbidden(BaseModel):
    message: str
    dags: list[str] = Field(description="The DAGs the caller lacks the permission on, sorted")


class ForbiddenAnswer(BaseModel):
    """A 403 answer: nothing was canceled."""

    detail: Forbidden
