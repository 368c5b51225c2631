"""Batch cancel against a real Airflow (scheduler running): all or nothing, CANCELED, never FAILED.

Each test triggers builds of its own, cancels them with the service on the
stack's database, and checks what a user would: the runs' and tasks' states in
Airflow, the task processes, the pool, notes, audit rows, markers, and the
status every receiver is told.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from airflow_bkci.cancel import CancelRejected, CancelRequest, CancelService, Outcome
from airflow_bkci.cancel.service import cancel_engine
from airflow_bkci.devstack import AirflowStack
from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store
from tests.integration.helpers import airflow_rows, eventually

LONG = "bkci_cancel_long"
TEARDOWN = "bkci_cancel_teardown"
RACE = "bkci_cancel_race"


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.integration),
        pytest.param("pg", marks=[pytest.mark.integration, pytest.mark.postgres]),
    ]
)
def stack(request: pytest.FixtureRequest) -> AirflowStack:
    stack: AirflowStack = request.getfixturevalue(f"{request.param}_stack")
    return stack


@pytest.fixture
def pg(pg_stack: AirflowStack) -> AirflowStack:
    return pg_stack


@pytest.fixture
def service(stack: AirflowStack) -> Iterator[CancelService]:
    yield from _service(stack)


@pytest.fixture
def pg_service(pg: AirflowStack) -> Iterator[CancelService]:
    yield from _service(pg)


def _service(stack: AirflowStack) -> Iterator[CancelService]:
    # Listener notification is what the API server adds; here the reconciler must do it all.
    svc = CancelService(cancel_engine(stack.db_url, 3.0), notify_listeners=False)
    yield svc
    svc.engine.dispose()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0, every: float = 0.5) -> Any:
    return eventually(check, timeout, what, every)


sql = airflow_rows


def ti_states(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, str | None]:
    rows = sql(
        stack,
        "SELECT task_id, state FROM task_instance WHERE dag_id=:d AND run_id=:r",
        d=dag_id,
        r=run_id,
    )
    return {r[0]: r[1] for r in rows}


def start_long_runs(stack: AirflowStack, count: int) -> list[str]:
    """Trigger ``count`` builds and wait until both long tasks of each are running."""
    runs = [stack.trigger(LONG) for _ in range(count)]

    def all_running() -> bool:
        pids = stack.home / "pids"
        return all((pids / f"{r}.{t}.pid").exists() for r in runs for t in ("long_a", "long_b"))

    wait_for("the long tasks to run", all_running, timeout=150)
    return runs


def pids_of(stack: AirflowStack, run_id: str) -> list[int]:
    return [
        int((stack.home / "pids" / f"{run_id}.{t}.pid").read_text()) for t in ("long_a", "long_b")
    ]


def stored(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, Any] | None:
    store = Store(stack.store_url)
    try:
        return store.build_tree(build_id_for(dag_id, run_id))
    finally:
        store.dispose()


def tasks_of(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {tid: t for stage in tree["stages"].values() for tid, t in stage["tasks"].items()}


def reported_statuses(stack: AirflowStack, dag_id: str, run_id: str) -> list[str]:
    """Every status the build itself had in the change sets receivers were sent, in order."""
    store = Store(stack.store_url)
    try:
        changes = store.changes(build_id_for(dag_id, run_id))
    finally:
        store.dispose()
    return [
        op["value"]
        for change in changes
        for op in change["patch"]
        if op["path"] == "/status" and op["op"] in ("add", "replace")
    ]


def wait_stored(stack: AirflowStack, dag_id: str, run_id: str, status: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        tree = stored(stack, dag_id, run_id)
        return tree if tree is not None and tree["status"] == status else None

    return wait_for(f"{dag_id}/{run_id} to be {status} in the store", reached, timeout=60)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the main case


def test_cancel_ends_running_builds_and_every_collector_reports_canceled(stack, service):
    runs = start_long_runs(stack, 3)
    result = service.cancel(
        CancelRequest(reason="superseded by #42", user="alice", runs=[(LONG, r) for r in runs])
    )

    assert [b.outcome for b in result.builds] == [Outcome.CANCELED] * 3
    for build in result.builds:
        assert build.failed == ["long_a", "long_b"]
        assert build.skipped == ["publish"]
        assert build.state == "failed"
    for run_id in runs:
        # On SQLite a scheduler pass begun before the cancel may write success over it for
        # a moment; the cancel's guard sets it back (cancel/guard.py). What stays is failed.
        wait_for(
            f"{run_id} failed in Airflow",
            lambda r=run_id: (
                sql(stack, "SELECT state FROM dag_run WHERE run_id=:r", r=r)[0][0] == "failed"
            ),
            timeout=15,
        )
        assert ti_states(stack, LONG, run_id) == {
            "prepare": "success",
            "long_a": "failed",
            "long_b": "failed",
            "publish": "skipped",
        }

    # Every task process stops through Airflow's heartbeat (409, SIGTERM, SIGKILL).
    pids = [p for r in runs for p in pids_of(stack, r)]
    wait_for(
        "the canceled task processes to exit",
        lambda: (
            not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        ),
        timeout=20,
        every=0.25,
    )

    # Their pool slots are free again.
    def pool_free() -> bool:
        pool = stack.api("GET", "/pools/default_pool")
        return pool["running_slots"] == 0 and pool["queued_slots"] == 0

    wait_for("default_pool to be free", pool_free, timeout=30)

    # Notes appended, one audit row and one marker per run, in Airflow's database.
    for run_id in runs:
        note = stack.api("GET", f"/dags/{LONG}/dagRuns/{run_id}")["note"]
        assert note.startswith("[bkci] canceled by alice at ")
        assert note.endswith(": superseded by #42")
    audit = sql(
        stack,
        "SELECT run_id, owner FROM log WHERE event='bkci_cancel' AND extra LIKE :c",
        c=f"%{result.cancel_id}%",
    )
    assert sorted(audit) == sorted((r, "alice") for r in runs)
    markers = sql(
        stack,
        "SELECT run_id, reason, canceled_by FROM bkci_cancel WHERE cancel_id=:c",
        c=result.cancel_id,
    )
    assert sorted(markers) == sorted((r, "superseded by #42", "alice") for r in runs)

    # The status pipeline: CANCELED with reason and user, never FAILED, tasks canceled.
    for run_id in runs:
        tree = wait_stored(stack, LONG, run_id, "CANCELED")
        assert tree["cancel_reason"] == "superseded by #42"
        assert tree["canceled_by"] == "alice"
        tasks = tasks_of(tree)
        assert {t: tasks[t]["status"] for t in tasks} == {
            "prepare": "SUCCEED",
            "long_a": "CANCELED",
            "long_b": "CANCELED",
            "publish": "CANCELED",
        }
        assert tasks["publish"]["detail"] == "canceled before start"
    # The killed tasks' own processes report FAILED on their way out; give them time.
    time.sleep(3)
    for run_id in runs:
        assert "FAILED" not in reported_statuses(stack, LONG, run_id)
        tree = stored(stack, LONG, run_id)
        assert tree is not None and tree["status"] == "CANCELED"
        assert tasks_of(tree)["long_a"]["status"] == "CANCELED"

    again = service.cancel(
        CancelRequest(reason="again", user="bob", runs=[(LONG, r) for r in runs])
    )
    assert [b.outcome for b in again.builds] == [Outcome.ALREADY_CANCELED] * 3
    assert (
        sql(stack, "SELECT count(*) FROM bkci_cancel WHERE cancel_id=:c", c=again.cancel_id)[0][0]
        == 0
    )


def test_dry_run_reports_exactly_what_would_change_and_changes_nothing(stack, service):
    (run_id,) = start_long_runs(stack, 1)
    request = CancelRequest(reason="preview", user="alice", runs=[(LONG, run_id)], dry_run=True)
    before = ti_states(stack, LONG, run_id)

    preview = service.cancel(request)

    assert preview.dry_run and preview.committed_at is None
    (build,) = preview.builds
    assert (build.outcome, build.failed, build.skipped) == (
        Outcome.CANCELED,
        ["long_a", "long_b"],
        ["publish"],
    )
    assert ti_states(stack, LONG, run_id) == before
    assert sql(stack, "SELECT state FROM dag_run WHERE run_id=:r", r=run_id)[0][0] == "running"
    assert (
        sql(stack, "SELECT count(*) FROM bkci_cancel WHERE cancel_id=:c", c=preview.cancel_id)[0][0]
        == 0
    )
    assert (
        sql(stack, "SELECT count(*) FROM log WHERE extra LIKE :c", c=f"%{preview.cancel_id}%")[0][0]
        == 0
    )
    assert stack.api("GET", f"/dags/{LONG}/dagRuns/{run_id}")["note"] is None

    real = service.cancel(CancelRequest(reason="now", user="alice", runs=[(LONG, run_id)]))
    assert [(b.outcome, b.failed, b.skipped) for b in real.builds] == [
        (build.outcome, build.failed, build.skipped)
    ]


def test_bad_input_is_refused_and_changes_nothing(stack, service):
    (run_id,) = start_long_runs(stack, 1)
    good = (LONG, run_id)
    cases: list[tuple[CancelRequest, int, str]] = [
        (
            CancelRequest(reason="x", user="u", runs=[good, (LONG, "no-such-run")]),
            404,
            "1 unknown builds",
        ),
        (CancelRequest(reason="x", user="u", runs=[("no_such_dag", "r")]), 404, "no_such_dag/r"),
        (CancelRequest(reason="x", user="u"), 400, "no builds given"),
        (CancelRequest(reason=" ", user="u", runs=[good]), 400, "reason is required"),
        (CancelRequest(reason="x" * 501, user="u", runs=[good]), 400, "at most 500"),
        (CancelRequest(reason="x", user="", runs=[good]), 400, "acting user"),
        (CancelRequest(reason="x", user="u", runs=[(LONG, "")]), 400, "not a (dag_id, run_id)"),
        (
            CancelRequest(reason="x", user="u", runs=[(LONG, f"r{i}") for i in range(100_000)]),
            413,
            "names at most 50000",
        ),
    ]
    for request, status, message in cases:
        with pytest.raises(CancelRejected) as refused:
            service.cancel(request)
        assert refused.value.status == status, request
        assert message in str(refused.value)

    small = CancelService(service.engine, atomic_limit=1, notify_listeners=False)
    (other,) = start_long_runs(stack, 1)
    with pytest.raises(CancelRejected) as over:
        small.cancel(CancelRequest(reason="x", user="u", runs=[good, (LONG, other)]))
    assert over.value.status == 413
    assert "atomic limit of 1" in str(over.value) and "chunked" in str(over.value)

    for run_id_ in (run_id, other):
        assert sql(stack, "SELECT state FROM dag_run WHERE run_id=:r", r=run_id_)[0][0] == "running"
        assert ti_states(stack, LONG, run_id_)["long_a"] == "running"
    assert (
        sql(stack, "SELECT count(*) FROM bkci_cancel WHERE run_id IN (:a, :b)", a=run_id, b=other)[
            0
        ][0]
        == 0
    )

    # Duplicates are reported and canceled once; chunked mode does each batch atomically.
    result = small.cancel(
        CancelRequest(reason="x", user="u", runs=[good, (LONG, other), good], chunked=True)
    )
    assert result.duplicates == [good]
    assert result.batches == 2
    assert [b.outcome for b in result.builds] == [Outcome.CANCELED, Outcome.CANCELED]


@pytest.mark.integration
@pytest.mark.postgres
def test_teardown_still_runs_after_a_cancel_and_the_build_stays_canceled(pg, pg_service):
    run_id = pg.trigger(TEARDOWN)
    wait_for(
        "deploy to run", lambda: ti_states(pg, TEARDOWN, run_id).get("deploy") == "running", 120
    )

    result = pg_service.cancel(
        CancelRequest(reason="env no longer needed", user="ops", runs=[(TEARDOWN, run_id)])
    )

    (build,) = result.builds
    assert build.outcome is Outcome.CANCELED_TEARDOWN_RUNNING
    assert (build.failed, build.skipped, build.teardowns) == (["deploy"], [], ["delete_env"])
    # CANCELED at once, while the clean-up has not even started.
    tree = wait_stored(pg, TEARDOWN, run_id, "CANCELED")
    assert tasks_of(tree)["delete_env"]["status"] in ("QUEUE", "PREPARE_ENV", "RUNNING")
    final = pg.wait_run(TEARDOWN, run_id, timeout=120)
    states = ti_states(pg, TEARDOWN, run_id)
    assert states == {"create_env": "success", "deploy": "failed", "delete_env": "success"}
    assert final == "failed"  # Airflow ends the run itself once the teardown is done
    (started,) = sql(
        pg,
        "SELECT start_date FROM task_instance WHERE run_id=:r AND task_id='delete_env'",
        r=run_id,
    )[0]
    assert started > result.committed_at
    time.sleep(2)
    tree = stored(pg, TEARDOWN, run_id)
    assert tree is not None and tree["status"] == "CANCELED"
    assert tasks_of(tree)["delete_env"]["status"] == "SUCCEED"
    assert "FAILED" not in reported_statuses(pg, TEARDOWN, run_id)


@pytest.mark.integration
@pytest.mark.postgres
def test_the_marker_survives_the_canceling_process_dying_right_after_commit(pg):
    (run_id,) = start_long_runs(pg, 1)
    script = f"""
import os, signal
from airflow_bkci.cancel import CancelRequest, CancelService
from airflow_bkci.cancel.service import cancel_engine
svc = CancelService(cancel_engine({pg.db_url!r}, 3.0))
svc.cancel(CancelRequest(reason="killed after commit", user="crash", runs=[({LONG!r}, {run_id!r})]))
os.kill(os.getpid(), signal.SIGKILL)  # before any listener hears of it
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    tree = wait_stored(pg, LONG, run_id, "CANCELED")
    assert tree["cancel_reason"] == "killed after commit"


@pytest.mark.integration
@pytest.mark.postgres
def test_overlapping_cancels_racing_the_scheduler_end_consistent(pg, pg_service):
    """Two cancels of overlapping builds, while the scheduler finishes some of them, many times."""
    rng = random.Random(20261201)
    for round_ in range(6):
        runs = [pg.trigger(RACE) for _ in range(8)]
        first = rng.sample(runs, 5)
        second = rng.sample(runs, 5)

        def cancel(name: str, targets: list[str], delay: float, round_: int = round_) -> Any:
            time.sleep(delay)
            request = CancelRequest(
                reason=f"race {round_}", user=name, runs=[(RACE, r) for r in targets]
            )
            return pg_service.cancel(request)

        with ThreadPoolExecutor(2) as pool:
            futures = {
                name: pool.submit(cancel, name, targets, rng.uniform(0.0, 3.0))
                for name, targets in (("one", first), ("two", second))
            }
            results = {name: f.result(timeout=120) for name, f in futures.items()}
        for run_id in runs:
            pg.wait_run(RACE, run_id, timeout=120)

        canceled_by: dict[str, str] = {}
        for name, result in results.items():
            for build in result.builds:
                if build.changed:
                    assert build.run_id not in canceled_by, f"round {round_}: canceled twice"
                    canceled_by[build.run_id] = name
        for run_id in runs:
            state = sql(pg, "SELECT state FROM dag_run WHERE run_id=:r", r=run_id)[0][0]
            marks = sql(pg, "SELECT canceled_by FROM bkci_cancel WHERE run_id=:r", r=run_id)
            states = set(ti_states(pg, RACE, run_id).values())
            if run_id in canceled_by:
                assert marks == [(canceled_by[run_id],)]
                assert state == "failed"
                assert states <= {"success", "failed", "skipped"}
                wait_stored(pg, RACE, run_id, "CANCELED")
            else:
                assert marks == []
                assert state == "success" and states == {"success"}
                wait_stored(pg, RACE, run_id, "SUCCEED")


GROUP = "bkci_cancel_group"


def test_a_newer_run_of_a_branch_cancels_the_earlier_ones(stack):
    """max_active_runs=1: three quick runs on a branch, one on another; the newest of each runs."""
    a1, a2, a3 = (stack.trigger(GROUP, conf={"branch": "feature-a"}) for _ in range(3))
    b1 = stack.trigger(GROUP, conf={"branch": "feature-b"})

    assert stack.wait_run(GROUP, a3, timeout=120) == "success"
    assert stack.wait_run(GROUP, b1, timeout=120) == "success"
    for superseded in (a1, a2):
        assert stack.wait_run(GROUP, superseded, timeout=60) == "failed"
        ((who, reason),) = sql(
            stack, "SELECT canceled_by, reason FROM bkci_cancel WHERE run_id=:r", r=superseded
        )
        assert who == "bkci:cancel-previous"
        # by a3, or by a2 if a pass ran between two triggers
        assert reason in {f"superseded by {GROUP}/{r} (group 'feature-a')" for r in (a2, a3)}
        tree = wait_stored(stack, GROUP, superseded, "CANCELED")
        assert tree["canceled_by"] == "bkci:cancel-previous"
    for newest in (a3, b1):
        assert sql(stack, "SELECT count(*) FROM bkci_cancel WHERE run_id=:r", r=newest)[0][0] == 0
        wait_stored(stack, GROUP, newest, "SUCCEED")


def test_the_command_previews_cancels_and_refuses(stack):
    (run_id,) = start_long_runs(stack, 1)
    command = [str(Path(sys.executable).parent / "airflow-bkci"), "cancel"]
    env = {**os.environ, **stack.env()}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    preview = cli(f"{LONG}/{run_id}", "--reason", "preview", "--dry-run")
    assert preview.returncode == 0, preview.stderr
    (row,) = [line for line in preview.stdout.splitlines() if line.endswith(run_id)]
    assert row.split()[2:7] == ["running", "canceled", "2", "1", "0"]
    assert "would change" in preview.stdout
    assert sql(stack, "SELECT state FROM dag_run WHERE run_id=:r", r=run_id)[0][0] == "running"

    refused = cli(f"{LONG}/{run_id}", f"{LONG}/nope", "--reason", "x")
    assert refused.returncode == 2
    assert f"1 unknown builds: {LONG}/nope" in refused.stderr
    assert sql(stack, "SELECT state FROM dag_run WHERE run_id=:r", r=run_id)[0][0] == "running"

    done = cli(f"{LONG}/{run_id}", "--reason", "from the shell", "--user", "carol", "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["summary"]["canceled"] == 1
    assert sql(stack, "SELECT canceled_by FROM bkci_cancel WHERE run_id=:r", r=run_id) == [
        ("carol",)
    ]
    wait_stored(stack, LONG, run_id, "CANCELED")


OPERATOR = "bkci_cancel_operator"


def test_the_operator_cancels_its_dags_earlier_runs_through_the_api(stack):
    first = stack.trigger(OPERATOR)
    wait_for(
        "the first roll-out",
        lambda: ti_states(stack, OPERATOR, first).get("roll_out") == "running",
        120,
    )
    second = stack.trigger(OPERATOR)

    assert stack.wait_run(OPERATOR, second, timeout=120) == "success"
    assert stack.wait_run(OPERATOR, first, timeout=30) == "failed"
    assert sql(stack, "SELECT canceled_by, reason FROM bkci_cancel WHERE run_id=:r", r=first) == [
        ("admin", "a newer deploy started")
    ]
    result = stack.api(
        "GET",
        f"/dags/{OPERATOR}/dagRuns/{second}/taskInstances/cancel_earlier/xcomEntries/return_value",
    )["value"]
    result = json.loads(result) if isinstance(result, str) else result
    assert result["summary"]["canceled"] == 1
    assert [b["run_id"] for b in result["builds"]] == [first]
    assert ti_states(stack, OPERATOR, first) == {"cancel_earlier": "success", "roll_out": "failed"}
    wait_stored(stack, OPERATOR, first, "CANCELED")


def test_airflows_listeners_hear_of_the_cancel_after_the_commit(stack, service, monkeypatch):
    """Other plugins see the cancel: failed hooks for the killed tasks and the ended run."""
    from airflow.listeners import listener as listener_module

    from airflow_bkci.cancel.notify import notify_in_background
    from airflow_bkci.listeners.server import CANCEL_MARK_ATTR

    heard: list[tuple[str, str, str, Any]] = []

    class Hooks:
        def on_task_instance_failed(self, previous_state, task_instance, error):
            mark = getattr(task_instance, CANCEL_MARK_ATTR)
            heard.append(("task", task_instance.task_id, str(task_instance.state), mark))

        def on_dag_run_failed(self, dag_run, msg):
            heard.append(("run", dag_run.run_id, msg, getattr(dag_run, CANCEL_MARK_ATTR)))

    manager = SimpleNamespace(hook=Hooks())
    monkeypatch.setattr(listener_module, "get_listener_manager", lambda: manager)
    (run_id,) = start_long_runs(stack, 1)
    request = CancelRequest(reason="tell everyone", user="dana", runs=[(LONG, run_id)])
    result = service.cancel(request)

    notify_in_background(service.engine, result, request).join(30)

    assert sorted(h[:3] for h in heard) == [
        ("run", run_id, "canceled by dana: tell everyone"),
        ("task", "long_a", "failed"),
        ("task", "long_b", "failed"),
    ]
    assert {(h[3].cancel_id, h[3].canceled_by) for h in heard} == {(result.cancel_id, "dana")}
