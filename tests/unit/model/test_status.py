"""Predicates and ranks of the BK-CI statuses."""

from __future__ import annotations

import pytest

from airflow_bkci.model.status import STATUS_RANK, BuildStatus, Rank

S = BuildStatus

# status: (is_finished, is_success, is_failure, is_cancel, is_running, is_waiting)
PREDICATES = {
    S.QUEUE: (False, False, False, False, False, True),
    S.PREPARE_ENV: (False, False, False, False, True, False),
    S.RUNNING: (False, False, False, False, True, False),
    S.REVIEWING: (False, False, False, False, True, False),
    S.RETRY: (True, False, False, False, False, True),
    S.SUCCEED: (True, True, False, False, False, False),
    S.FAILED: (True, False, True, False, False, False),
    S.CANCELED: (True, False, False, True, False, False),
    S.SKIP: (True, True, False, False, False, False),
    S.UNEXEC: (True, False, True, False, False, False),
}

RANKS = {
    S.QUEUE: Rank.SCHEDULED,
    S.PREPARE_ENV: Rank.QUEUED,
    S.RUNNING: Rank.RUNNING,
    S.REVIEWING: Rank.RUNNING,
    S.RETRY: Rank.FINISHED,
    S.SUCCEED: Rank.FINISHED,
    S.FAILED: Rank.FINISHED,
    S.CANCELED: Rank.CANCELED,
    S.SKIP: Rank.FINISHED,
    S.UNEXEC: Rank.FINISHED,
}


def test_every_status_has_a_row() -> None:
    assert set(PREDICATES) == set(BuildStatus)
    assert set(STATUS_RANK) == set(BuildStatus)


@pytest.mark.parametrize("status", list(BuildStatus), ids=lambda s: s.value)
def test_predicates(status: BuildStatus) -> None:
    got = (
        status.is_finished,
        status.is_success,
        status.is_failure,
        status.is_cancel,
        status.is_running,
        status.is_waiting,
    )
    assert got == PREDICATES[status]


@pytest.mark.parametrize("status", list(BuildStatus), ids=lambda s: s.value)
def test_rank(status: BuildStatus) -> None:
    assert STATUS_RANK[status] is RANKS[status]


@pytest.mark.parametrize("status", list(BuildStatus), ids=lambda s: s.value)
def test_outcome_predicates_are_exclusive(status: BuildStatus) -> None:
    outcomes = [status.is_success, status.is_failure, status.is_cancel]
    assert sum(outcomes) <= 1
    # a success, failure or cancel is final; a finished status that is none of
    # them (RETRY) leaves the node waiting for its next try
    assert (any(outcomes)) == (status.is_finished and not status.is_waiting)
    assert not (status.is_running and status.is_finished)


def test_values_are_the_bkci_names() -> None:
    assert {s.value for s in BuildStatus} == {s.name for s in BuildStatus}
    assert BuildStatus("SUCCEED") is S.SUCCEED


def test_rank_order_follows_a_try() -> None:
    assert (
        Rank.PENDING < Rank.SCHEDULED < Rank.QUEUED < Rank.RUNNING < Rank.FINISHED < Rank.CANCELED
    )
