"""Benchmark the change stream: bytes against a snapshot per change, and dispatcher throughput.

    .venv/bin/python benchmarks/delivery.py                 # both parts, SQLite and PostgreSQL
    .venv/bin/python benchmarks/delivery.py --skip-postgres # no PostgreSQL server here

No Airflow stack: the status store is fed the events the collectors would store, and
a receiver runs in a process of its own. See benchmarks/README.md ("Delivery") for
what each figure includes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from airflow_bkci.channels.dispatcher import Dispatcher
from airflow_bkci.channels.envelope import change_event, encode_batch, encode_event, snapshot_event
from airflow_bkci.channels.signing import generate_secret
from airflow_bkci.channels.webhook import Endpoint, WebhookChannel
from airflow_bkci.model import BuildStatus, NodeRef, StatusEvent
from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store

BYTES_TARGET = 50.0
THROUGHPUT_TARGET = 20_000.0
T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
S = BuildStatus
_seq = itertools.count(1)

# A receiver that takes every POST and answers 204: the figure is ours, not a consumer's.
RECEIVER = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


def event(dag: str, run: str, task: str | None, status: S, at: float, **fields: Any) -> StatusEvent:
    return StatusEvent(
        node=NodeRef(dag, run, task, -1),
        status=status,
        clear_number=0,
        try_number=1,
        source="db@scheduler",
        seq=next(_seq),
        at=T0 + timedelta(seconds=at),
        airflow_state=status.value.lower(),
        fields=fields,
    )


def iso(at: float) -> str:
    return (T0 + timedelta(seconds=at)).isoformat()


def task_fields(i: int, stages: int) -> dict[str, Any]:
    stage = i % stages
    return {
        "stage": f"stage_{stage:02d}",
        "stage_name": f"Stage {stage}",
        "order": i,
        "operator": "BashOperator",
        "queue": "default",
        "pool": "default_pool",
    }


# -- (a) bytes --------------------------------------------------------------------------


def build_life(dag: str, run: str, tasks: int, stages: int) -> Iterator[list[StatusEvent]]:
    """One build as the scheduler-side collector stores it: a batch per observed change.

    The run starts, every task is queued (one batch), then each task runs and
    succeeds in its own batch: the live stream of a build with ``tasks`` tasks.
    """
    yield [event(dag, run, None, S.RUNNING, 0, run_type="manual", trigger_type="manual")]
    yield [event(dag, run, f"t{i:03d}", S.QUEUE, 1, **task_fields(i, stages)) for i in range(tasks)]
    at = 2.0
    for i in range(tasks):
        host = f"worker-{i % 8}.example.internal"
        yield [event(dag, run, f"t{i:03d}", S.RUNNING, at, hostname=host, started_at=iso(at))]
        yield [event(dag, run, f"t{i:03d}", S.SUCCEED, at + 1, ended_at=iso(at + 1))]
        at += 1.5
    yield [event(dag, run, None, S.SUCCEED, at)]


def measure_bytes(tasks: int, stages: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'status.db'}")
        store.migrate()
        build_id = build_id_for("bench", "r1")
        ours = theirs = changes = 0
        for batch in build_life("bench", "r1", tasks, stages):
            store.apply(batch)
            snap = store.snapshot(build_id)
            assert snap is not None
            new = store.changes(build_id, after=snap["sequence"] - 1, limit=1)
            if not new or new[0]["sequence"] != snap["sequence"] or changes == snap["sequence"]:
                continue  # this batch changed nothing
            changes = snap["sequence"]
            common = {"source": "/airflow-bkci", "pipeline_id": "bench", "build_id": build_id}
            ours += len(
                encode_event(
                    change_event(**common, sequence=changes, patch=new[0]["patch"], time=T0)
                )
            )
            theirs += len(
                encode_event(
                    snapshot_event(**common, sequence=changes, document=snap["document"], time=T0)
                )
            )
        final = len(json.dumps(snap["document"]))
        store.dispose()
    return {
        "tasks": tasks,
        "change_sets": changes,
        "ours_bytes": ours,
        "snapshot_per_change_bytes": theirs,
        "final_document_bytes": final,
        "ratio": theirs / ours,
    }


# -- (c) throughput ---------------------------------------------------------------------


@contextmanager
def receiver() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"bkci_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def fill(store: Store, builds: int, per_build: int) -> int:
    """``builds`` builds with ``per_build`` change sets each; one transaction per step."""
    tasks = per_build // 2
    store.apply(
        [event("bench", f"r{b}", None, S.RUNNING, 0) for b in range(builds)]
    )  # opens the builds; its change sets are part of the count
    for i in range(tasks):
        for status, at in ((S.RUNNING, i * 2 + 1), (S.SUCCEED, i * 2 + 2)):
            store.apply(
                [
                    event("bench", f"r{b}", f"t{i:03d}", status, at, **task_fields(i, 5))
                    for b in range(builds)
                ]
            )
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM bkci_change").scalar_one())


def measure_throughput(url: str, builds: int, per_build: int, batch: int) -> dict[str, Any]:
    store = Store(url)
    store.migrate()
    t0 = time.perf_counter()
    total = fill(store, builds, per_build)
    filled_s = time.perf_counter() - t0
    secret = generate_secret()
    with receiver() as receiver_url:
        channel = WebhookChannel(Endpoint("bench", receiver_url, secret))
        dispatcher = Dispatcher(store, [channel], batch_size=batch, batch_wait=0)
        t0 = time.perf_counter()
        report = dispatcher.drain(timeout=600)
        dispatch_s = time.perf_counter() - t0
        assert report.sent_events == total, (report, total)
        assert report.failed_lanes == 0 and report.snapshots == 0, report
        # Baseline, same run and receiver: the same change sets, already read and
        # encoded, POSTed signed in batches of the same size; no outbox.
        changes = [
            change_event(
                source="/airflow-bkci",
                pipeline_id="bench",
                build_id=c["build_id"],
                sequence=c["sequence"],
                patch=c["patch"],
                time=T0,
            )
            for c in _all_changes(store)
        ]
        bodies = [changes[i : i + batch] for i in range(0, len(changes), batch)]
        session = requests.Session()
        t0 = time.perf_counter()
        for events in bodies:
            body = encode_batch(events)
            headers = {"Content-Type": "application/cloudevents-batch+json"}
            headers |= channel.signer.headers("b", body)
            session.post(receiver_url, data=body, headers=headers, timeout=30).raise_for_status()
        raw_s = time.perf_counter() - t0
        channel.close()
    store.dispose()
    return {
        "change_sets": total,
        "fill_s": filled_s,
        "dispatch_s": dispatch_s,
        "per_s": total / dispatch_s,
        "raw_post_s": raw_s,
        "raw_per_s": total / raw_s,
        "requests": len(bodies),
    }


def _all_changes(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT c.build_id, c.sequence, c.patch FROM bkci_change c ORDER BY c.id"
        ).all()
    return [
        {
            "build_id": r.build_id,
            "sequence": r.sequence,
            "patch": json.loads(r.patch) if isinstance(r.patch, str) else r.patch,
        }
        for r in rows
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500, help="tasks of the bytes build")
    parser.add_argument("--builds", type=int, default=200)
    parser.add_argument("--per-build", type=int, default=100, help="change sets per build")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--reps", type=int, default=3, help="throughput repetitions")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1/postgres")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-bytes", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ok = True

    if not args.skip_bytes:
        b = measure_bytes(args.tasks, stages=10)
        passed = b["ratio"] >= BYTES_TARGET
        ok &= passed
        print(
            f"(a) bytes, one build of {b['tasks']} tasks, {b['change_sets']} change sets:\n"
            f"    change stream {b['ours_bytes']:,} B; a snapshot per change "
            f"{b['snapshot_per_change_bytes']:,} B (final document {b['final_document_bytes']:,}"
            f" B)\n    ratio {b['ratio']:.0f}x fewer bytes (target >= {BYTES_TARGET:.0f}x) "
            f"{'PASS' if passed else 'FAIL'}"
        )

    backends = [("sqlite", None)] + ([] if args.skip_postgres else [("postgresql", args.postgres)])
    for name, admin in backends:
        runs = []
        for _ in range(args.reps):
            if admin is None:
                with tempfile.TemporaryDirectory() as tmp:
                    url = f"sqlite:///{Path(tmp) / 'status.db'}"
                    runs.append(measure_throughput(url, args.builds, args.per_build, args.batch))
            else:
                with postgres_database(admin) as url:
                    runs.append(measure_throughput(url, args.builds, args.per_build, args.batch))
        per_s = statistics.median(r["per_s"] for r in runs)
        raw = statistics.median(r["raw_per_s"] for r in runs)
        passed = per_s >= THROUGHPUT_TARGET
        ok &= passed
        r = runs[0]
        each = ", ".join(f"{x['per_s']:,.0f}" for x in runs)
        print(
            f"(c) dispatcher throughput, {name}: {r['change_sets']:,} change sets of "
            f"{args.builds} builds, batches of {args.batch} ({r['requests']} requests)\n"
            f"    median of {len(runs)}: {per_s:,.0f} change sets/s through the outbox "
            f"(target >= {THROUGHPUT_TARGET:,.0f}/s) {'PASS' if passed else 'FAIL'}\n"
            f"    baseline, same run: {raw:,.0f}/s for the same batches POSTed without the "
            f"outbox; outbox/baseline = {per_s / raw:.2f}\n"
            f"    runs: {each}/s; filling the store "
            f"took {statistics.median(x['fill_s'] for x in runs):.1f}s (not counted)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
