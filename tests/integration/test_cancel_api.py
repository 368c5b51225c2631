"""POST /bkci/v1/builds/cancel on a real Airflow with PostgreSQL: tokens, permissions, the runs end.

Each test triggers builds of its own and cancels what it started, even when it
fails, so no 15-minute task is left holding an executor slot of the shared stack.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from airflow_bkci.devstack import AirflowStack
from airflow_bkci.model.event import build_id_for
from tests.integration.auth_manager import LIMITED_DAG, LIMITED_PASSWORD, LIMITED_USER
from tests.integration.helpers import user_token

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

LONG = "bkci_cancel_long"
TEARDOWN = LIMITED_DAG  # create_env >> deploy (15 min) >> delete_env (teardown)
LIVE_TASKS = {LONG: ("long_a", "long_b"), TEARDOWN: ("deploy",)}
"""The tasks that must be running before a test cancels (else they would be skipped)."""
HTTP_TIMEOUT = 60


class Api:
    """The stack's cancel routes, as a client calls them."""

    def __init__(self, stack: AirflowStack) -> None:
        self.stack = stack
        self.url = f"{stack.api_url}/bkci/v1"

    def token(self, username: str, password: str) -> str:
        return user_token(self.stack, username, password)

    def cancel(self, body: dict[str, Any], token: str | None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(
            f"{self.url}/builds/cancel", json=body, headers=headers, timeout=HTTP_TIMEOUT
        )

    def record(self, cancel_id: str, token: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return requests.get(
            f"{self.url}/cancels/{cancel_id}", headers=headers, timeout=HTTP_TIMEOUT
        )


@pytest.fixture
def api(pg_stack: AirflowStack) -> Api:
    return Api(pg_stack)


@pytest.fixture
def started(pg_stack: AirflowStack, api: Api) -> Iterator[list[tuple[str, str]]]:
    """Runs a test triggered; whatever is still live afterwards is canceled by admin."""
    runs: list[tuple[str, str]] = []
    yield runs
    if runs:
        body = {"builds": _refs(runs), "reason": "test clean-up"}
        api.cancel(body, pg_stack.token()).raise_for_status()


def _refs(runs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"dag_id": d, "run_id": r} for d, r in runs]


def _trigger_running(
    stack: AirflowStack, started: list[tuple[str, str]], *dag_ids: str
) -> list[tuple[str, str]]:
    """Trigger one run of each DAG and wait until its long tasks run."""
    runs = [(dag_id, stack.trigger(dag_id)) for dag_id in dag_ids]
    started.extend(runs)
    deadline = time.monotonic() + 180
    for dag_id, run_id in runs:
        while True:
            states = {t["task_id"]: t["state"] for t in stack.task_instances(dag_id, run_id)}
            if all(states.get(task) == "running" for task in LIVE_TASKS[dag_id]):
                break
            assert time.monotonic() < deadline, stack.explain_run(dag_id, run_id)
            stack.check_alive()
            time.sleep(1)
    return runs


def _canceled_marks(stack: AirflowStack, runs: list[tuple[str, str]]) -> int:
    engine = create_engine(stack.db_url)
    try:
        with engine.connect() as conn:
            return sum(
                conn.execute(
                    text("SELECT count(*) FROM bkci_cancel WHERE dag_id = :d AND run_id = :r"),
                    {"d": d, "r": r},
                ).scalar_one()
                for d, r in runs
            )
    finally:
        engine.dispose()


def test_a_token_holder_cancels_running_builds_and_they_end_failed(
    pg_stack: AirflowStack, api: Api, started: list[tuple[str, str]]
) -> None:
    runs = _trigger_running(pg_stack, started, LONG, LONG)
    token = pg_stack.token()
    response = api.cancel({"builds": _refs(runs), "reason": "bad release"}, token)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["summary"]["canceled"] == 2
    assert {b["build_id"] for b in answer["builds"]} == {build_id_for(d, r) for d, r in runs}
    for build in answer["builds"]:
        assert build["prior_state"] == "running"
        assert build["state"] == "failed"
        assert {"long_a", "long_b"} <= set(build["failed_tasks"])
        assert "publish" in build["skipped_tasks"]
    for dag_id, run_id in runs:
        assert pg_stack.wait_run(dag_id, run_id, timeout=60) == "failed"
        note = pg_stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["note"]
        assert note.startswith("[bkci] canceled by admin at ") and note.endswith(": bad release")

    record = api.record(answer["cancel_id"], token)
    assert record.status_code == 200, record.text
    assert record.json()["canceled_by"] == "admin"
    assert sorted(b["run_id"] for b in record.json()["builds"]) == sorted(r for _, r in runs)
    assert {b["state"] for b in record.json()["builds"]} == {"failed"}


@pytest.mark.parametrize("token", [None, "not.a.jwt"], ids=["no token", "forged token"])
def test_without_a_valid_token_nothing_is_canceled(
    pg_stack: AirflowStack, api: Api, started: list[tuple[str, str]], token: str | None
) -> None:
    runs = _trigger_running(pg_stack, started, LONG)
    response = api.cancel({"builds": _refs(runs), "reason": "anyone?"}, token)
    assert response.status_code == 401, response.text
    [(dag_id, run_id)] = runs
    assert pg_stack.run_state(dag_id, run_id) == "running"
    assert _canceled_marks(pg_stack, runs) == 0


def test_a_user_who_may_not_edit_one_dag_of_the_batch_is_refused_for_all_of_it(
    pg_stack: AirflowStack, api: Api, started: list[tuple[str, str]]
) -> None:
    runs = _trigger_running(pg_stack, started, LONG, TEARDOWN)
    limited = api.token(LIMITED_USER, LIMITED_PASSWORD)

    refused = api.cancel({"builds": _refs(runs), "reason": "both"}, limited)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"]["dags"] == [TEARDOWN]
    for dag_id, run_id in runs:
        assert pg_stack.run_state(dag_id, run_id) == "running"
        assert pg_stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["note"] is None
    assert _canceled_marks(pg_stack, runs) == 0

    # The same user may cancel the DAG they may edit, and is named as the one who did.
    long_run = [r for r in runs if r[0] == LONG]
    allowed = api.cancel({"builds": _refs(long_run), "reason": "only mine"}, limited)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["summary"]["canceled"] == 1
    record = api.record(allowed.json()["cancel_id"], limited).json()
    assert record["canceled_by"] == LIMITED_USER
    assert pg_stack.run_state(*runs[1]) == "running"  # the other DAG's run is untouched
