"""Benchmark diff_documents against jsonpatch.make_patch on one realistic build-tree change.

    .venv/bin/python benchmarks/diff.py [--stages 20] [--tasks 100] [--reps 300]

The old document is a 20 x 100 build tree rendered by ``build_document`` and sent
through ``json.dumps``/``json.loads``, as if read back from the status store (so it
shares no object with the new one). The new document is rendered afresh from the same
node states with one task finished: status RUNNING -> SUCCEED, an end time, and so a
duration, its stage's status and progress and the build's progress change too.

Both functions read the same two documents and modify neither, so no copy is made
and none is timed. Reps alternate between the two functions so that machine load
falls on both alike; make_patch runs on every 5th rep only (--slow-every), as it is slow.
The figure to compare is the ratio of medians.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jsonpatch

from airflow_bkci.model.diff import diff_documents
from airflow_bkci.model.event import EventKey
from airflow_bkci.model.fsm import NodeState
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.model.tree import build_document

TARGET_RATIO = 10.0
_seq = itertools.count(1)


def node(status: BuildStatus, **values: Any) -> NodeState:
    key = EventKey(0, 1, 4, 0.0, "worker", next(_seq))
    return NodeState(
        status,
        key,
        airflow_state=status.value.lower(),
        fields={n: (v, key) for n, v in values.items()},
    )


def task_values(stage: int, task: int, ended: bool) -> dict[str, Any]:
    """The context fields a task of a busy build has, like the listeners record them."""
    order = stage * 1000 + task
    values: dict[str, Any] = {
        "order": order,
        "stage": f"stage_{stage:02d}",
        "stage_name": f"Stage {stage}",
        "operator": "BashOperator",
        "label": f"step {task} of stage {stage}",
        "host": f"worker-{task % 7}.example.internal",
        "queue": "default",
        "pool": "default_pool",
        "scheduled_at": "2026-01-01T00:00:00+00:00",
        "queued_at": "2026-01-01T00:00:01+00:00",
        "started_at": f"2026-01-01T00:{task % 60:02d}:02+00:00",
        "max_tries": 2,
    }
    if ended:
        values["ended_at"] = f"2026-01-01T01:{task % 60:02d}:07.250000+00:00"
    return values


def documents(stages: int, tasks: int) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(old as stored, new as rendered, the changed task's id)."""
    states: dict[str, NodeState] = {}
    for s, t in itertools.product(range(stages), range(tasks)):
        status = BuildStatus.SUCCEED if t % 3 else BuildStatus.RUNNING
        states[f"stage_{s:02d}.task_{t:03d}"] = node(status, **task_values(s, t, t % 3 != 0))
    build = node(BuildStatus.RUNNING, run_type="manual", started_at="2026-01-01T00:00:00+00:00")
    old = build_document("b-1", "bench_dag", "manual__2026", 7, build, states)
    changed = f"stage_{stages // 2:02d}.task_000"
    states[changed] = node(BuildStatus.SUCCEED, **task_values(stages // 2, 0, True))
    new = build_document("b-1", "bench_dag", "manual__2026", 7, build, states)
    return json.loads(json.dumps(old)), new, changed


def count_nodes(doc: dict[str, Any]) -> tuple[int, int]:
    """(objects, scalar leaves) in a document."""
    objects, leaves = 1, 0
    for value in doc.values():
        if isinstance(value, dict):
            o, leaf = count_nodes(value)
            objects, leaves = objects + o, leaves + leaf
        else:
            leaves += 1
    return objects, leaves


def pct(values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(1, -(-len(ordered) * int(q) // 100)) - 1]


def time_interleaved(
    fns: dict[str, tuple[Callable[[], object], int]], reps: int
) -> dict[str, list[int]]:
    """Nanoseconds per call; a function given (fn, k) runs on every k-th rep only.

    Reps alternate the order of the functions, so load on the shared machine
    falls on all of them alike.
    """
    samples: dict[str, list[int]] = {name: [] for name in fns}
    names = list(fns)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            fn, every = fns[name]
            if rep % every:
                continue
            t0 = time.perf_counter_ns()
            fn()
            samples[name].append(time.perf_counter_ns() - t0)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=100, help="tasks per stage")
    parser.add_argument("--reps", type=int, default=300, help="calls of diff_documents")
    parser.add_argument("--slow-every", type=int, default=5, help="make_patch every N reps")
    args = parser.parse_args(argv)

    old, new, changed = documents(args.stages, args.tasks)
    objects, leaves = count_nodes(new)
    ours = diff_documents(old, new)
    theirs = jsonpatch.make_patch(old, new).patch
    text = json.dumps(new, sort_keys=True)  # JSON text: 1, 1.0 and True differ
    agree = all(
        json.dumps(jsonpatch.apply_patch(old, patch), sort_keys=True) == text
        for patch in (ours, theirs)
    )

    for _ in range(3):  # warm-up, not counted
        diff_documents(old, new)
        jsonpatch.make_patch(old, new)
    samples = time_interleaved(
        {
            "diff_documents": (lambda: diff_documents(old, new), 1),
            "jsonpatch.make_patch": (lambda: jsonpatch.make_patch(old, new), args.slow_every),
        },
        args.reps,
    )

    print(
        f"DIFF: build tree of {args.stages} stages x {args.tasks} tasks = "
        f"{args.stages * args.tasks} tasks ({objects} objects, {leaves} scalar fields); "
        f"one task finished: {changed}"
    )
    print("old = stored form (json round trip, shares nothing with new); new = build_document")
    print("per call, ms, time.perf_counter_ns around the call only; no copies made or timed")
    head = f"{'function':<22} {'n':>5} {'median':>9} {'p95':>9} {'ops':>5} {'patch bytes':>12}"
    print(head)
    print("-" * len(head))
    for name, patch in (("diff_documents", ours), ("jsonpatch.make_patch", theirs)):
        ns = samples[name]
        print(
            f"{name:<22} {len(ns):>5} {statistics.median(ns) / 1e6:9.3f} "
            f"{pct(ns, 95) / 1e6:9.3f} {len(patch):>5} {len(json.dumps(patch)):>12}"
        )
    ratio = statistics.median(samples["jsonpatch.make_patch"]) / statistics.median(
        samples["diff_documents"]
    )
    print(f"both patches turn old into new: {'yes' if agree else 'NO'}")
    print("patch bytes: len(json.dumps(patch)), default separators")
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(
        f"TARGET: make_patch / diff_documents median ratio >= {TARGET_RATIO:.0f}: "
        f"{ratio:.1f} {verdict}"
    )
    for op in ours:
        print(f"  {json.dumps(op)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
