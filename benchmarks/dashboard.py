"""Dashboard: the wall's first render over 100,000 builds and browser memory under live updates.

    .venv/bin/python benchmarks/dashboard.py [--minutes 20] [--reps 5] [--pg] [--keep]

One real Airflow stack (``airflow_bkci.devstack.AirflowStack``) with 50 generated DAGs
``bench_dash_00`` … ``bench_dash_49`` and a status store of 100,000 builds over the last 30
days; headless Chromium (Debian's, driven by Playwright) opens the wall of those 50 pipelines.

1. **wall API**: ``GET /bkci/v1/dashboard/wall`` for the 50 pipelines over 1,000 builds, then
   over 100,000 (the same store before and after the bulk of the history is added), each
   alternated with Airflow's ``GET /api/v2/dags?limit=50`` of the same DAGs (the drift check)
   and with the route's store reads alone on that store and on a copy kept at 1,000 builds.
2. **first render**: navigation start to the 50th tile with a status in the DOM, fresh browser
   context per repetition, against Airflow's own DAG list page (``/dags``) in the same browser.
3. **memory**: one wall left open while a writer applies 10 change sets per second to the
   pipelines' newest builds (tasks running and ending, builds finishing and new ones starting),
   for ``--minutes``; every 30 s a forced GC, then the page's JS heap, DOM nodes, listeners and
   the renderer's RSS. Then the tiles are checked against the store.

Targets and what every figure includes: benchmarks/README.md ("Dashboard"). No assertions: it
prints PASS/FAIL; the exit code is 1 when a target is missed or a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import requests
import sqlalchemy as sa

from airflow_bkci.devstack import AirflowStack
from airflow_bkci.model import BuildStatus, NodeRef, StatusEvent
from airflow_bkci.model.event import build_id_for, utcnow
from airflow_bkci.model.tree import stage_status
from airflow_bkci.store import Store
from airflow_bkci.store.tables import BuildRow, ChangeRow, PipelineRow

S = BuildStatus
PIPELINES = [f"bench_dash_{i:02d}" for i in range(50)]
BUILDS = 100_000
DAYS = 30
RUNNING_PER_PIPELINE = 3  # seeded through Store.apply, the newest one gets the live updates
REAL_PER_PIPELINE = RUNNING_PER_PIPELINE + 1  # plus one FAILED build, the tiles' last failure
HISTORY_PER_PIPELINE = (BUILDS - REAL_PER_PIPELINE * len(PIPELINES)) // len(PIPELINES)  # 1,996
SMALL_EVERY = 125  # history rows 0, 125, 250, … are in the small store: 16 per pipeline
CHUNK = 5_000
# (stage, task) in DAG order; node ids are "<stage>.<task>", as TaskGroups name them.
TASKS = (
    ("source", "checkout"),
    ("build", "compile"),
    ("build", "unit_test"),
    ("deploy", "push"),
    ("deploy", "verify"),
)
STAGES = ("source", "build", "deploy")
OWNERS = ("alice", "bob", "carol", "dave", "erin")
HOSTS = ("worker-1", "worker-2", "worker-3")
RATE = 10.0  # change sets per second during the memory run
SAMPLE_EVERY = 30.0
CHROMIUM = os.environ.get("BKCI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-precise-memory-info",
]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

TARGET_RENDER_S = 2.0
TARGET_RENDER_RATIO = 3.0
BOUND_HEAP_MB = 5.0  # JS heap after GC, last minute's mean minus the value at 1:00
BOUND_DOM_FRACTION = 0.10  # nodes and listeners stay within 10 % of the value at 1:00
BOUND_FOLLOWED = 0.95  # tile build-number changes seen / new builds written

DAG_FILE = '''\
"""50 trivial DAGs for benchmarks/dashboard.py (generated): the wall's pipelines."""

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TaskGroup

OWNERS = {owners!r}
TASKS = {tasks!r}

for i in range({count}):
    tags = ["bench-dash"] + ([f"team-{{i % 4}}"] if i % 3 else [])
    with DAG(
        f"bench_dash_{{i:02d}}",
        schedule=None,
        catchup=False,
        tags=tags,
        default_args={{"owner": OWNERS[i % len(OWNERS)]}},
    ) as dag:
        groups = {{}}
        previous = None
        for stage, task in TASKS:
            if stage not in groups:
                groups[stage] = TaskGroup(stage)
            with groups[stage]:
                current = EmptyOperator(task_id=task)
            if previous is not None:
                previous >> current
            previous = current
    globals()[dag.dag_id] = dag
'''


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def iso(when: datetime) -> str:
    return when.isoformat()


# --- history: bulk rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Character:
    """How one pipeline behaves: typical duration and how often it fails."""

    dag_id: str
    median_s: float
    fail_rate: float
    cancel_rate: float

    def status(self, rng: random.Random) -> str:
        roll = rng.random()
        if roll < self.fail_rate:
            return S.FAILED.value
        if roll < self.fail_rate + self.cancel_rate:
            return S.CANCELED.value
        return S.SUCCEED.value

    def duration_s(self, rng: random.Random) -> float:
        return max(5.0, rng.lognormvariate(math.log(self.median_s), 0.45))


def characters() -> dict[str, Character]:
    rng = random.Random(11)
    return {
        dag_id: Character(
            dag_id,
            median_s=rng.uniform(120, 1200),
            fail_rate=rng.choice((0.02, 0.05, 0.1, 0.2)),
            cancel_rate=0.03,
        )
        for dag_id in PIPELINES
    }


def history_stages(status: str) -> dict[str, Any]:
    """The stages of a finished build, shaped like ``build_document``'s: a FAILED build
    failed at unit_test (the tasks after it UNEXEC), a CANCELED one canceled every task.

    Shared by every history row of that status (task times are left out: only a
    pipeline's newest build document is read by the wall, and those are real).
    """
    stages: dict[str, Any] = {}
    for n, (stage, task) in enumerate(TASKS):
        if status == S.FAILED.value:
            task_status = "SUCCEED" if n < 2 else "FAILED" if n == 2 else "UNEXEC"
        else:
            task_status = status
        node = f"{stage}.{task}"
        doc = stages.setdefault(
            stage, {"id": stage, "name": stage, "order": STAGES.index(stage), "tasks": {}}
        )
        doc["tasks"][node] = {
            "id": node,
            "task_id": node,
            "map_index": -1,
            "status": task_status,
            "airflow_state": task_status.lower(),
            "try_number": 1,
            "execute_count": 1,
            "operator": "EmptyOperator",
            "host": HOSTS[n % len(HOSTS)],
            "queue": "default",
            "pool": "default_pool",
            "error": "exit code 1" if task_status == "FAILED" else None,
            "max_tries": 0,
        }
    for doc in stages.values():
        statuses = [S(t["status"]) for t in doc["tasks"].values()]
        doc["status"] = stage_status(statuses).value
        doc["progress"] = {"total": len(statuses), "done": len(statuses), "running": 0}
    return stages


STAGE_DOCS = {s.value: history_stages(s.value) for s in (S.SUCCEED, S.FAILED, S.CANCELED)}


def history_document(row: dict[str, Any], seconds: float) -> dict[str, Any]:
    """A finished build's document, shaped like ``build_document``'s (about 3 KB as JSON)."""
    status = row["status"]
    return {
        "id": row["build_id"],
        "pipeline_id": row["dag_id"],
        "run_id": row["run_id"],
        "build_num": row["build_num"],
        "status": status,
        "airflow_state": "success" if status == S.SUCCEED.value else "failed",
        "run_type": "scheduled",
        "trigger_type": row["trigger_type"],
        "triggering_user": None,
        "run_after": iso(row["run_after"]),
        "started_at": iso(row["started_at"]),
        "ended_at": iso(row["ended_at"]),
        "duration_ms": int(seconds * 1000),
        "progress": {"total": len(TASKS), "done": len(TASKS), "running": 0},
        "stages": STAGE_DOCS[status],
    }


def history_rows(
    now: datetime, small: bool, chars: dict[str, Character]
) -> Iterator[list[dict[str, Any]]]:
    """The finished builds before the real ones, in chunks: every 125th (small) or the rest.

    Each pipeline's rows are drawn from its own seeded generator, so both calls describe
    the same history and together hold every row once.
    """
    start = now - timedelta(days=DAYS)
    end = now - timedelta(hours=1)  # the real builds (Store.apply) are newer
    span = (end - start).total_seconds()
    chunk: list[dict[str, Any]] = []
    for dag_id, char in chars.items():
        rng = random.Random(dag_id)
        dues = sorted(rng.uniform(0, span) for _ in range(HISTORY_PER_PIPELINE))
        for k, offset in enumerate(dues):
            seconds = char.duration_s(rng)
            status = char.status(rng)
            trigger = "timetable" if rng.random() < 0.85 else "rest_api"
            if (k % SMALL_EVERY == 0) != small:
                continue
            due = start + timedelta(seconds=offset)
            run_id = f"scheduled__{due.strftime('%Y%m%dT%H%M%S')}_{k:04d}"
            row = {
                "build_id": build_id_for(dag_id, run_id),
                "dag_id": dag_id,
                "run_id": run_id,
                "build_num": k + 1,
                "status": status,
                "run_after": due,
                "queued_at": due,
                "started_at": due + timedelta(seconds=3),
                "ended_at": due + timedelta(seconds=3 + seconds),
                "created_at": due,
                "updated_at": due + timedelta(seconds=3 + seconds),
                "trigger_type": trigger,
                "triggering_user": None,
                "sequence": 12,
            }
            row["document"] = history_document(row, seconds)
            chunk.append(row)
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def insert_history(store: Store, now: datetime, small: bool, chars: dict[str, Character]) -> int:
    """Bulk-insert history rows (not through apply); the pipelines' rows come first."""
    count = 0
    with store.engine.begin() as conn:
        if small:
            conn.execute(
                sa.insert(PipelineRow),
                [
                    {"dag_id": d, "last_build_num": HISTORY_PER_PIPELINE, "created_at": now}
                    for d in PIPELINES
                ],
            )
        for chunk in history_rows(now, small, chars):
            conn.execute(sa.insert(BuildRow), chunk)
            count += len(chunk)
    with store.engine.connect() as conn:  # statistics, as autovacuum/ANALYZE would keep them
        conn.execute(sa.text("ANALYZE"))
        conn.commit()
    return count


# --- real builds: Store.apply of status events -----------------------------------------------


class Events:
    """Status events of one source, with its strictly increasing counter."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._seq = itertools.count(1)

    def make(
        self,
        node: NodeRef,
        status: BuildStatus,
        at: datetime,
        state: str,
        fields: dict[str, Any],
    ) -> StatusEvent:
        return StatusEvent(
            node=node,
            status=status,
            clear_number=0,
            try_number=0 if node.is_build else 1,
            source=self.source,
            seq=next(self._seq),
            at=at,
            airflow_state=state,
            fields=fields,
        )


@dataclass
class LiveBuild:
    """A build the store learns of step by step; every step is one change set.

    Steps: start (the build RUNNING and its 5 tasks QUEUE), then per task RUNNING and its
    end, then the build's end; a failed task ends the build FAILED at once (the tasks
    after it UNEXEC). 12 steps for a build that succeeds.
    """

    dag_id: str
    run_id: str
    fail_at: int | None
    step: int = 0
    tasks: list[BuildStatus] = field(default_factory=lambda: [S.QUEUE] * len(TASKS))
    status: BuildStatus = S.QUEUE

    @property
    def build_id(self) -> str:
        return build_id_for(self.dag_id, self.run_id)

    @property
    def done(self) -> bool:
        return self.status.is_finished

    def stage_statuses(self) -> dict[str, str]:
        found: dict[str, list[BuildStatus]] = {}
        for (stage, _), status in zip(TASKS, self.tasks, strict=True):
            found.setdefault(stage, []).append(status)
        return {stage: stage_status(statuses).value for stage, statuses in found.items()}

    def advance(self, events: Events, at: datetime) -> list[StatusEvent]:
        """The events of the next step (and this object moved past it)."""
        build = NodeRef(self.dag_id, self.run_id)
        step, self.step = self.step, self.step + 1
        if step == 0:
            self.status = S.RUNNING
            fields = {
                "run_type": "scheduled",
                "trigger_type": "timetable",
                "run_after": iso(at),
                "queued_at": iso(at),
                "started_at": iso(at),
                "executor": "LocalExecutor",
            }
            out = [events.make(build, S.RUNNING, at, "running", fields)]
            for n, (stage, task) in enumerate(TASKS):
                static = {
                    "stage": stage,
                    "stage_name": stage,
                    "stage_order": STAGES.index(stage),
                    "order": n,
                    "operator": "EmptyOperator",
                    "max_tries": 0,
                }
                ref = NodeRef(self.dag_id, self.run_id, f"{stage}.{task}")
                out.append(events.make(ref, S.QUEUE, at, "scheduled", static))
            return out
        n, ending = divmod(step - 1, 2)
        if n < len(TASKS) and not (self.fail_at is not None and n > self.fail_at):
            ref = NodeRef(self.dag_id, self.run_id, f"{TASKS[n][0]}.{TASKS[n][1]}")
            if not ending:
                self.tasks[n] = S.RUNNING
                fields = {"started_at": iso(at), "host": HOSTS[n % len(HOSTS)]}
                return [events.make(ref, S.RUNNING, at, "running", fields)]
            failed = n == self.fail_at
            self.tasks[n] = S.FAILED if failed else S.SUCCEED
            fields = {"ended_at": iso(at)} | ({"error": "exit code 1"} if failed else {})
            return [events.make(ref, self.tasks[n], at, "failed" if failed else "success", fields)]
        out = []
        if self.fail_at is not None:
            for m in range(self.fail_at + 1, len(TASKS)):
                self.tasks[m] = S.UNEXEC
                ref = NodeRef(self.dag_id, self.run_id, f"{TASKS[m][0]}.{TASKS[m][1]}")
                out.append(events.make(ref, S.UNEXEC, at, "upstream_failed", {}))
        self.status = S.FAILED if self.fail_at is not None else S.SUCCEED
        state = "failed" if self.fail_at is not None else "success"
        out.append(events.make(build, self.status, at, state, {"ended_at": iso(at)}))
        return out


def failing_task(char: Character, rng: random.Random) -> int | None:
    """Which task fails in a new build of this pipeline (its failure rate), None for none."""
    fails = rng.random() < char.fail_rate
    return rng.randrange(len(TASKS)) if fails else None


def seed_real(
    store: Store, now: datetime, events: Events, chars: dict[str, Character]
) -> dict[str, LiveBuild]:
    """Through Store.apply, per pipeline: one FAILED build, then 3 RUNNING ones.

    Returns each pipeline's newest build (RUNNING, part-way), which the writer goes on with.
    All pipelines' builds of one step are one apply (one change set per build).
    """
    rng = random.Random(5)
    plans: list[tuple[timedelta, int | None, int]] = [
        (timedelta(minutes=50), 2, 99),  # FAILED at unit_test: every tile has a last failure
        (timedelta(minutes=30), None, 3),  # stuck RUNNING builds, older than the newest
        (timedelta(minutes=20), None, 5),
    ]
    newest: dict[str, LiveBuild] = {}
    for n, (ago, fail_at, steps) in enumerate(plans):
        builds = [LiveBuild(d, f"seed__{n}", fail_at) for d in PIPELINES]
        _run_steps(store, events, builds, now - ago, steps)
    latest = [LiveBuild(d, "seed__latest", failing_task(chars[d], rng)) for d in PIPELINES]
    for build in latest:  # part-way, each a different way: 1 to 8 steps
        _run_steps(store, events, [build], now - timedelta(minutes=5), rng.randint(1, 8))
        newest[build.dag_id] = build
    return newest


def _run_steps(
    store: Store, events: Events, builds: list[LiveBuild], start: datetime, steps: int
) -> None:
    for step in range(steps):
        batch = [
            e
            for b in builds
            if not b.done
            for e in b.advance(events, start + timedelta(seconds=40 * step))
        ]
        if not batch:
            return
        result = store.apply(batch)
        if result.rejected:
            raise RuntimeError(f"the store rejected seed events: {result.rejected[:3]}")


@dataclass
class WriterCounts:
    change_sets: int = 0
    applies: int = 0
    rejected: int = 0
    builds_started: int = 0
    builds_finished: int = 0
    build_status_changes: int = 0  # of the pipelines' newest builds: what a tile's status shows
    stage_status_changes: int = 0
    apply_ms: list[float] = field(default_factory=list)
    behind_s: float = 0.0  # the most the writer fell behind its schedule


class LiveWriter(threading.Thread):
    """Applies ``rate`` change sets per second, round robin over the pipelines' newest builds.

    A finished build is replaced at its pipeline's next turn by a new one (so tiles see new
    build numbers and their stats change); everything goes through ``Store.apply``.
    """

    def __init__(
        self,
        store: Store,
        newest: dict[str, LiveBuild],
        chars: dict[str, Character],
        events: Events,
        rate: float,
    ) -> None:
        super().__init__(name="bench-writer", daemon=True)
        self.store = store
        self.newest = newest
        self.chars = chars
        self.events = events
        self.rate = rate
        self.counts = WriterCounts()
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._rng = random.Random(23)
        self._serial = itertools.count(1)

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _loop(self) -> None:
        order = list(self.newest)
        self._rng.shuffle(order)
        due = time.monotonic()
        for turn in itertools.count():
            if self.stop_event.is_set():
                return
            dag_id = order[turn % len(order)]
            self._one(dag_id)
            due += 1.0 / self.rate
            late = time.monotonic() - due
            self.counts.behind_s = max(self.counts.behind_s, late)
            if late < 0:
                self.stop_event.wait(-late)

    def _one(self, dag_id: str) -> None:
        c = self.counts
        build = self.newest[dag_id]
        before_status, before_stages = build.status, build.stage_statuses()
        if build.done:
            run_id = f"live__{next(self._serial):06d}"
            build = LiveBuild(dag_id, run_id, failing_task(self.chars[dag_id], self._rng))
            self.newest[dag_id] = build
            c.builds_started += 1
        events = build.advance(self.events, utcnow())
        t0 = time.perf_counter()
        result = self.store.apply(events)
        c.apply_ms.append((time.perf_counter() - t0) * 1000)
        c.applies += 1
        c.change_sets += len(result.build_ids) if result.build_ids else 0
        c.rejected += len(result.rejected)
        c.builds_finished += int(build.done)
        c.build_status_changes += int(build.status != before_status)
        after = build.stage_statuses()
        c.stage_status_changes += sum(after[s] != before_stages.get(s) for s in after)


# --- the stack ---------------------------------------------------------------------------------


def make_stack(home: Path, store_url: str | None, keep: bool) -> AirflowStack:
    dags = home / "dags"
    dags.mkdir(parents=True)
    (home / "bkci").mkdir()  # the default store's folder: seeded before the stack starts
    (dags / "bench_dash.py").write_text(
        DAG_FILE.format(owners=OWNERS, tasks=TASKS, count=len(PIPELINES))
    )
    st = AirflowStack(home=home, dags_folder=dags, keep=keep, progress=lambda m: say(f"stack: {m}"))
    if store_url:
        st.configure("bkci", "store_url", store_url)
    return st


@contextlib.contextmanager
def pg_stores(enabled: bool) -> Iterator[tuple[str | None, str | None]]:
    """Two store databases of our own on the shared server (the stack's, and the 1,000-build
    copy), dropped after; (None, None) for SQLite."""
    if not enabled:
        yield None, None
        return
    import psycopg

    names = [f"bkci_bench_dash_{uuid.uuid4().hex[:8]}_{part}" for part in ("stack", "small")]
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            for name in names:
                conn.execute(f'CREATE DATABASE "{name}"')
        big, small = (f"postgresql+psycopg://postgres@127.0.0.1:5432/{n}" for n in names)
        yield big, small
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- wall API -----------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest rank (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(len(ordered) * q / 100))
    return ordered[rank - 1]


def wall_query() -> str:
    return "pipelines=" + ",".join(PIPELINES)


def time_api(
    st: AirflowStack, store: Store, copy: Store, n: int, warmup: int = 3
) -> dict[str, Any]:
    """The wall route, Airflow's DAG list, and the route's store reads alone on the stack's
    store and on its 1,000-build copy, alternated call by call; ms of wall time here."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {st.token()}"
    urls = {
        "wall": f"{st.api_url}/bkci/v1/dashboard/wall?{wall_query()}",
        "dags": f"{st.api_url}/api/v2/dags?limit=50",
    }
    stores = {"store": store, "copy": copy}
    times: dict[str, list[float]] = {name: [] for name in (*urls, *stores)}
    last: dict[str, requests.Response] = {}
    for i in range(warmup + n):
        for name, url in urls.items():
            t0 = time.perf_counter()
            resp = http.get(url, timeout=120)
            elapsed = (time.perf_counter() - t0) * 1000
            if not resp.ok:
                raise RuntimeError(f"GET {url} answered {resp.status_code}: {resp.text[:300]}")
            last[name] = resp
            if i >= warmup:
                times[name].append(elapsed)
        for name, one in stores.items():
            until = utcnow()
            t0 = time.perf_counter()
            one.wall_tiles(PIPELINES, until - timedelta(days=7), until, 20)
            if i >= warmup:
                times[name].append((time.perf_counter() - t0) * 1000)
    http.close()
    body = last["wall"].json()
    tiles = body.get("tiles", [])
    return {
        "times": times,
        "bytes": {name: len(r.content) for name, r in last.items()} | {"store": 0, "copy": 0},
        "tiles": len(tiles),
        "window_builds": sum((t.get("stats") or {}).get("builds") or 0 for t in tiles),
        "with_latest": sum(1 for t in tiles if t.get("latest")),
        "with_failure": sum(1 for t in tiles if t.get("last_failure")),
        "load": os.getloadavg()[0],
    }


def load_text() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def report_api(small: dict[str, Any], big: dict[str, Any], builds: tuple[int, int]) -> None:
    print()
    print(
        "WALL API, ms of wall time in the benchmark's process, the calls of each line alternated "
        "call by call:\n"
        "  wall  = GET /bkci/v1/dashboard/wall?pipelines=<the 50> over HTTP on 127.0.0.1 (token "
        "check, read and edit permissions, the store's tile reads, owners and tags from Airflow's "
        "database, JSON; 7-day window, trend of 20)\n"
        "  store = Store.wall_tiles for the same 50 pipelines and window in this process, on its "
        "own engine (the route's store reads alone: no HTTP, auth or Airflow)\n"
        f"  copy  = the same on a second store that keeps the first {builds[0]:,} builds (seeded "
        "alike, never grown)\n"
        "  dags  = baseline: Airflow's GET /api/v2/dags?limit=50 (the same 50 DAGs)"
    )
    head = (
        f"{'stack store':<16}{'call':<7}{'n':>4}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"
        f"{'bytes':>10}"
    )
    print(head)
    print("-" * len(head))
    for r, count in ((small, builds[0]), (big, builds[1])):
        for name in ("wall", "store", "copy", "dags"):
            t = r["times"][name]
            size = f"{r['bytes'][name]:>10,}" if r["bytes"][name] else f"{'':>10}"
            print(
                f"{f'{count:,} builds':<16}{name:<7}{len(t):>4}{pct(t, 50):9.1f}{pct(t, 95):9.1f}"
                f"{max(t):9.1f}{size}"
            )
        print(
            f"  {r['tiles']} tiles, {r['with_latest']} with a latest build, {r['with_failure']} "
            f"with a last failure; {r['window_builds']:,} builds in the 7-day window; load "
            f"average {r['load']:.1f}"
        )
    p50 = {
        k: [pct(r["times"][k], 50) for r in (small, big)] for k in ("wall", "store", "copy", "dags")
    }
    print(
        f"ratio p50 store reads {builds[1]:,} / {builds[0]:,} builds, alternated in one loop: "
        f"{p50['store'][1] / p50['copy'][1]:.2f} (the same before the store grew, both "
        f"{builds[0]:,}: {p50['store'][0] / p50['copy'][0]:.2f})"
    )
    drift = p50["dags"][1] / p50["dags"][0]
    wall = p50["wall"][1] / p50["wall"][0]
    print(
        f"ratio p50 wall route {builds[1]:,} / {builds[0]:,} builds (measured before and after "
        f"the store grew): {wall:.2f}; Airflow's DAG list across the same two moments "
        f"{drift:.2f} (the machine's drift); the wall's ratio divided by it {wall / drift:.2f}"
    )
    print(
        f"wall / Airflow's DAG list, p50: {p50['wall'][0] / p50['dags'][0]:.2f} at "
        f"{builds[0]:,} builds, {p50['wall'][1] / p50['dags'][1]:.2f} at {builds[1]:,}"
    )


# --- the browser --------------------------------------------------------------------------------

RENDER_JS = """
(() => {
  const want = %d, sel = %s;
  const mark = { dom: null, frame: null, count: 0 };
  Object.defineProperty(window, "__benchRender", { value: mark });
  const check = () => {
    if (mark.dom !== null) return;
    mark.count = document.querySelectorAll(sel).length;
    if (mark.count >= want) {
      mark.dom = performance.now();
      observer.disconnect();
      requestAnimationFrame(() => setTimeout(() => { mark.frame = performance.now(); }, 0));
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document, { childList: true, subtree: true, attributes: true });
})();
"""

# Counters of what the open wall shows, in the page; bounded state (one entry per tile), so
# they add nothing that grows with time to what is measured.
LIVE_JS = """
(() => {
  const c = { armedAt: 0, renders: 0, buildChanges: 0, statusChanges: 0, last: new Map() };
  Object.defineProperty(window, "__benchLive", { value: c });
  new MutationObserver((records) => {
    if (!c.armedAt) return;
    const now = Date.now();
    for (const r of records) {
      if (r.type === "attributes") {
        if (r.oldValue !== r.target.getAttribute("data-updated-at")) c.renders++;
        continue;
      }
      for (const n of r.addedNodes) {
        if (n.nodeType !== 1) continue;
        const fresh = (el) => now - Number(el.getAttribute("data-updated-at")) < 500;
        if (n.hasAttribute("data-updated-at") && fresh(n)) c.renders++;
        for (const el of n.querySelectorAll("[data-updated-at]")) if (fresh(el)) c.renders++;
      }
    }
  }).observe(document, {
    subtree: true, childList: true, attributes: true,
    attributeFilter: ["data-updated-at"], attributeOldValue: true,
  });
  setInterval(() => {
    for (const tile of document.querySelectorAll("[data-testid=tile]")) {
      const dag = tile.getAttribute("data-dag-id");
      const b = tile.querySelector("[data-testid=tile-build]");
      const s = tile.querySelector("[data-testid=tile-status]");
      const num = b ? b.textContent.replace(/[^0-9]/g, "") : "";
      const st = s ? s.getAttribute("data-status") || "" : "";
      const prev = c.last.get(dag);
      if (prev && c.armedAt) {
        if (num && prev[0] && prev[0] !== num) c.buildChanges++;
        if (st && prev[1] && prev[1] !== st) c.statusChanges++;
      }
      c.last.set(dag, [num || (prev ? prev[0] : ""), st || (prev ? prev[1] : "")]);
    }
  }, 250);
})();
"""

TILES_JS = """
() => Array.from(document.querySelectorAll("[data-testid=tile]")).map((tile) => {
  const b = tile.querySelector("[data-testid=tile-build]");
  const s = tile.querySelector("[data-testid=tile-status]");
  const segs = {};
  for (const seg of tile.querySelectorAll("[data-testid=stage-segment]"))
    segs[seg.getAttribute("data-stage")] = seg.getAttribute("data-status");
  return {
    dag: tile.getAttribute("data-dag-id"),
    build: b ? b.textContent.replace(/[^0-9]/g, "") : "",
    status: s ? s.getAttribute("data-status") : null,
    stages: segs,
  };
})
"""

WALL_SEL = "[data-testid=tile] [data-testid=tile-status]"
# The calls that bring each page its rows (URL parts), for the breakdown of the first render.
DATA_CALLS = {"wall": ("/v1/dashboard/wall",), "dags": ("/ui/dags", "/api/v2/dags")}
# Airflow 3.3's DAG list: one link per DAG card (card view, its default), or table rows.
DAGS_SELECTORS = (
    '[data-testid=card-list] a[href*="/dags/bench_dash_"]',
    "[data-testid=dag-card]",
    "[data-testid=table-list] tbody tr",
)


class Browser:
    """Headless Chromium through Playwright, with a marker to find its processes by."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self.marker = f"--bkci-bench-{uuid.uuid4().hex[:8]}"
        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, self.marker]
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.browser.close()
        with contextlib.suppress(Exception):
            self._pw.stop()

    def renderers(self) -> list[psutil.Process]:
        """The renderer processes of this browser (found by the marker on its command line)."""
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if self.marker in cmd and not any(a.startswith("--type=") for a in cmd):
                found = []
                for child in proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        if "--type=renderer" in child.cmdline():
                            found.append(child)
                return found
        return []

    def context(self, st: AirflowStack, token: str) -> Any:
        ctx = self.browser.new_context(viewport={"width": 1920, "height": 1080})
        ctx.add_cookies([{"name": "_token", "value": token, "url": st.api_url}])
        return ctx


@dataclass
class Render:
    page: str
    dom_ms: float | None  # navigation start to the condition, in the page's clock
    frame_ms: float | None  # … to the end of the next frame after it
    html_ms: float  # navigation start to the HTML's responseEnd
    assets_ms: float  # … to the last script or style sheet received before the condition
    data_ms: float  # … to the last data call received before the condition (see DATA_CALLS)
    requests: int
    count: int  # elements matched when it ended (the target if it did not time out)


def first_render(
    br: Browser, st: AirflowStack, token: str, path: str, sel: str, want: int
) -> Render:
    ctx = br.context(st, token)
    try:
        ctx.add_init_script(RENDER_JS % (want, json.dumps(sel)))
        page = ctx.new_page()
        page.goto(f"{st.api_url}{path}", wait_until="commit")
        with contextlib.suppress(Exception):  # reported as "timed out" with the count reached
            page.wait_for_function(
                "() => window.__benchRender && window.__benchRender.frame !== null",
                timeout=60_000,
                polling=50,
            )
        out = page.evaluate(
            """() => ({
              mark: window.__benchRender,
              nav: performance.getEntriesByType("navigation")[0]?.responseEnd ?? null,
              res: performance.getEntriesByType("resource").map((r) => (
                {name: r.name, type: r.initiatorType, end: r.responseEnd})),
            })"""
        )
        mark, res = out["mark"], out["res"]
        until = mark["dom"] if mark["dom"] is not None else float("inf")
        before = [r for r in res if r["end"] <= until]
        data = DATA_CALLS["wall" if path.startswith("/bkci/") else "dags"]
        return Render(
            path,
            mark["dom"],
            mark["frame"],
            out["nav"] or float("nan"),
            max((r["end"] for r in before if r["type"] in ("script", "link", "css")), default=0.0),
            max((r["end"] for r in before if any(d in r["name"] for d in data)), default=0.0),
            len(res),
            mark["count"],
        )
    finally:
        ctx.close()


def discover_dag_list(br: Browser, st: AirflowStack, token: str) -> tuple[str, int]:
    """Which rows Airflow's DAG list renders here and how many on its first page."""
    ctx = br.context(st, token)
    try:
        page = ctx.new_page()
        page.goto(f"{st.api_url}/dags", wait_until="commit")
        any_rows = ", ".join(DAGS_SELECTORS)
        with contextlib.suppress(Exception):
            page.wait_for_selector(any_rows, timeout=120_000)
            page.wait_for_load_state("networkidle", timeout=60_000)
        page.wait_for_timeout(2000)
        calls = page.evaluate(
            """() => performance.getEntriesByType("resource")
                .filter((r) => r.initiatorType === "fetch" || r.initiatorType === "xmlhttprequest")
                .map((r) => new URL(r.name).pathname)"""
        )
        say(f"render: Airflow's /dags page calls {sorted(set(calls))}")
        for sel in DAGS_SELECTORS:
            count = page.locator(sel).count()
            if count:
                return sel, count
        shot = Path(tempfile.gettempdir()) / f"bkci-bench-dash-dags-{os.getpid()}.png"
        page.screenshot(path=str(shot))
        raise RuntimeError(f"no DAG rows on Airflow's /dags page (screenshot: {shot})")
    finally:
        ctx.close()


def measure_renders(
    br: Browser, st: AirflowStack, token: str, reps: int
) -> tuple[list[Render], list[Render], str, int]:
    sel, rows = discover_dag_list(br, st, token)
    say(f"render: Airflow's /dags shows {rows} rows of {sel!r} on its first page")
    wall = f"/bkci/ui/wall?{wall_query()}"
    say("render: warm-up (one untimed load of each page)")
    first_render(br, st, token, wall, WALL_SEL, len(PIPELINES))
    first_render(br, st, token, "/dags", sel, rows)
    walls: list[Render] = []
    dags: list[Render] = []
    for rep in range(reps):
        order = [("wall", wall), ("dags", "/dags")]
        if rep % 2:
            order.reverse()
        for name, path in order:
            if name == "wall":
                r = first_render(br, st, token, path, WALL_SEL, len(PIPELINES))
                walls.append(r)
            else:
                r = first_render(br, st, token, path, sel, rows)
                dags.append(r)
            shown = f"{r.dom_ms:.0f} ms" if r.dom_ms is not None else f"timed out at {r.count}"
            say(
                f"render: rep {rep + 1} {name}: {shown} (HTML {r.html_ms:.0f} ms, assets "
                f"{r.assets_ms:.0f} ms, data {r.data_ms:.0f} ms, {r.requests} requests)"
            )
    return walls, dags, sel, rows


def _fmt_renders(rs: list[Render], attr: str) -> str:
    vals = [getattr(r, attr) for r in rs]
    if any(v is None for v in vals):
        return "timed out in " + str(sum(v is None for v in vals)) + " of " + str(len(vals))
    each = " ".join(f"{v:.0f}" for v in vals)
    return f"median {statistics.median(vals):7.0f}  max {max(vals):7.0f}  ({each})"


def report_renders(walls: list[Render], dags: list[Render], sel: str, rows: int) -> list[bool]:
    print()
    print(
        "FIRST RENDER, ms in the page's clock from navigation start (performance.now()), fresh "
        f"context per load, 1920x1080, {len(walls)} repetitions each, alternated; "
        f"{load_text()} at the end:"
    )
    print(
        f"  wall   = /bkci/ui/wall?pipelines=<the 50>: until {len(PIPELINES)} tiles with a "
        "[data-testid=tile-status] are in the DOM (HTML, assets, the session check, the wall "
        "call, rendering)"
    )
    print(f"  dags   = Airflow's /dags: until its {rows} rows ({sel}) are in the DOM")
    print("  +frame = the same, to the end of the next frame after it (about when it is painted)")
    for name, rs in (("wall", walls), ("dags", dags)):
        print(f"  {name:<6} DOM    {_fmt_renders(rs, 'dom_ms')}")
        print(f"  {name:<6} +frame {_fmt_renders(rs, 'frame_ms')}")
        html = statistics.median(r.html_ms for r in rs)
        assets = statistics.median(r.assets_ms for r in rs)
        data = statistics.median(r.data_ms for r in rs)
        print(
            f"  {name:<6} medians: HTML received {html:.0f} ms, last script/style received "
            f"{assets:.0f} ms, last data call ({', '.join(DATA_CALLS[name])}) received {data:.0f} "
            f"ms; {statistics.median(r.requests for r in rs):.0f} requests"
        )
    ok_abs = ok_ratio = False
    wall_ms = [r.dom_ms for r in walls if r.dom_ms is not None]
    dags_ms = [r.dom_ms for r in dags if r.dom_ms is not None]
    if len(wall_ms) == len(walls) and len(dags_ms) == len(dags):
        w, d, worst = statistics.median(wall_ms), statistics.median(dags_ms), max(wall_ms)
        ratio = w / d
        ok_abs = w <= TARGET_RENDER_S * 1000
        ok_ratio = ratio <= TARGET_RENDER_RATIO
        print(f"ratio wall / Airflow's DAG list (medians, DOM): {ratio:.2f}")
        print(
            f"TARGET first render <= {TARGET_RENDER_S:.0f} s (median): {w:.0f} ms "
            f"(max {worst:.0f}) {'PASS' if ok_abs else 'FAIL'}"
        )
        print(
            f"TARGET <= {TARGET_RENDER_RATIO:.0f}x Airflow's DAG list: {ratio:.2f}x "
            f"{'PASS' if ok_ratio else 'FAIL'}"
        )
    else:
        print(
            f"TARGET first render <= {TARGET_RENDER_S:.0f} s and <= "
            f"{TARGET_RENDER_RATIO:.0f}x: FAIL (timed out)"
        )
    return [ok_abs, ok_ratio]


# --- memory under live updates ------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    heap_mb: float
    heap_total_mb: float
    nodes: int
    listeners: int
    documents: int
    rss_mb: float | None
    renderer_cpu_s: float | None
    written: int
    renders: int
    build_changes: int
    status_changes: int
    connection: str | None


def sample(cdp: Any, page: Any, br: Browser, writer: LiveWriter, t: float) -> Sample:
    cdp.send("HeapProfiler.collectGarbage")
    cdp.send("HeapProfiler.collectGarbage")
    m = {x["name"]: x["value"] for x in cdp.send("Performance.getMetrics")["metrics"]}
    rss = cpu = None
    procs = br.renderers()
    if procs:
        with contextlib.suppress(psutil.Error):
            biggest = max(procs, key=lambda p: p.memory_info().rss)
            rss = biggest.memory_info().rss / 2**20
            times = biggest.cpu_times()
            cpu = times.user + times.system
    live = page.evaluate(
        """() => ({r: window.__benchLive.renders, b: window.__benchLive.buildChanges,
          s: window.__benchLive.statusChanges,
          c: document.querySelector("[data-testid=connection]")?.getAttribute("data-state")})"""
    )
    return Sample(
        t,
        m["JSHeapUsedSize"] / 2**20,
        m["JSHeapTotalSize"] / 2**20,
        int(m["Nodes"]),
        int(m["JSEventListeners"]),
        int(m["Documents"]),
        rss,
        cpu,
        writer.counts.change_sets,
        live["r"],
        live["b"],
        live["s"],
        live["c"],
    )


def slope_per_10min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per 600 s."""
    if len(points) < 2:
        return float("nan")
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den * 600 if den else float("nan")


def measure_memory(
    br: Browser,
    st: AirflowStack,
    token: str,
    store: Store,
    newest: dict[str, LiveBuild],
    chars: dict[str, Character],
    events: Events,
    minutes: float,
) -> tuple[list[Sample], LiveWriter, dict[str, Any]]:
    ctx = br.context(st, token)
    errors: list[str] = []
    try:
        ctx.add_init_script(LIVE_JS)
        page = ctx.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)) if len(errors) < 20 else None)
        page.goto(f"{st.api_url}/bkci/ui/wall?{wall_query()}", wait_until="commit")
        page.wait_for_function(
            f"() => document.querySelectorAll({json.dumps(WALL_SEL)}).length >= {len(PIPELINES)}",
            timeout=120_000,
        )
        with contextlib.suppress(Exception):
            page.wait_for_selector('[data-testid=connection][data-state="live"]', timeout=30_000)
        page.wait_for_timeout(2000)
        cdp = ctx.new_cdp_session(page)
        cdp.send("Performance.enable")
        writer = LiveWriter(store, newest, chars, events, RATE)
        page.evaluate("() => { window.__benchLive.armedAt = Date.now(); }")
        started = utcnow()
        samples = [sample(cdp, page, br, writer, 0.0)]
        say(_line(samples[-1]))
        writer.start()
        t0 = time.monotonic()
        end = t0 + minutes * 60
        next_at = t0 + SAMPLE_EVERY
        while next_at <= end + 0.5:
            page.wait_for_timeout(max(0.0, next_at - time.monotonic()) * 1000)
            if writer.error:
                raise RuntimeError(f"the writer failed: {writer.error!r}") from writer.error
            samples.append(sample(cdp, page, br, writer, time.monotonic() - t0))
            say(_line(samples[-1]))
            next_at += SAMPLE_EVERY
        writer.stop_event.set()
        writer.join(30)
        page.wait_for_timeout(5000)  # let the last change sets reach the page
        shown = page.evaluate(TILES_JS)
        live = page.evaluate(
            "() => ({r: window.__benchLive.renders, b: window.__benchLive.buildChanges,"
            " s: window.__benchLive.statusChanges})"
        )
        check = compare_tiles(store, shown)
        check.update(live=live, page_errors=errors, stored=count_changes(store, started))
        return samples, writer, check
    finally:
        ctx.close()


def _num(value: float | None) -> float:
    return float("nan") if value is None else value


def _line(s: Sample) -> str:
    rss = f"{s.rss_mb:.0f}" if s.rss_mb is not None else "?"
    return (
        f"memory: t={s.t:5.0f}s heap {s.heap_mb:6.2f} MB nodes {s.nodes} listeners {s.listeners} "
        f"renderer RSS {rss} MB, written {s.written}, page: renders {s.renders} builds "
        f"{s.build_changes} statuses {s.status_changes}, connection {s.connection}"
    )


def count_changes(store: Store, since: datetime) -> int:
    """Change sets the store holds from ``since`` on (only the writer writes then)."""
    stmt = sa.select(sa.func.count()).where(ChangeRow.created_at >= since)
    with store.engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def compare_tiles(store: Store, shown: list[dict[str, Any]]) -> dict[str, Any]:
    """Each tile against the store's newest build of its pipeline: number, status, stages."""
    truth = {p["pipeline_id"]: p["latest_build"] for p in store.pipelines(PIPELINES)}
    by_dag = {t["dag"]: t for t in shown}
    same_build = same_status = same_stages = 0
    wrong: list[str] = []
    for dag_id in PIPELINES:
        latest = truth.get(dag_id) or {}
        tile = by_dag.get(dag_id)
        if tile is None:
            wrong.append(f"{dag_id}: no tile")
            continue
        snap = store.snapshot(latest["id"]) or {}
        stages = {
            sid: s["status"]
            for sid, s in ((snap.get("document") or {}).get("stages") or {}).items()
        }
        ok_b = tile["build"] == str(latest.get("build_num"))
        ok_s = tile["status"] == latest.get("status")
        # a finished build's tile may leave its segments out; a running one must show them
        ok_g = tile["stages"] == stages or (
            not tile["stages"] and latest.get("status") != "RUNNING"
        )
        same_build += ok_b
        same_status += ok_s
        same_stages += ok_g
        if not (ok_b and ok_s and ok_g) and len(wrong) < 5:
            wrong.append(
                f"{dag_id}: page #{tile['build']} {tile['status']} {tile['stages']}, store "
                f"#{latest.get('build_num')} {latest.get('status')} {stages}"
            )
    return {
        "build": same_build,
        "status": same_status,
        "stages": same_stages,
        "wrong": wrong,
    }


def report_memory(
    samples: list[Sample], writer: LiveWriter, check: dict[str, Any], minutes: float
) -> list[bool]:
    c = writer.counts
    print()
    print(
        f"MEMORY of one open wall (50 tiles) during {minutes:g} min of live updates: a writer in "
        f"this process applied {c.change_sets:,} change sets "
        f"({c.change_sets / (minutes * 60):.2f}/s; target rate {RATE:g}/s) through Store.apply "
        f"to the pipelines' newest builds; {load_text()} at the end"
    )
    print(
        "  Every 30 s: HeapProfiler.collectGarbage (twice), then Performance.getMetrics "
        "(JSHeapUsedSize: live JS objects after GC; Nodes: DOM nodes alive; JSEventListeners; "
        "Documents) and the RSS of the browser's largest renderer process (psutil; approximate: "
        "it includes V8's reserved but unused heap and Chromium's caches)"
    )
    head = (
        f"{'t s':>6}{'heap MB':>9}{'total MB':>9}{'nodes':>7}{'listen':>7}{'docs':>5}"
        f"{'RSS MB':>8}{'CPU s':>7}{'written':>8}{'renders':>8}{'builds':>7}{'status':>7}  conn"
    )
    print(head)
    print("-" * len(head))
    for s in samples:
        print(
            f"{s.t:6.0f}{s.heap_mb:9.2f}{s.heap_total_mb:9.2f}{s.nodes:7d}{s.listeners:7d}"
            f"{s.documents:5d}{_num(s.rss_mb):8.0f}{_num(s.renderer_cpu_s):7.1f}"
            f"{s.written:8d}{s.renders:8d}{s.build_changes:7d}{s.status_changes:7d}  {s.connection}"
        )
    print(
        "  written = change sets the writer applied; renders = data-updated-at changes in the page "
        "(elements whose status a render changed); builds / status = tile build-number and tile "
        "status changes the page showed (polled every 250 ms in the page)"
    )
    verdicts: list[bool] = []
    ref = next((s for s in samples if s.t >= 59), None)
    end_t = samples[-1].t
    last = [s for s in samples if s.t >= end_t - 60 and s.t >= 59]
    if ref is None or not last:
        print("FAIL: the run is shorter than a minute; nothing to compare")
        return [False]
    first = [s for s in samples if 0 < s.t < 61]
    after = [s for s in samples if s.t >= 59]
    cpu = [s for s in samples if s.renderer_cpu_s is not None]
    if len(cpu) >= 2 and cpu[-1].t > cpu[0].t:
        share = (cpu[-1].renderer_cpu_s - cpu[0].renderer_cpu_s) / (cpu[-1].t - cpu[0].t)  # type: ignore[operator]
        print(f"  renderer CPU during the run: {share * 100:.1f} % of one core")
    for name, get, unit in (
        ("JS heap after GC", lambda s: s.heap_mb, "MB"),
        ("DOM nodes", lambda s: float(s.nodes), ""),
        ("JS event listeners", lambda s: float(s.listeners), ""),
        ("renderer RSS", lambda s: s.rss_mb if s.rss_mb is not None else float("nan"), "MB"),
    ):
        first_mean = statistics.fmean(get(s) for s in first)
        last_mean = statistics.fmean(get(s) for s in last)
        slope = slope_per_10min([(s.t, get(s)) for s in after])
        print(
            f"  {name:<19} first minute {first_mean:9.2f} {unit:<2} (at 1:00 {get(ref):9.2f}), "
            f"last minute {last_mean:9.2f} {unit:<2}; growth per 10 min after 1:00 "
            f"{slope:+8.2f} {unit}"
        )
    growth = statistics.fmean(s.heap_mb for s in last) - ref.heap_mb
    ok = growth <= BOUND_HEAP_MB
    verdicts.append(ok)
    print(
        f"BOUND JS heap after GC: last minute's mean - value at 1:00 <= {BOUND_HEAP_MB:g} MB: "
        f"{growth:+.2f} MB {'PASS' if ok else 'FAIL'}"
    )
    for name, get in (
        ("DOM nodes", lambda s: s.nodes),
        ("JS event listeners", lambda s: s.listeners),
    ):
        base = get(ref)
        worst = max((abs(get(s) - base) / base if base else 0.0) for s in after)
        ok = worst <= BOUND_DOM_FRACTION
        verdicts.append(ok)
        print(
            f"BOUND {name} within {BOUND_DOM_FRACTION:.0%} of the value at 1:00 ({base}) at every "
            f"later sample: worst {worst:.1%} {'PASS' if ok else 'FAIL'}"
        )
    live = check["live"]
    print()
    print(
        f"UPDATES: writer: {c.change_sets:,} change sets in {c.applies:,} applies (the store "
        f"holds {check['stored']:,} change sets made during the run; {c.rejected} "
        f"events rejected), {c.builds_started} new builds started, {c.builds_finished} finished; "
        f"of the newest builds {c.build_status_changes} build status changes, "
        f"{c.stage_status_changes} stage status changes; apply p50 {pct(c.apply_ms, 50):.1f} ms, "
        f"p95 {pct(c.apply_ms, 95):.1f} ms; at most {c.behind_s:.2f} s behind schedule"
    )
    print(
        f"  page: {live['b']} tile build-number changes for {c.builds_started} new builds, "
        f"{live['s']} tile status changes for {c.build_status_changes} written, {live['r']:,} "
        f"renders (data-updated-at changes) for {c.change_sets:,} change sets"
    )
    print(
        f"  after the writer stopped (+5 s): build number as the store's newest in "
        f"{check['build']}/{len(PIPELINES)} tiles, status in {check['status']}/{len(PIPELINES)}, "
        f"stage segments in {check['stages']}/{len(PIPELINES)}"
    )
    for line in check["wrong"]:
        print(f"    {line}")
    if check["page_errors"]:
        print(f"  page errors: {check['page_errors'][:5]}")
    seen = live["b"] / c.builds_started if c.builds_started else 0.0
    ok = (
        seen >= BOUND_FOLLOWED
        and check["build"] == check["status"] == check["stages"] == len(PIPELINES)
        and c.rejected == 0
    )
    verdicts.append(ok)
    print(
        f"CHECK the tiles followed the writer: build-number changes seen >= {BOUND_FOLLOWED:.0%} "
        f"of new builds ({seen:.1%}) and every tile equal to the store at the end: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return verdicts


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="memory run length (20)")
    parser.add_argument("--reps", type=int, default=5, help="first-render repetitions (5)")
    parser.add_argument("--api-calls", type=int, default=20, help="wall API calls per store size")
    parser.add_argument(
        "--pg", action="store_true", help="status store on PostgreSQL (127.0.0.1:5432)"
    )
    parser.add_argument("--skip-memory", action="store_true", help="only the API and first render")
    parser.add_argument("--keep", action="store_true", help="keep the stack's home")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.access(CHROMIUM, os.X_OK):
        print(f"skipped: no Chromium at {CHROMIUM} (apt-get install chromium, or BKCI_CHROMIUM)")
        return 2
    home = Path(tempfile.mkdtemp(prefix="bkci-bench-dash-"))
    with pg_stores(args.pg) as (big_url, small_url):
        st = make_stack(home, big_url, args.keep)
        store = Store(st.store_url)
        copy = Store(small_url or f"sqlite:///{home / 'bkci' / 'small-copy.db'}")
        try:
            verdicts = run(args, st, store, copy)
        finally:
            store.dispose()
            copy.dispose()
            st.stop()
            if args.keep:
                say(f"kept {home}")
            else:
                shutil.rmtree(home, ignore_errors=True)
    return 0 if verdicts and all(verdicts) else 1


def seed(args: argparse.Namespace, store: Store, small: bool, state: dict[str, Any]) -> int:
    """The small store (history sample + real builds), or the rest of the history."""
    t0 = time.perf_counter()
    if small:
        store.migrate()
        count = insert_history(store, state["now"], True, state["chars"])
        state["newest"] = seed_real(store, state["now"], state["events"], state["chars"])
        real = REAL_PER_PIPELINE * len(PIPELINES)
        say(
            f"{state.get('label', 'store')}: {'PostgreSQL' if args.pg else 'SQLite'}, "
            f"{count + real:,} builds ({count} "
            f"bulk-inserted, {real} through Store.apply) in {time.perf_counter() - t0:.1f} s"
        )
        return count + real
    count = insert_history(store, state["now"], False, state["chars"])
    seconds = time.perf_counter() - t0
    say(f"store: {count:,} more builds bulk-inserted in {seconds:.1f} s ({count / seconds:,.0f}/s)")
    return count


def run(args: argparse.Namespace, st: AirflowStack, store: Store, copy: Store) -> list[bool]:
    state: dict[str, Any] = {"now": utcnow(), "chars": characters(), "events": Events("bench@dash")}
    small = seed(args, store, True, state)
    # the same first 1,000 builds again in a store of their own (same generators, same times)
    seed(args, copy, True, state | {"events": Events("bench@dash"), "label": "1,000-build copy"})
    st.start(expect_dags=set(PIPELINES), timeout=300.0)
    token = st.token()
    say(f"api: timing the wall over {small:,} builds")
    api_small = time_api(st, store, copy, args.api_calls)
    total = small + seed(args, store, False, state)
    say(f"api: timing the wall over {total:,} builds")
    api_big = time_api(st, store, copy, args.api_calls)
    report_api(api_small, api_big, (small, total))
    br = Browser()
    try:
        verdicts = report_renders(*measure_renders(br, st, token, args.reps))
        if not args.skip_memory:
            say(f"memory: {args.minutes:g} min with the wall open, {RATE:g} change sets/s")
            memory = measure_memory(
                br, st, token, store, state["newest"], state["chars"], state["events"], args.minutes
            )
            verdicts += report_memory(*memory, args.minutes)
    finally:
        br.close()
    print(f"\n{load_text()} at the end (the machine is shared)")
    return verdicts


if __name__ == "__main__":
    sys.exit(main())
