"""Property tests: any arrival order of a run's events gives the same state.

Streams look like real runs: several tries per task, deferral, reschedule and
awaiting-input loops inside a try, clears of the run, enrichment-only
records, and three sources whose clocks are skewed by up to 30 s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from airflow_bkci.model.event import BUILD_NODE, NodeRef, StatusEvent
from airflow_bkci.model.fsm import NodeState, apply
from airflow_bkci.model.mapping import Mapped, map_run_state, map_task_state
from airflow_bkci.model.status import STATUS_RANK
from airflow_bkci.model.tree import build_document

DAG, RUN = "etl", "manual__2025-01-01T00:00:00+00:00"
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
SOURCES = ("scheduler", "worker", "api")
TASKS = ("extract", "load.copy", "map[0]", "map[1]")
LOOPS = ("deferred", "up_for_reschedule", "awaiting_input")
# Longer than the widest skew between two sources (2 x 30 s): a clear of the
# run or a user's mark-success lands after the events it follows, whatever
# the clocks. Closer than that, equal-rank events may be ordered by skew.
HUMAN_GAP = 61


@dataclass
class Stream:
    """Events in the order they happened, and the last status event per node."""

    offsets: dict[str, int]
    events: list[StatusEvent] = field(default_factory=list)
    last: dict[str, StatusEvent] = field(default_factory=dict)
    now: float = 0.0
    seqs: dict[str, int] = field(default_factory=dict)

    def tick(self, draw: st.DrawFn) -> None:
        self.now += draw(st.integers(0, 5))

    def stamp(self, source: str) -> datetime:
        return T0 + timedelta(seconds=self.now + self.offsets[source])

    def emit(
        self,
        node: NodeRef,
        mapped: Mapped | None,
        airflow_state: str | None,
        source: str,
        *,
        clear: int,
        try_number: int,
        **fields: Any,
    ) -> None:
        self.seqs[source] = self.seqs.get(source, 0) + 1
        event = StatusEvent(
            node=node,
            status=mapped.status if mapped else None,
            clear_number=clear,
            try_number=try_number,
            source=source,
            seq=self.seqs[source],
            at=self.stamp(source),
            airflow_state=airflow_state,
            detail=mapped.detail if mapped else None,
            rank=mapped.rank if mapped else None,
            removed=mapped.removed if mapped else False,
            fields=fields,
        )
        self.events.append(event)
        if mapped is not None:
            self.last[node.node_id] = event


def _ref(task: str | None) -> NodeRef:
    if task is None:
        return NodeRef(DAG, RUN)
    name, _, index = task.partition("[")
    return NodeRef(DAG, RUN, name, int(index.rstrip("]")) if index else -1)


def _static(task: str) -> dict[str, Any]:
    stage = task.split(".", 1)[0] if "." in task else None
    return {"operator": "PythonOperator", "stage": stage, "order": TASKS.index(task)}


def _task_try(
    draw: st.DrawFn, s: Stream, task: str, clear: int, *, try_number: int, outcome: str
) -> None:
    """One try of a task, from scheduling to ``outcome``."""
    node = _ref(task)

    def emit(state: str | None, source: str, resuming: bool = False, **fields: Any) -> None:
        s.tick(draw)
        mapped = map_task_state(state, resuming=resuming)
        s.emit(node, mapped, state, source, clear=clear, try_number=try_number, **fields)

    emit("scheduled", "scheduler")
    emit("queued", "scheduler", queue="default")
    emit("running", "worker", host=f"host-{try_number}", started_at=s.stamp("worker").isoformat())
    if draw(st.booleans()):
        emit("running", "scheduler")  # the reconciler saw it too
    for loop in draw(st.lists(st.sampled_from(LOOPS), max_size=2)):
        emit(loop, draw(st.sampled_from(("worker", "scheduler"))))
        emit("scheduled", "scheduler", resuming=True)
        emit("queued", "scheduler", resuming=True)
        emit("running", "worker", host=f"host-{try_number}b")
    if draw(st.booleans()):
        s.tick(draw)
        extra = {"pool": draw(st.sampled_from(("default_pool", "p2"))), "pid": try_number}
        if draw(st.booleans()):
            extra["label"] = f"{task} (try {try_number})"
        source = draw(st.sampled_from(("api", "worker")))
        s.emit(node, None, None, source, clear=clear, try_number=try_number, **extra)
    ended = {"ended_at": s.stamp("worker").isoformat()}
    if outcome in ("up_for_retry", "failed"):
        ended["error"] = f"boom in try {try_number}"
    emit(outcome, draw(st.sampled_from(("worker", "scheduler"))), **ended)
    if draw(st.booleans()):
        emit(outcome, "scheduler")  # the same fact, reported again
    if outcome == "failed" and draw(st.booleans()):
        s.now += HUMAN_GAP
        emit("success", "api", note="marked by hand")


def _task_round(draw: st.DrawFn, s: Stream, task: str, clear: int, last_try: int) -> int:
    """A task's life in one clear of the run; returns its try number after it."""
    node = _ref(task)
    s.tick(draw)
    static = _static(task) if draw(st.booleans()) else {}
    s.emit(
        node, map_task_state(None), None, "scheduler", clear=clear, try_number=last_try, **static
    )
    if draw(st.integers(0, 4)) == 0:  # never runs
        state = draw(st.sampled_from(("upstream_failed", "skipped")))
        s.tick(draw)
        s.emit(node, map_task_state(state), state, "scheduler", clear=clear, try_number=last_try)
        return last_try
    tries = draw(st.integers(1, 3))
    final = draw(st.sampled_from(("success", "failed", "skipped")))
    for n in range(1, tries + 1):
        outcome = final if n == tries else "up_for_retry"
        _task_try(draw, s, task, clear, try_number=last_try + n, outcome=outcome)
    if draw(st.booleans()):  # the DAG's layout, recorded late by another source
        s.tick(draw)
        s.emit(node, None, None, "api", clear=clear, try_number=last_try + tries, **_static(task))
    return last_try + tries


def _build_event(s: Stream, draw: st.DrawFn, state: str, clear: int, **fields: Any) -> None:
    s.tick(draw)
    s.emit(
        _ref(None), map_run_state(state), state, "scheduler", clear=clear, try_number=1, **fields
    )


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    s = Stream(offsets={src: draw(st.integers(-30, 30)) for src in SOURCES})
    tasks = draw(st.lists(st.sampled_from(TASKS), min_size=1, max_size=3, unique=True))
    tries = dict.fromkeys(tasks, 0)
    for clear in range(draw(st.integers(0, 2)) + 1):
        if clear:
            s.now += HUMAN_GAP
        _build_event(s, draw, "queued", clear, run_type="manual", triggering_user="alice")
        _build_event(s, draw, "running", clear, started_at=s.stamp("scheduler").isoformat())
        if draw(st.booleans()):
            s.tick(draw)
            s.emit(_ref(None), None, None, "api", clear=clear, try_number=1, note=f"clear {clear}")
        for task in tasks:
            tries[task] = _task_round(draw, s, task, clear, tries[task])
        if draw(st.booleans()):  # a task that left the DAG before it ran
            gone = _ref("gone")
            s.tick(draw)
            s.emit(gone, map_task_state(None), None, "scheduler", clear=clear, try_number=clear)
            s.tick(draw)
            state = "removed"
            s.emit(gone, map_task_state(state), state, "scheduler", clear=clear, try_number=clear)
        end = draw(st.sampled_from(("success", "failed")))
        _build_event(s, draw, end, clear, ended_at=s.stamp("scheduler").isoformat())
    return s


def fold(events: list[StatusEvent]) -> dict[str, NodeState]:
    """Apply events in this order, checking what must hold after every step."""
    states: dict[str, NodeState | None] = {}
    seen: set[int] = set()
    for event in events:
        node_id = event.node.node_id
        before = states.get(node_id)
        after, _ = apply(before, event)
        if id(event) in seen:
            assert after == before, f"re-applying {event} changed {node_id}"
        seen.add(id(event))
        if before is not None and after is not None:
            assert after.key >= before.key, f"{node_id} went back from {before.key}"
            if after.key.attempt == before.key.attempt and not after.removed:
                assert STATUS_RANK[after.status] >= STATUS_RANK[before.status], (
                    f"{node_id}: {before.status} -> {after.status} inside one try"
                )
        if after is not None:  # as the store keeps it between events
            after = NodeState.from_json(json.loads(json.dumps(after.to_json())))
        states[node_id] = after
    return {node_id: state for node_id, state in states.items() if state is not None}


def document(states: dict[str, NodeState]) -> dict[str, Any]:
    tasks = {nid: st_ for nid, st_ in states.items() if nid != BUILD_NODE}
    return build_document(_ref(None).build_id, DAG, RUN, 7, states[BUILD_NODE], tasks)


@st.composite
def arrivals(draw: st.DrawFn, events: list[StatusEvent]) -> list[StatusEvent]:
    """The same events shuffled, some of them delivered more than once."""
    order = list(draw(st.permutations(events)))
    for _ in range(draw(st.integers(0, 8))):
        order.insert(draw(st.integers(0, len(order))), draw(st.sampled_from(events)))
    return order


@given(stream=streams(), data=st.data())
def test_arrival_order_and_duplicates_do_not_matter(stream: Stream, data: st.DataObject) -> None:
    in_order = fold(stream.events)
    shuffled = fold(data.draw(arrivals(stream.events), label="arrival order"))
    assert shuffled.keys() == in_order.keys()
    for node_id, state in in_order.items():
        assert shuffled[node_id] == state, node_id
    assert document(shuffled) == document(in_order)


@given(stream=streams(), data=st.data())
def test_final_status_is_the_last_word_of_the_last_try(stream: Stream, data: st.DataObject) -> None:
    states = fold(data.draw(arrivals(stream.events), label="arrival order"))
    for node_id, last in stream.last.items():
        state = states[node_id]
        assert state.removed is last.removed, node_id
        if not last.removed:
            assert (state.status, state.detail) == (last.status, last.detail), node_id
        assert state.key.try_number == last.try_number
    doc = document(states)
    live = {nid for nid, st_ in states.items() if nid != BUILD_NODE and not st_.removed}
    in_tree = {tid for stage in doc["stages"].values() for tid in stage["tasks"]}
    assert in_tree == live
    assert doc["progress"]["total"] == len(live)
    assert doc["status"] == stream.last[BUILD_NODE].status.value


@given(stream=streams(), data=st.data())
def test_fields_belong_to_the_current_try(stream: Stream, data: st.DataObject) -> None:
    states = fold(data.draw(arrivals(stream.events), label="arrival order"))
    for node_id, state in states.items():
        if node_id == BUILD_NODE or state.removed:
            continue
        values = state.values()
        host = values.get("host")
        assert host in (None, f"host-{state.key.try_number}", f"host-{state.key.try_number}b")
        error = values.get("error")
        assert error in (None, f"boom in try {state.key.try_number}")
        # the layout is static: once any event carried it, every try keeps it
        carried = [e for e in stream.events if e.node.node_id == node_id and "stage" in e.fields]
        if carried:
            assert values["stage"] == carried[0].fields["stage"]
