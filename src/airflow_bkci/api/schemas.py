"""Request and response models of the BK-CI API app."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RejectedItem(BaseModel):
    """One record of a batch that was refused for good; the sender quarantines it."""

    index: int = Field(description="Position of the record in the posted list")
    reason: str = Field(description="What is wrong with it, naming the field")


class IngestResponse(BaseModel):
    """Outcome of one ingest batch: every record not listed in ``rejected`` was taken."""

    accepted: int
    rejected: list[RejectedItem] = Field(default_factory=list)


class HealthResponse(BaseModel):
    status: str = "ok"
    store: str = Field(description="'ready' once the status store was opened, else 'not_opened'")
