"""Response models of the dashboard's data routes (the contract in docs and OpenAPI)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from airflow_bkci.api.query_schemas import BuildSummary
from airflow_bkci.model.status import BuildStatus

IsoTime = str


class Outcomes(BaseModel):
    builds: int = Field(description="Builds due in the window")
    finished: int = Field(description="Of them, builds that ended")
    succeeded: int
    failed: int
    canceled: int
    success_rate: float | None = Field(description="succeeded / finished; null with none")
    duration_p50_ms: int | None = Field(description="Nearest-rank p50 of finished builds")
    duration_p95_ms: int | None


class TrendPoint(BaseModel):
    build_id: str
    build_num: int
    status: BuildStatus
    duration_ms: int | None
    ended_at: IsoTime | None


class LastFailure(BaseModel):
    build_id: str
    build_num: int
    ended_at: IsoTime | None
    owners: list[str] = Field(
        description="Owners of the tasks whose own failure ended the build, else the DAG's"
    )
    triggering_user: str | None
    task: str | None = Field(description="Node id of the first task to fail on its own")


class Tile(BaseModel):
    dag_id: str
    owners: list[str]
    tags: list[str]
    editable: bool = Field(description="The viewer may change the DAG (cancel its builds)")
    latest: BuildSummary | None
    latest_document: dict[str, Any] | None = Field(
        description="The newest build's document, with its sequence"
    )
    stats: Outcomes
    trend: list[TrendPoint] = Field(description="Newest finished builds, oldest first")
    last_failure: LastFailure | None


class Missing(BaseModel):
    dag_id: str
    reason: Literal["unknown"] = Field(
        description="Unknown or not readable: the two look alike, so existence is not revealed"
    )


class Window(BaseModel):
    since: IsoTime
    until: IsoTime


class Wall(BaseModel):
    source: Literal["url", "tag", "config", "config_tag", "all"]
    window: Window
    tiles: list[Tile]
    missing: list[Missing]


class Pipeline(BaseModel):
    dag_id: str
    owners: list[str]
    tags: list[str]
    editable: bool
    links: dict[str, str] = Field(description="Airflow UI paths, relative to airflow_root")


class SeriesPoint(Outcomes):
    start: IsoTime


class Series(BaseModel):
    bucket: Literal["hour", "day"]
    points: list[SeriesPoint]


class TaskLinks(BaseModel):
    task: str
    log: str


class BuildLinks(BaseModel):
    grid: str
    run: str
    tasks: dict[str, TaskLinks]


class BuildView(BaseModel):
    document: dict[str, Any]
    sequence: int
    editable: bool
    links: BuildLinks


class TransitionRow(BaseModel):
    node: str = Field(description="Node id; '' is the build itself")
    from_: BuildStatus | None = Field(alias="from", serialization_alias="from")
    to: BuildStatus
    from_status: BuildStatus | None
    to_status: BuildStatus
    airflow_state: str | None
    detail: str | None
    clear_number: int
    try_number: int
    at: IsoTime
    recorded_at: IsoTime
    source: str
    decision: str
    stale: bool


class Transitions(BaseModel):
    transitions: list[TransitionRow] = Field(description="Newest first")


class Me(BaseModel):
    user: str
