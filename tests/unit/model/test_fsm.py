"""The state machine: transition table and what applying one event decides."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_bkci.exceptions import InvalidTransition
from airflow_bkci.model.event import NodeRef, StatusEvent
from airflow_bkci.model.fsm import ALLOWED, Decision, NodeState, apply, decide
from airflow_bkci.model.status import STATUS_RANK, BuildStatus, Rank

S = BuildStatus
D = Decision
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
_seq = itertools.count(1)


def ev(
    status: BuildStatus | None,
    *,
    try_number: int = 1,
    clear_number: int = 0,
    second: float = 0.0,
    source: str = "worker",
    seq: int | None = None,
    rank: Rank | None = None,
    detail: str | None = None,
    removed: bool = False,
    task_id: str | None = "t",
    **fields: Any,
) -> StatusEvent:
    """An event on one task of one run; ``second`` is the event time after T0."""
    return StatusEvent(
        node=NodeRef("dag", "run", task_id),
        status=status,
        clear_number=clear_number,
        try_number=try_number,
        source=source,
        seq=next(_seq) if seq is None else seq,
        at=T0 + timedelta(seconds=second),
        detail=detail,
        rank=rank,
        removed=removed,
        fields=fields,
    )


def fold(*events: StatusEvent) -> tuple[NodeState | None, list[Decision]]:
    state: NodeState | None = None
    decisions = []
    for event in events:
        state, decision = apply(state, event)
        decisions.append(decision)
    return state, decisions


def state_after(*events: StatusEvent) -> NodeState:
    state, _ = fold(*events)
    assert state is not None
    return state


def context(state: NodeState | None) -> dict[str, Any]:
    """The node's context fields, without the clear count every event records."""
    assert state is not None
    return {k: v for k, v in state.values().items() if k != "clear_number"}


# --- the transition table -------------------------------------------------

TERMINAL = {S.RETRY, S.SUCCEED, S.FAILED, S.CANCELED, S.SKIP, S.UNEXEC}
EXPECTED_ALLOWED = {
    S.QUEUE: {S.QUEUE, S.PREPARE_ENV, S.RUNNING, S.REVIEWING} | TERMINAL,
    S.PREPARE_ENV: {S.PREPARE_ENV, S.RUNNING, S.REVIEWING} | TERMINAL,
    S.RUNNING: {S.RUNNING, S.REVIEWING} | TERMINAL,
    S.REVIEWING: {S.RUNNING, S.REVIEWING} | TERMINAL,
    **{s: TERMINAL for s in TERMINAL},
}


def test_transition_table() -> None:
    assert set(ALLOWED) == set(BuildStatus)
    assert {s: set(targets) for s, targets in ALLOWED.items()} == EXPECTED_ALLOWED


@pytest.mark.parametrize("src", list(BuildStatus), ids=lambda s: s.value)
def test_no_allowed_step_goes_down_in_rank(src: BuildStatus) -> None:
    # the table and the ranks agree: an event the key orders after the current
    # one is never refused unless its rank was set against its status
    for dst in ALLOWED[src]:
        assert STATUS_RANK[dst] >= STATUS_RANK[src] or dst in TERMINAL
    higher = {d for d in BuildStatus if STATUS_RANK[d] >= STATUS_RANK[src]}
    assert higher <= ALLOWED[src]


@pytest.mark.parametrize(
    ("src", "dst"),
    [(a, b) for a in BuildStatus for b in BuildStatus],
    ids=lambda s: s.value,
)
def test_table_drives_same_try_decisions(src: BuildStatus, dst: BuildStatus) -> None:
    # force both events to the same rank so only the table decides
    current = state_after(ev(src, rank=Rank.RUNNING, second=1))
    event = ev(dst, rank=Rank.RUNNING, second=2)
    if dst in ALLOWED[src]:
        expected = D.OVERRIDE if src.is_finished else D.ADVANCE
        assert decide(current, event) is expected
        new, decision = apply(current, event)
        assert decision is expected
        assert new is not None and new.status is dst
    else:
        with pytest.raises(InvalidTransition) as info:
            decide(current, event)
        assert (info.value.node, info.value.current, info.value.new) == ("t", src.value, dst.value)


# --- decisions on hand-made examples --------------------------------------


def test_create() -> None:
    event = ev(S.QUEUE, rank=Rank.PENDING, detail="pending", operator="BashOperator")
    state, decision = apply(None, event)
    assert decision is D.CREATE
    assert state is not None
    assert (state.status, state.key, state.detail, state.removed) == (
        S.QUEUE,
        event.key,
        "pending",
        False,
    )
    assert state.fields["operator"] == ("BashOperator", event.key)
    assert context(state) == {"operator": "BashOperator"}


def test_advance_through_a_try() -> None:
    state, decisions = fold(
        ev(S.QUEUE, second=1),
        ev(S.PREPARE_ENV, second=2),
        ev(S.RUNNING, second=3),
        ev(S.RUNNING, second=4, detail="deferred"),
        ev(S.RUNNING, second=5, detail="resuming"),
        ev(S.REVIEWING, second=6),
        ev(S.RUNNING, second=7),
        ev(S.SUCCEED, second=8),
    )
    assert decisions == [D.CREATE] + [D.ADVANCE] * 7
    assert state is not None and state.status is S.SUCCEED


def test_duplicate_changes_nothing() -> None:
    first = ev(S.RUNNING, host="h1")
    state = state_after(first)
    again, decision = apply(state, first)
    assert decision is D.DUPLICATE
    assert again is state


def test_stale_status_changes_nothing_but_history() -> None:
    queued = ev(S.PREPARE_ENV, second=1, queue="default")
    running = ev(S.RUNNING, second=2, host="h1")
    state = state_after(running)
    after, decision = apply(state, queued)
    assert decision is D.STALE
    assert after is not None
    assert (after.status, after.key, after.detail) == (S.RUNNING, running.key, None)
    # context of the same try still counts, whatever order it came in
    assert context(after) == {"host": "h1", "queue": "default"}


def test_terminal_is_final_within_a_try() -> None:
    running = ev(S.RUNNING, second=1, source="worker", host="h1")
    succeed = ev(S.SUCCEED, second=2, source="worker", ended_at="2025-01-01T00:00:02+00:00")
    done = state_after(running, succeed)
    # a RUNNING of the same try from a host whose clock is ahead is still STALE
    late = ev(S.RUNNING, second=40, source="scheduler", detail="deferred")
    after, decision = apply(done, late)
    assert decision is D.STALE
    assert after == done
    assert after is not None and after.status is S.SUCCEED and after.key == succeed.key


def test_override_of_a_finished_try() -> None:
    failed = ev(S.FAILED, second=1, error="boom")
    marked = ev(S.SUCCEED, second=5, source="api", triggering_user="alice")
    state, decisions = fold(failed, marked)
    assert decisions == [D.CREATE, D.OVERRIDE]
    assert state is not None and state.status is S.SUCCEED
    assert context(state)["error"] == "boom"  # same try: context stays


def test_new_try_reopens_and_drops_per_try_fields() -> None:
    state, decisions = fold(
        ev(S.RUNNING, try_number=1, second=1, host="h1", operator="BashOperator", stage="g"),
        ev(S.RETRY, try_number=1, second=2, error="boom"),
        ev(S.QUEUE, try_number=2, second=3, queue="default"),
    )
    assert decisions == [D.CREATE, D.ADVANCE, D.REOPEN]
    assert state is not None
    assert (state.status, state.key.try_number) == (S.QUEUE, 2)
    assert context(state) == {"operator": "BashOperator", "stage": "g", "queue": "default"}


def test_clear_reopens_the_build_with_a_lower_try_number() -> None:
    done = state_after(
        ev(S.SUCCEED, task_id=None, try_number=3, second=1, run_type="manual", started_at="x")
    )
    cleared = ev(S.QUEUE, task_id=None, clear_number=1, try_number=1, second=2)
    assert decide(done, cleared) is D.REOPEN
    state, _ = apply(done, cleared)
    assert state is not None
    assert (state.status, state.key.clear_number, state.key.try_number) == (S.QUEUE, 1, 1)
    assert state.values() == {"run_type": "manual", "clear_number": 1}
    # and the old clear is history now, even a terminal from a fast clock
    stale = ev(S.FAILED, task_id=None, clear_number=0, try_number=9, second=99)
    assert decide(state, stale) is D.STALE


def test_a_cleared_task_reopens_by_its_new_try() -> None:
    # Airflow 3 gives a cleared task a new try; the clear count is context and
    # two sources that saw different counts for one try agree on the order
    done = state_after(ev(S.SUCCEED, try_number=1, second=1, host="h1", operator="Op"))
    pending = ev(S.QUEUE, clear_number=1, try_number=2, second=2, rank=Rank.PENDING)
    state, decision = apply(done, pending)
    assert decision is D.REOPEN
    assert state is not None
    assert (state.status, state.key.try_number, state.detail) == (S.QUEUE, 2, None)
    assert state.values() == {"operator": "Op", "clear_number": 1}
    late = ev(S.RUNNING, clear_number=0, try_number=2, second=3, source="scheduler")
    assert decide(state, late) is D.ADVANCE


def test_remove() -> None:
    running = ev(S.RUNNING, second=1)
    removed = ev(None, second=2, removed=True, rank=Rank.FINISHED, detail="removed")
    state, decisions = fold(running, removed)
    assert decisions == [D.CREATE, D.REMOVE]
    assert state is not None and state.removed and state.detail == "removed"


def test_a_removed_task_that_comes_back_reopens() -> None:
    removed = state_after(ev(None, second=1, removed=True, rank=Rank.FINISHED))
    back = ev(S.QUEUE, second=2, rank=Rank.FINISHED)
    state, decision = apply(removed, back)
    assert decision is D.REOPEN
    assert state is not None and not state.removed and state.status is S.QUEUE


def test_enrich_keeps_status_and_adds_context() -> None:
    running = ev(S.RUNNING, second=1, host="h1")
    state = state_after(running)
    after, decision = apply(state, ev(None, second=9, source="api", pool="p1", host="h2"))
    assert decision is D.ENRICH
    assert after is not None
    assert (after.status, after.key) == (S.RUNNING, running.key)
    # an enrichment ranks below every status of its try: the status event's host wins
    assert context(after) == {"host": "h1", "pool": "p1"}


def test_enrichment_of_an_old_try_keeps_only_static_fields() -> None:
    state = state_after(ev(S.QUEUE, try_number=2, second=5))
    after, decision = apply(state, ev(None, try_number=1, second=9, host="h1", operator="Op"))
    assert decision is D.ENRICH
    assert context(after) == {"operator": "Op"}


def test_static_fields_of_a_stale_event_still_count() -> None:
    state = state_after(ev(S.QUEUE, try_number=2, second=5))
    after, _ = apply(state, ev(S.RUNNING, try_number=1, second=1, host="h1", stage="g"))
    assert context(after) == {"stage": "g"}


def test_invalid_transition_for_a_rank_set_against_its_status() -> None:
    # a producer bug: SUCCEED said to rank as RUNNING, then a later RUNNING
    done = state_after(ev(S.SUCCEED, second=1, rank=Rank.RUNNING))
    with pytest.raises(InvalidTransition) as info:
        apply(done, ev(S.RUNNING, second=2))
    err = info.value
    assert (err.node, err.current, err.new) == ("t", "SUCCEED", "RUNNING")
    assert "try_number" in str(err)


def test_invalid_transition_names_the_build() -> None:
    done = state_after(ev(S.FAILED, task_id=None, rank=Rank.RUNNING, second=1))
    with pytest.raises(InvalidTransition) as info:
        apply(done, ev(S.QUEUE, task_id=None, rank=Rank.RUNNING, second=2))
    assert info.value.node.startswith("b-")


def test_json_round_trip() -> None:
    state = state_after(
        ev(S.RUNNING, second=1, host="h1", operator="Op"),
        ev(S.RUNNING, second=2, detail="deferred", airflow_state=None),
    )
    assert NodeState.from_json(state.to_json()) == state


def test_event_rejects_naive_time_and_negative_numbers() -> None:
    with pytest.raises(ValueError, match="time zone"):
        StatusEvent(NodeRef("d", "r", "t"), S.QUEUE, 0, 1, "w", 1, datetime(2025, 1, 1))
    with pytest.raises(ValueError, match=">= 0"):
        StatusEvent(NodeRef("d", "r", "t"), S.QUEUE, 0, -1, "w", 1, T0)


# --- arrival order never changes the outcome --------------------------------


def test_enrichment_before_the_first_status_is_kept() -> None:
    layout = ev(None, second=0, source="api", stage="g", operator="Op")
    queued = ev(S.QUEUE, second=1, source="scheduler")
    early, decision = apply(None, layout)
    assert decision is D.ENRICH
    assert early is not None and not early.has_status
    state, decision = apply(early, queued)
    assert decision is D.CREATE
    assert state == state_after(queued, layout)
    assert context(state) == {"stage": "g", "operator": "Op"}


def test_enrichment_of_the_next_try_waits_for_that_try() -> None:
    retry = ev(S.RETRY, try_number=1, second=1, host="h1", error="boom")
    early = ev(None, try_number=2, second=2, source="api", pool="p2")
    queued = ev(S.QUEUE, try_number=2, second=3, queue="default")
    waiting = state_after(retry, early)
    assert context(waiting) == {"host": "h1", "error": "boom"}  # try 2's pool not yet
    assert state_after(retry, early, queued) == state_after(retry, queued, early)
    assert context(state_after(queued, early, retry)) == {"pool": "p2", "queue": "default"}


def test_a_removal_ends_in_the_same_state_whatever_came_first() -> None:
    queued = ev(S.QUEUE, second=1)
    removed = ev(None, second=2, removed=True, rank=Rank.FINISHED, detail="removed")
    assert state_after(queued, removed) == state_after(removed, queued)
    assert state_after(removed).status is S.UNEXEC


def test_a_clear_that_ends_without_running_reopens_with_the_next_try() -> None:
    # The reconciler reports a cleared task that ends without running under
    # try_number + 1 (listeners/observer.effective_try), so it never ties with
    # the old try's result, whatever the clocks say.
    succeeded = ev(S.SUCCEED, try_number=1, second=100 + 30, source="worker")
    unexec = ev(S.UNEXEC, clear_number=1, try_number=2, second=110 - 30, source="scheduler")
    assert state_after(succeeded, unexec).status is S.UNEXEC
    assert state_after(unexec, succeeded).status is S.UNEXEC


def test_a_cancel_is_the_last_word_of_its_try_whatever_arrives_after() -> None:
    # The killed task's own process reports FAILED seconds after the cancel.
    canceled = ev(S.CANCELED, second=1, source="db@scheduler", detail="canceled")
    failed_later = ev(S.FAILED, second=9, source="worker")
    for order in ((canceled, failed_later), (failed_later, canceled)):
        state, _ = fold(ev(S.RUNNING, second=0), *order)
        assert state is not None
        assert state.status is S.CANCELED
        assert state.detail == "canceled"


def test_a_new_try_after_a_cancel_reopens_the_task() -> None:
    state, decisions = fold(
        ev(S.CANCELED, second=1),
        ev(S.QUEUE, try_number=2, second=2),
        ev(S.SUCCEED, try_number=2, second=3),
    )
    assert state is not None
    assert state.status is S.SUCCEED
    assert decisions[1] is D.REOPEN
