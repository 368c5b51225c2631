"""Chunked mode: each batch is atomic; a failure part-way says exactly what committed."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine

from airflow_bkci.cancel import CancelRequest, CancelService, Outcome
from airflow_bkci.cancel.plan import Plan, Target
from airflow_bkci.cancel.request import BuildResult, CancelIncomplete

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def service_with(
    targets: list[Target], fail_on_batch: int | None
) -> tuple[CancelService, list[Any]]:
    svc = CancelService(create_engine("sqlite://"), atomic_limit=2, notify_listeners=False)
    batches: list[Any] = []

    def plan(request: CancelRequest) -> Plan:
        return Plan(request, targets, [], {})

    def transaction(plan: Plan, batch: list[Target], cancel_id: str) -> Any:
        batches.append([t.run_id for t in batch])
        if len(batches) == fail_on_batch:
            raise RuntimeError("connection lost")
        built = [
            BuildResult(t.dag_id, t.run_id, Outcome.CANCELED, "running", "failed") for t in batch
        ]
        return built, 1, NOW

    svc.plan = plan  # type: ignore[method-assign]
    svc._transaction = transaction  # type: ignore[method-assign]
    return svc, batches


TARGETS = [Target(i, "etl", f"r{i}", "running", 0) for i in range(1, 6)]


def test_batches_of_the_atomic_limit_in_id_order() -> None:
    svc, batches = service_with(TARGETS, fail_on_batch=None)
    result = svc.cancel(CancelRequest(reason="x", user="u", runs=[("etl", "r1")], chunked=True))
    assert batches == [["r1", "r2"], ["r3", "r4"], ["r5"]]
    assert (result.batches, result.attempts, len(result.changed)) == (3, 3, 5)


def test_a_failure_after_the_first_batch_reports_what_committed() -> None:
    svc, _ = service_with(TARGETS, fail_on_batch=2)
    with pytest.raises(CancelIncomplete) as stopped:
        svc.cancel(CancelRequest(reason="x", user="u", runs=[("etl", "r1")], chunked=True))
    assert [b.run_id for b in stopped.value.result.builds] == ["r1", "r2"]
    assert "stopped after 2 of 5 builds (1 atomic batches committed" in str(stopped.value)
    assert "connection lost" in str(stopped.value)


def test_a_failure_in_the_first_batch_is_the_error_itself() -> None:
    svc, _ = service_with(TARGETS, fail_on_batch=1)
    with pytest.raises(RuntimeError, match="connection lost"):
        svc.cancel(CancelRequest(reason="x", user="u", runs=[("etl", "r1")], chunked=True))
