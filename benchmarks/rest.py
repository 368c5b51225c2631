"""Benchmark the query API's build list over a store of 100,000 builds (SQLite and PostgreSQL).

    .venv/bin/python benchmarks/rest.py                  # both databases
    .venv/bin/python benchmarks/rest.py --skip-postgres  # no PostgreSQL server here

No Airflow stack: the app is called in-process through its ASGI interface (httpx), with a real
SimpleAuthManager JWT check. See benchmarks/README.md ("REST") for what each figure includes.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

# Airflow reads its home at import: a throw-away one, for the auth manager's revoked-token table.
_HOME = tempfile.mkdtemp(prefix="bkci-bench-rest-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = _HOME
os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", uuid.uuid4().hex * 2)  # 64 bytes
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# Airflow's API app imports Starlette's TestClient, which warns without httpx2.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from airflow_bkci.api.app import create_app  # noqa: E402
from airflow_bkci.api.query_support import encode_cursor, fingerprint  # noqa: E402
from airflow_bkci.model.event import build_id_for  # noqa: E402
from airflow_bkci.model.status import BuildStatus  # noqa: E402
from airflow_bkci.store import Store  # noqa: E402
from airflow_bkci.store.queries import BuildFilter  # noqa: E402
from airflow_bkci.store.tables import BuildRow, PipelineRow  # noqa: E402

TARGET_P95_MS = 50.0
BUILDS = 100_000
MAIN = "bench_main"  # half the builds; the other half spread over 50 pipelines
OTHERS = 50
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
STATUSES = ["SUCCEED"] * 8 + ["FAILED", "CANCELED"]
TRIGGERS = ["timetable"] * 6 + ["ui", "rest_api", "backfill", "asset"]
USERS = [None] * 6 + ["alice", "bob", "carol", "dave"]


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- data ------------------------------------------------------------------------------------


def document(build_id: str, dag_id: str, run_id: str, num: int, status: str) -> dict[str, Any]:
    """A small build document (about 600 bytes): the list never reads it, but it fills pages."""
    task = {"status": status, "try_number": 1, "operator": "PythonOperator", "host": "worker-1"}
    return {
        "id": build_id,
        "pipeline_id": dag_id,
        "run_id": run_id,
        "build_num": num,
        "status": status,
        "stages": {
            "__ungrouped__": {"id": "__ungrouped__", "tasks": {f"t{i}": task for i in range(3)}}
        },
    }


def rows(rng: random.Random) -> Iterator[tuple[dict[str, Any], ...]]:
    """Every build row, in chunks; a build every 30 s per pipeline, newest in 2025."""
    plan = [(MAIN, BUILDS // 2)] + [
        (f"bench_{i:02d}", BUILDS // 2 // OTHERS) for i in range(OTHERS)
    ]
    chunk: list[dict[str, Any]] = []
    for dag_id, count in plan:
        for num in range(1, count + 1):
            run_id = f"scheduled__{num:06d}"
            build_id = build_id_for(dag_id, run_id)
            status = rng.choice(STATUSES)
            due = T0 + timedelta(seconds=30 * num)
            chunk.append(
                {
                    "build_id": build_id,
                    "dag_id": dag_id,
                    "run_id": run_id,
                    "build_num": num,
                    "status": status,
                    "run_after": due,
                    "queued_at": due,
                    "started_at": due + timedelta(seconds=2),
                    "ended_at": due + timedelta(seconds=2 + rng.randint(5, 600)),
                    "created_at": due,
                    "updated_at": due,
                    "document": document(build_id, dag_id, run_id, num, status),
                    "sequence": 3,
                    "trigger_type": rng.choice(TRIGGERS),
                    "triggering_user": rng.choice(USERS),
                }
            )
            if len(chunk) == 5000:
                yield tuple(chunk)
                chunk = []
    if chunk:
        yield tuple(chunk)


def fill(store: Store) -> float:
    """Bulk-insert 100,000 builds straight into the tables (not through apply); seconds taken."""
    started = time.perf_counter()
    rng = random.Random(7)
    pipelines = [MAIN] + [f"bench_{i:02d}" for i in range(OTHERS)]
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(PipelineRow),
            [{"dag_id": d, "last_build_num": 0, "created_at": T0} for d in pipelines],
        )
        for chunk in rows(rng):
            conn.execute(sa.insert(BuildRow), list(chunk))
        conn.execute(
            sa.update(PipelineRow).values(
                last_build_num=sa.select(sa.func.max(BuildRow.build_num))
                .where(BuildRow.dag_id == PipelineRow.dag_id)
                .scalar_subquery()
            )
        )
    with store.engine.connect() as conn:  # statistics, as autovacuum/ANALYZE would keep them
        conn.execute(sa.text("ANALYZE"))
        conn.commit()
    return time.perf_counter() - started


# --- auth -------------------------------------------------------------------------------------


def auth_manager() -> tuple[Any, str]:
    """Airflow's SimpleAuthManager, installed as the API server's, and an admin's token.

    Each request verifies the JWT and looks it up in Airflow's ``revoked_token`` table (a
    SQLite file in a throw-away AIRFLOW_HOME), as the API server does.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from airflow import settings
        from airflow.api_fastapi.app import _AuthManagerState
        from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from airflow.models.revoked_token import RevokedToken

    assert settings.engine is not None
    RevokedToken.__table__.create(settings.engine, checkfirst=True)  # type: ignore[attr-defined]
    manager = SimpleAuthManager()  # type: ignore[no-untyped-call]
    manager.init()
    _AuthManagerState.instance = manager
    token = manager.generate_jwt(SimpleAuthManagerUser(username="bench", role="admin"))
    return manager, token


# --- timing -----------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]


async def timed(call: Callable[[], Awaitable[Any]], n: int, warmup: int) -> list[float]:
    return (await paired([call], n, warmup))[0]


async def paired(
    calls: list[Callable[[], Awaitable[Any]]], n: int, warmup: int
) -> list[list[float]]:
    """Milliseconds per call of each, alternating, so a busy moment of the machine hits all."""
    for _ in range(warmup):
        for call in calls:
            await call()
    out: list[list[float]] = [[] for _ in calls]
    for _ in range(n):
        for times, call in zip(out, calls, strict=True):
            started = time.perf_counter_ns()
            await call()
            times.append((time.perf_counter_ns() - started) / 1e6)
    return out


def fmt(values: list[float]) -> str:
    return f"p50 {pct(values, 50):7.2f}  p95 {pct(values, 95):7.2f}  p99 {pct(values, 99):7.2f} ms"


DAY = (T0 + timedelta(days=5), T0 + timedelta(days=6))  # inside MAIN's 17 days of builds
SCENARIOS: list[tuple[str, dict[str, Any], BuildFilter]] = [
    ("first page, 50 builds", {"limit": 50}, BuildFilter()),
    ("page at depth 25,000 (cursor)", {"limit": 50, "deep": True}, BuildFilter()),
    (
        "status=FAILED",
        {"limit": 50, "status": "FAILED"},
        BuildFilter(statuses=(BuildStatus.FAILED,)),
    ),
    (
        "trigger_type=ui & triggering_user=alice",
        {"limit": 50, "trigger_type": "ui", "triggering_user": "alice"},
        BuildFilter(trigger_types=("ui",), triggering_user="alice"),
    ),
    (
        "one day (since/until)",
        {"limit": 50, "since": DAY[0].isoformat(), "until": DAY[1].isoformat()},
        BuildFilter(since=DAY[0], until=DAY[1]),
    ),
    ("first page, 500 builds", {"limit": 500}, BuildFilter()),
]


def deep_cursor(store: Store, depth: int) -> tuple[str, tuple[datetime, int]]:
    """The cursor a client holds after paging down to ``depth`` builds of MAIN (no filters)."""
    last = store.build_page(MAIN, BuildFilter(), None, depth)[-1]
    scope = "builds:" + fingerprint(
        dag_id=MAIN, status=[], since=None, until=None, trigger_type=[], triggering_user=None
    )
    key = (datetime.fromisoformat(last["run_after"]), int(last["build_num"]))
    return encode_cursor(scope, [last["run_after"], last["build_num"]]), key


async def measure(store: Store, label: str, n: int, warmup: int) -> list[tuple[str, float]]:
    _, token = auth_manager()
    app = create_app(store_factory=lambda: store, dispatcher_factory=lambda: None)
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/v1/pipelines/{MAIN}/builds"
    results: list[tuple[str, float]] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        health = await timed(lambda: client.get("/health"), n, warmup)
        print(f"  {label}: GET /health (no auth, no database)  {fmt(health)}")
        print(
            "  route = the build list through ASGI (JWT + revoked-token check, DAG check, query, "
            "JSON);\n  baseline = Store.build_page alone (the route's SELECT on the same engine);\n"
            "  offset = the deep page by OFFSET 25,000 (Store.builds), for scale"
        )
        for name, spec, flt in SCENARIOS:
            params = {k: v for k, v in spec.items() if k != "deep"}
            after = None
            if spec.get("deep"):
                params["cursor"], after = deep_cursor(store, 25_000)

            async def route(params: dict[str, Any] = params) -> None:
                resp = await client.get(url, params=params, headers=headers)
                if resp.status_code != 200:
                    raise RuntimeError(f"{url} {params}: {resp.status_code} {resp.text}")

            # The route reads one build more than the page, to know whether a page follows.
            async def bare(
                flt: BuildFilter = flt, after: Any = after, size: int = spec["limit"] + 1
            ) -> None:
                store.build_page(MAIN, flt, after, size)

            route_ms, store_ms = await paired([route, bare], n, warmup)
            got = len((await client.get(url, params=params, headers=headers)).json()["builds"])
            p95 = pct(route_ms, 95)
            print(f"  {label}: {name} -> {got} builds")
            print(
                f"      {'route':<9} {fmt(route_ms)}  {'PASS' if p95 <= TARGET_P95_MS else 'FAIL'}"
            )
            print(f"      {'baseline':<9} {fmt(store_ms)}")
            print(
                f"      route/baseline p50 {pct(route_ms, 50) / pct(store_ms, 50):.1f}x; "
                f"route - /health p50 {pct(route_ms, 50) - pct(health, 50):.2f} ms"
            )
            if spec.get("deep"):

                async def offset() -> None:
                    store.builds(MAIN, limit=50, offset=25_000)

                offset_ms = await timed(offset, max(20, n // 10), 2)
                print(f"      {'offset':<9} {fmt(offset_ms)}")
            results.append((name, p95))
    return results


# --- databases ----------------------------------------------------------------------------------


@contextmanager
def sqlite_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory(prefix="bkci-rest-") as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'status.db'}")
        store.migrate()
        yield store
        store.dispose()


@contextmanager
def postgres_store(admin_url: str) -> Iterator[Store]:
    admin = sa.create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    name = f"bkci_bench_rest_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    store = Store(admin.url.set(database=name).render_as_string(hide_password=False))
    try:
        store.migrate()
        yield store
    finally:
        store.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def run(label: str, store_cm: Any, n: int, warmup: int) -> list[tuple[str, float]]:
    with store_cm as store:
        say(f"{label}: filling {BUILDS:,} builds")
        seconds = fill(store)
        with store.engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(BuildRow)).scalar()
        say(f"{label}: {count:,} builds in {seconds:.1f} s; {n} timed requests per figure")
        return asyncio.run(measure(store, label, n, warmup))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BKCI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("-n", type=int, default=300, help="timed requests per figure")
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    verdicts: list[tuple[str, str, float]] = []
    backends: list[tuple[str, Any]] = [("sqlite", sqlite_store())]
    if not args.skip_postgres:
        backends.append(("postgresql", postgres_store(args.postgres)))
    for label, cm in backends:
        verdicts += [(label, name, p95) for name, p95 in run(label, cm, args.n, args.warmup)]
    print(f"\nTarget: build-list route p95 <= {TARGET_P95_MS:.0f} ms over {BUILDS:,} builds")
    failed = 0
    for label, name, p95 in verdicts:
        ok = p95 <= TARGET_P95_MS
        failed += not ok
        print(f"  {label:<10} {name:<42} p95 {p95:7.2f} ms  {'PASS' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
