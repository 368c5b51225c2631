"""Batch cancel of builds, all or nothing, and the marker that makes it CANCELED."""

from airflow_bkci.cancel.request import (
    BuildResult,
    CancelRejected,
    CancelRequest,
    CancelResult,
    Outcome,
    RunFilter,
)
from airflow_bkci.cancel.service import CancelService

__all__ = [
    "BuildResult",
    "CancelRejected",
    "CancelRequest",
    "CancelResult",
    "CancelService",
    "Outcome",
    "RunFilter",
]
