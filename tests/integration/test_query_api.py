"""The query routes on a real Airflow (SQLite and PostgreSQL): answers checked against Airflow's
database, pagination over real runs, and 401/403 with real tokens and a restricted user.

Reuses the session's example runs; only ``bkci_failure`` gets two more runs (once per stack),
so a pipeline has several builds to page through and measure.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import jsonpatch
import pytest
import requests

from airflow_bkci.devstack import AirflowStack
from airflow_bkci.model.event import build_id_for
from tests.integration.auth_manager import HIDDEN_DAG, LIMITED_PASSWORD, LIMITED_USER
from tests.integration.conftest import RUN_TIMEOUT, ExampleRuns
from tests.integration.helpers import airflow_rows, eventually, user_token

pytestmark = pytest.mark.timeout(900)

HTTP_TIMEOUT = 60
PAGED = "bkci_failure"  # fast: three tasks, deploy fails at once
STATUS = {"success": "SUCCEED", "failed": "FAILED"}
EXTRA_RUNS: dict[str, list[str]] = {}
"""Runs of PAGED this module triggered, per stack home."""


class Query:
    """The stack's query routes, as a client calls them."""

    def __init__(self, stack: AirflowStack) -> None:
        self.stack = stack
        self.url = f"{stack.api_url}/bkci/v1"

    def token(self, username: str, password: str) -> str:
        return user_token(self.stack, username, password)

    def get(self, path: str, token: str | None, **params: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(
            f"{self.url}{path}", params=params, headers=headers, timeout=HTTP_TIMEOUT
        )

    def ok(self, path: str, token: str, **params: Any) -> Any:
        resp = self.get(path, token, **params)
        assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text}"
        return resp.json()

    def pages(self, path: str, token: str, key: str, **params: Any) -> list[list[Any]]:
        pages, cursor = [], None
        while True:
            answer = self.ok(path, token, **params, **({"cursor": cursor} if cursor else {}))
            pages.append(answer[key])
            cursor = answer["next_cursor"]
            if cursor is None:
                return pages


@pytest.fixture
def stack(examples: tuple[AirflowStack, ExampleRuns]) -> AirflowStack:
    stack, _ = examples
    key = str(stack.home)
    if key not in EXTRA_RUNS:  # once per stack: two more builds of PAGED
        extra = [stack.trigger(PAGED) for _ in range(2)]
        for run_id in extra:
            assert stack.wait_run(PAGED, run_id, timeout=RUN_TIMEOUT) == "failed"
        EXTRA_RUNS[key] = extra
    return stack


@pytest.fixture
def query(stack: AirflowStack) -> Query:
    return Query(stack)


@pytest.fixture
def admin(stack: AirflowStack) -> str:
    return stack.token()


def dag_runs(stack: AirflowStack, dag_id: str) -> list[Any]:
    """Airflow's finished runs of the DAG, newest first as the query API orders builds."""
    return airflow_rows(
        stack,
        "SELECT run_id, state, triggered_by, triggering_user_name, run_after, queued_at, "
        "start_date, end_date FROM dag_run WHERE dag_id = :d AND state IN ('success', 'failed') "
        "ORDER BY run_after DESC",
        d=dag_id,
    )


def utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def listed(query: Query, token: str, dag_id: str, **params: Any) -> list[dict[str, Any]]:
    return [
        b
        for page in query.pages(f"/pipelines/{dag_id}/builds", token, "builds", **params)
        for b in page
    ]


# ------------------------------------------------------------------ against Airflow
def test_every_example_pipelines_builds_match_airflows_dag_runs(
    examples: tuple[AirflowStack, ExampleRuns], stack: AirflowStack, query: Query, admin: str
) -> None:
    _, runs = examples
    for dag_id in runs:
        truth = dag_runs(stack, dag_id)

        def settled(dag_id: str = dag_id, truth: list[Any] = truth) -> list[dict[str, Any]]:
            builds = listed(query, admin, dag_id, status=["SUCCEED", "FAILED"])
            statuses = [(b["run_id"], b["status"]) for b in builds]
            return builds if statuses == [(r.run_id, STATUS[r.state]) for r in truth] else []

        builds = eventually(settled, 60, f"{dag_id}: builds equal to Airflow's finished runs")
        for build, run in zip(builds, truth, strict=True):
            assert build["id"] == build_id_for(dag_id, run.run_id)
            assert build["trigger_type"] == str(run.triggered_by).lower()
            assert build["triggering_user"] == run.triggering_user_name
            assert utc(build["run_after"]) == utc(run.run_after)
            assert utc(build["queued_at"]) == utc(run.queued_at)
            assert utc(build["started_at"]) == utc(run.start_date)
            assert utc(build["ended_at"]) == utc(run.end_date)


def test_pagination_over_real_runs_lists_each_once_in_airflows_order(
    stack: AirflowStack, query: Query, admin: str
) -> None:
    truth = [r.run_id for r in dag_runs(stack, PAGED)]
    assert len(truth) >= 3
    pages = eventually(
        lambda: (
            (p := query.pages(f"/pipelines/{PAGED}/builds", admin, "builds", limit=1))
            and [b["run_id"] for page in p for b in page] == truth
            and p
        ),
        60,
        f"{PAGED}: one build per page, newest first",
    )
    assert all(len(page) == 1 for page in pages)

    def every_dag_that_ran_once() -> list[str]:
        pipelines = query.pages("/pipelines", admin, "pipelines", limit=2)
        names = [p["pipeline_id"] for page in pipelines for p in page]
        assert len(names) == len(set(names)) and names == sorted(names)
        ran = {r.dag_id for r in airflow_rows(stack, "SELECT DISTINCT dag_id FROM dag_run")}
        return names if set(names) == ran else []  # admin reads all

    eventually(every_dag_that_ran_once, 60, "pipelines: every DAG that ran, once, by id")


def test_snapshot_changes_and_history_of_a_real_build(
    stack: AirflowStack, query: Query, admin: str
) -> None:
    run_id = EXTRA_RUNS[str(stack.home)][0]
    build_id = build_id_for(PAGED, run_id)
    snapshot = eventually(
        lambda: (
            (s := query.ok(f"/builds/{build_id}", admin))["document"]["status"] == "FAILED" and s
        ),
        60,
        f"{build_id} FAILED in its snapshot",
    )
    tasks = {
        t["task_id"]: t["status"]
        for stage in snapshot["document"]["stages"].values()
        for t in stage["tasks"].values()
    }
    truth = airflow_rows(
        stack,
        "SELECT task_id, state FROM task_instance WHERE dag_id = :d AND run_id = :r",
        d=PAGED,
        r=run_id,
    )
    mapped = {"success": "SUCCEED", "failed": "FAILED", "upstream_failed": "UNEXEC"}
    assert tasks == {r.task_id: mapped[r.state] for r in truth}

    changes = query.ok(f"/builds/{build_id}/changes", admin)
    document: dict[str, Any] = {}
    for change in changes["changes"]:
        document = jsonpatch.apply_patch(document, change["patch"])
    current = query.ok(f"/builds/{build_id}", admin)
    if changes["sequence"] == current["sequence"]:  # nothing changed between the two reads
        assert document == current["document"]
    beyond = query.get(f"/builds/{build_id}/changes", admin, after=changes["sequence"] + 1)
    assert beyond.status_code == 409 and "snapshot" in beyond.text

    history = query.ok(f"/builds/{build_id}/history", admin, node="deploy")
    assert history["transitions"][-1]["to_status"] == "FAILED"
    assert any(t["source"].startswith("db@") for t in history["transitions"])
    unknown = query.get(f"/builds/{build_id}/history", admin, node="no_such_task")
    assert unknown.status_code == 404


def test_metrics_of_a_pipeline_match_airflows_runs(
    stack: AirflowStack, query: Query, admin: str
) -> None:
    truth = dag_runs(stack, PAGED)
    metrics = eventually(
        lambda: (
            (m := query.ok(f"/pipelines/{PAGED}/metrics", admin))["finished"] == len(truth) and m
        ),
        60,
        f"{PAGED}: metrics over every finished run",
    )
    # Other tests of the session may have marked a failed run of PAGED success.
    succeeded = sum(r.state == "success" for r in truth)
    assert metrics["success_rate"] == pytest.approx(succeeded / len(truth))
    by_status = {"FAILED": len(truth) - succeeded, "SUCCEED": succeeded}
    assert metrics["by_status"] == {k: v for k, v in by_status.items() if v}
    durations = sorted((utc(r.end_date) - utc(r.start_date)).total_seconds() * 1000 for r in truth)
    assert metrics["duration_ms"]["count"] == len(truth)
    assert metrics["duration_ms"]["p95"] == pytest.approx(durations[-1], abs=1)  # n <= 20
    (failed_deploys,) = airflow_rows(
        stack,
        "SELECT count(*) FROM task_instance WHERE dag_id = :d AND task_id = 'deploy' "
        "AND state = 'failed'",
        d=PAGED,
    )
    assert failed_deploys[0] > 0
    assert metrics["failing_tasks"][0] == {
        "task_id": "deploy",
        "failed_builds": failed_deploys[0],
        "last_failed_build_num": metrics["failing_tasks"][0]["last_failed_build_num"],
    }


# ---------------------------------------------------------------------- permissions
def _routes(stack: AirflowStack, dag_id: str) -> list[str]:
    (run,) = airflow_rows(
        stack, "SELECT run_id FROM dag_run WHERE dag_id = :d ORDER BY run_after LIMIT 1", d=dag_id
    )
    build_id = build_id_for(dag_id, run.run_id)
    return [
        f"/pipelines/{dag_id}/builds",
        f"/pipelines/{dag_id}/metrics",
        f"/builds/{build_id}",
        f"/builds/{build_id}/changes",
        f"/builds/{build_id}/history",
    ]


def test_without_a_valid_token_every_route_is_401(stack: AirflowStack, query: Query) -> None:
    for path in ["/pipelines", "/delivery", *_routes(stack, PAGED)]:
        for token in (None, "not.a.jwt"):
            response = query.get(path, token)
            assert response.status_code == 401, f"{path}: {response.text}"


def test_a_user_who_may_not_read_a_dag_gets_403_and_lists_without_it(
    stack: AirflowStack, query: Query, admin: str
) -> None:
    limited = query.token(LIMITED_USER, LIMITED_PASSWORD)
    for path in _routes(stack, HIDDEN_DAG):
        response = query.get(path, limited)
        assert response.status_code == 403, f"{path}: {response.text}"
        assert response.json()["detail"]["dags"] == [HIDDEN_DAG]
        assert query.get(path, admin).status_code == 200, path
    theirs = {p["pipeline_id"] for p in query.ok("/pipelines", limited)["pipelines"]}
    everyone = {p["pipeline_id"] for p in query.ok("/pipelines", admin)["pipelines"]}
    assert HIDDEN_DAG in everyone and theirs == everyone - {HIDDEN_DAG}
    assert query.ok(f"/pipelines/{PAGED}/builds", limited)["builds"]  # others stay readable


def test_delivery_health_is_for_users_who_may_read_connections(
    stack: AirflowStack, query: Query, admin: str
) -> None:
    limited = query.token(LIMITED_USER, LIMITED_PASSWORD)
    refused = query.get("/delivery", limited)
    assert refused.status_code == 403 and "connections" in refused.text
    health = eventually(
        lambda: {
            e["endpoint"]: e
            for e in query.ok("/delivery", admin)["endpoints"]
            if e["pending_lanes"] == 0
        }.get("bkci_test_hook"),
        60,
        "the test webhook has every change set",
    )
    assert health["dead_letters"] == 0 and health["gone"] is None
    assert health["circuit"]["state"] == "closed" and health["circuit"]["changed_at"]
