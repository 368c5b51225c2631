"""POST /v1/builds/cancel and GET /v1/cancels/{id}: who may cancel what, and what they get back."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.models.dagrun import DagRun
from jwt import ExpiredSignatureError, InvalidTokenError
from sqlalchemy import Engine, create_engine, insert
from sqlalchemy.exc import OperationalError

from airflow_bkci.api.app import create_app
from airflow_bkci.cancel import (
    BuildResult,
    CancelRejected,
    CancelRequest,
    CancelResult,
    Outcome,
    RunFilter,
)
from airflow_bkci.cancel.marks import cancel_table, cancel_task_table, ensure_tables
from airflow_bkci.cancel.request import RunKey
from airflow_bkci.cancel.service import Plan, Target
from airflow_bkci.exceptions import StoreUnavailable
from airflow_bkci.model.event import build_id_for
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.store import Store
from tests.unit.api.users import User
from tests.unit.store.builders import build_event

with warnings.catch_warnings():
    # Starlette 1.x warns when its TestClient falls back to httpx (it wants httpx2).
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.timeout(60)

CANCEL = "/v1/builds/cancel"
ALICE = {"Authorization": "Bearer alice-token"}  # may edit every DAG but "payments"
BOB = {"Authorization": "Bearer bob-token"}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class FakeAuthManager:
    """Tokens name users; ``no_edit``/``no_read`` hold the DAGs a user is denied."""

    def __init__(self) -> None:
        self.users = {"alice-token": User("alice"), "bob-token": User("bob")}
        self.no_edit: dict[str, set[str]] = {"alice": {"payments"}}
        self.no_read: dict[str, set[str]] = {}
        self.checked: list[tuple[str, str, set[str]]] = []

    async def get_user_from_token(self, token: str) -> BaseUser:
        if token == "expired":
            raise ExpiredSignatureError("Signature has expired")
        if token not in self.users:
            raise InvalidTokenError("Signature verification failed")
        return self.users[token]

    def filter_authorized_dag_ids(
        self, *, dag_ids: set[str], user: User, method: str, team_name: str | None = None
    ) -> set[str]:
        self.checked.append((user.name, method, set(dag_ids)))
        denied = (self.no_edit if method == "PUT" else self.no_read).get(user.name, set())
        return dag_ids - denied


@dataclass
class FakeService:
    """Plans against ``runs`` ({(dag_id, run_id): state}) and cancels the live ones."""

    runs: dict[RunKey, str] = field(default_factory=dict)
    max_builds: int = 50
    engine: Any = None
    fail_with: BaseException | None = None
    plans: list[CancelRequest] = field(default_factory=list)
    cancels: list[CancelRequest] = field(default_factory=list)

    def plan(self, request: CancelRequest) -> Plan:
        self.plans.append(request)
        if self.fail_with is not None:
            raise self.fail_with
        if request.problems():
            raise CancelRejected(request.problems())
        keys = list(dict.fromkeys(request.runs))
        if request.filter is not None:
            keys = [k for k, state in self.runs.items() if _matches(request.filter, k, state)]
        unknown = [k for k in keys if k not in self.runs]
        if unknown:
            raise CancelRejected([f"{len(unknown)} unknown builds"], status=404)
        targets = [Target(i, d, r, self.runs[d, r], 0) for i, (d, r) in enumerate(keys)]
        duplicates = list(request.runs[len(keys) :]) if request.filter is None else []
        return Plan(request, targets, duplicates, {})

    def cancel(
        self, request: CancelRequest, *, authorize: Callable[[Plan], None] | None = None
    ) -> CancelResult:
        plan = self.plan(request)
        if authorize is not None:
            authorize(plan)  # refuses before anything would be locked
        self.cancels.append(request)
        builds = [
            BuildResult(t.dag_id, t.run_id, Outcome.CANCELED, t.state, "failed", ["work"])
            for t in plan.targets
        ]
        committed = None if request.dry_run else T0
        return CancelResult("c-1", request.dry_run, builds, plan.duplicates, committed_at=committed)


def _matches(flt: RunFilter, key: RunKey, state: str) -> bool:
    return (not flt.dag_ids or key[0] in flt.dag_ids) and state in flt.states


class FailingStore:
    def build_refs(self, build_ids: Any) -> dict[str, tuple[str, str]]:
        raise AssertionError("the status store must not be asked")


@pytest.fixture
def auth(monkeypatch: pytest.MonkeyPatch) -> FakeAuthManager:
    # Imported here: airflow.api_fastapi.app imports Starlette's TestClient, which warns.
    from airflow.api_fastapi.app import _AuthManagerState

    manager = FakeAuthManager()
    monkeypatch.setattr(_AuthManagerState, "instance", manager)
    return manager


@pytest.fixture
def service() -> FakeService:
    return FakeService(
        {
            ("etl", "r1"): "running",
            ("etl", "r2"): "queued",
            ("reports", "r1"): "running",
            ("payments", "r9"): "running",
        }
    )


def make_client(service: Any, store: Any = None) -> TestClient:
    app = create_app(
        store_factory=lambda: store or FailingStore(),
        secret=lambda: "s3cret",
        dispatcher_factory=lambda: None,
        cancel_factory=lambda: service,
    )
    return TestClient(app)


@pytest.fixture
def client(auth: FakeAuthManager, service: FakeService) -> TestClient:
    return make_client(service)


def builds(*keys: RunKey) -> list[dict[str, str]]:
    return [{"dag_id": d, "run_id": r} for d, r in keys]


# --------------------------------------------------------------------- authentication
@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "Not authenticated"),
        ({"Authorization": "Bearer forged"}, "Invalid JWT token"),
        ({"Authorization": "Bearer expired"}, "Token Expired"),
    ],
)
def test_a_request_without_a_valid_airflow_token_is_401_and_changes_nothing(
    client: TestClient, service: FakeService, headers: dict[str, str], detail: str
) -> None:
    body = {"builds": builds(("etl", "r1")), "reason": "bad deploy"}
    response = client.post(CANCEL, json=body, headers=headers)
    assert response.status_code == 401
    assert detail in response.json()["detail"]
    assert service.plans == [] and service.cancels == []


def test_a_cancel_record_needs_a_token_too(client: TestClient) -> None:
    response = client.get("/v1/cancels/c-1")
    assert response.status_code == 401
    assert response.json()["detail"] == "Not authenticated"


# --------------------------------------------------------------------- happy paths
def test_named_builds_are_canceled_as_the_authenticated_user(
    client: TestClient, service: FakeService
) -> None:
    body = {"builds": builds(("etl", "r1"), ("reports", "r1")), "reason": "bad deploy"}
    response = client.post(CANCEL, json=body, headers=ALICE)
    assert response.status_code == 200
    [sent] = service.cancels
    assert (sent.user, sent.source, sent.reason) == ("alice", "api", "bad deploy")
    assert list(sent.runs) == [("etl", "r1"), ("reports", "r1")]
    answer = response.json()
    assert answer == service.cancel(sent).to_json()  # the service's result, unchanged
    assert [(b["build_id"], b["outcome"]) for b in answer["builds"]] == [
        (build_id_for("etl", "r1"), "canceled"),
        (build_id_for("reports", "r1"), "canceled"),
    ]
    assert answer["summary"]["canceled"] == 2
    assert answer["committed_at"] == T0.isoformat()


def test_dry_run_is_passed_through_and_reported(client: TestClient, service: FakeService) -> None:
    body = {"builds": builds(("etl", "r1")), "reason": "what if", "dry_run": True}
    response = client.post(CANCEL, json=body, headers=ALICE)
    assert response.status_code == 200
    assert [r.dry_run for r in service.cancels] == [True]
    assert response.json()["dry_run"] is True
    assert response.json()["committed_at"] is None


def test_chunked_is_passed_through(client: TestClient, service: FakeService) -> None:
    body = {"builds": builds(("etl", "r1")), "reason": "r", "chunked": True}
    assert client.post(CANCEL, json=body, headers=ALICE).status_code == 200
    assert [r.chunked for r in service.cancels] == [True]


def test_build_ids_are_resolved_through_the_status_store(
    auth: FakeAuthManager, service: FakeService, store: Store
) -> None:
    store.apply(
        [
            build_event(BuildStatus.RUNNING, dag="etl", run="r1"),
            build_event(BuildStatus.QUEUE, dag="etl", run="r2"),
        ]
    )
    client = make_client(service, store)
    ids = [build_id_for("etl", "r2"), build_id_for("etl", "r1"), build_id_for("etl", "r2")]
    response = client.post(CANCEL, json={"build_ids": ids, "reason": "r"}, headers=ALICE)
    assert response.status_code == 200
    # In the caller's order, the repeat kept: the service reports it as a duplicate.
    assert list(service.cancels[0].runs) == [("etl", "r2"), ("etl", "r1"), ("etl", "r2")]
    assert response.json()["duplicates"] == [{"dag_id": "etl", "run_id": "r2"}]
    assert {b["build_id"] for b in response.json()["builds"]} == set(ids)


def test_unknown_build_ids_are_404_naming_them(
    auth: FakeAuthManager, service: FakeService, store: Store
) -> None:
    store.apply([build_event(BuildStatus.RUNNING, dag="etl", run="r1")])
    client = make_client(service, store)
    ids = [build_id_for("etl", "r1"), "b-nope", "b-gone"]
    response = client.post(CANCEL, json={"build_ids": ids, "reason": "r"}, headers=ALICE)
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "2 unknown build ids: b-nope, b-gone" in detail["message"]
    assert detail["problems"] == ["unknown build id 'b-nope'", "unknown build id 'b-gone'"]
    assert service.plans == []


def test_a_filter_becomes_a_run_filter_planned_and_authorized_once(
    client: TestClient, service: FakeService, auth: FakeAuthManager
) -> None:
    body = {
        "filter": {"states": ["running"], "older_than_seconds": 90, "conf": {"env": "prod"}},
        "reason": "stop the world",
    }
    auth.no_edit = {}
    response = client.post(CANCEL, json=body, headers=ALICE)
    assert response.status_code == 200
    [planned, canceled] = service.plans[0], service.cancels[0]
    assert planned.filter == RunFilter(
        dag_ids=(), states=("running",), older_than=timedelta(seconds=90), conf={"env": "prod"}
    )
    # Planned once and authorized on that plan, so what is canceled is what was checked.
    assert len(service.plans) == 1
    assert canceled is planned
    assert [b["run_id"] for b in response.json()["builds"]] == ["r1", "r1", "r9"]


def test_a_filter_that_matches_nothing_answers_an_empty_result(
    client: TestClient, service: FakeService
) -> None:
    body = {"filter": {"dag_ids": ["nightly"]}, "reason": "r"}
    response = client.post(CANCEL, json=body, headers=ALICE)
    assert response.status_code == 200
    answer = response.json()
    assert answer["builds"] == [] and answer["summary"]["canceled"] == 0
    assert len(service.plans) == 1  # the empty plan is the one canceled: nothing widens it


# --------------------------------------------------------------------- permissions
def test_one_dag_without_edit_permission_refuses_the_whole_batch(
    client: TestClient, service: FakeService, auth: FakeAuthManager
) -> None:
    body = {"builds": builds(("etl", "r1"), ("payments", "r9")), "reason": "r"}
    response = client.post(CANCEL, json=body, headers=ALICE)
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert detail["dags"] == ["payments"]
    assert "you may not edit 1 of the 2 DAGs" in detail["message"]
    assert service.cancels == []
    assert auth.checked == [("alice", "PUT", {"etl", "payments"})]


def test_a_filter_is_checked_on_the_dags_its_runs_belong_to(
    client: TestClient, service: FakeService, auth: FakeAuthManager
) -> None:
    auth.no_edit = {"alice": {"payments", "reports"}}
    response = client.post(CANCEL, json={"filter": {}, "reason": "r"}, headers=ALICE)
    assert response.status_code == 403
    assert response.json()["detail"]["dags"] == ["payments", "reports"]
    assert service.cancels == []


def test_a_dry_run_needs_edit_permission_too(
    client: TestClient, service: FakeService, auth: FakeAuthManager
) -> None:
    body = {"builds": builds(("payments", "r9")), "reason": "r", "dry_run": True}
    assert client.post(CANCEL, json=body, headers=ALICE).status_code == 403
    assert service.cancels == []


# --------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"builds": builds(("etl", "r1"))}, id="no reason"),
        pytest.param({"reason": "r"}, id="no selector"),
        pytest.param(
            {"builds": builds(("etl", "r1")), "filter": {}, "reason": "r"}, id="two selectors"
        ),
        pytest.param({"build_ids": "b-1", "reason": "r"}, id="ids not a list"),
        pytest.param({"builds": [{"dag_id": "etl"}], "reason": "r"}, id="no run_id"),
        pytest.param({"filter": {"states": ["success"]}, "reason": "r"}, id="finished state"),
        pytest.param({"filter": {"dag_id": ["etl"]}, "reason": "r"}, id="misspelt filter key"),
        pytest.param({"filter": {"older_than_seconds": -1}, "reason": "r"}, id="negative age"),
        pytest.param({"builds": [], "reason": "r", "dryrun": True}, id="misspelt flag"),
    ],
)
def test_a_malformed_body_is_422_and_changes_nothing(
    client: TestClient, service: FakeService, body: dict[str, Any]
) -> None:
    response = client.post(CANCEL, json=body, headers=ALICE)
    assert response.status_code == 422
    assert service.plans == []


def test_two_selectors_are_named_in_the_422(client: TestClient) -> None:
    body = {"builds": builds(("etl", "r1")), "filter": {}, "reason": "r"}
    [error] = client.post(CANCEL, json=body, headers=ALICE).json()["detail"]
    assert "give exactly one of 'builds', 'build_ids' or 'filter'" in error["msg"]
    assert "builds and filter" in error["msg"]


@pytest.mark.parametrize(
    ("rejected", "code"),
    [
        (CancelRejected(["a reason is required"]), 400),
        (CancelRejected(["2 unknown builds: etl/x, etl/y"], status=404), 404),
        (CancelRejected(["6000 builds exceed the atomic limit of 5000"], status=413), 413),
    ],
)
def test_the_services_refusals_keep_their_status_and_problems(
    client: TestClient, service: FakeService, rejected: CancelRejected, code: int
) -> None:
    service.fail_with = rejected
    body = {"builds": builds(("etl", "r1")), "reason": "r"}
    response = client.post(CANCEL, json=body, headers=ALICE)
    assert response.status_code == code
    detail = response.json()["detail"]
    assert detail["problems"] == rejected.problems
    assert detail["message"] == f"nothing was canceled: {rejected.problems[0]}"
    assert service.cancels == []


def test_a_blank_reason_is_refused_by_the_service_with_400(client: TestClient) -> None:
    body = {"builds": builds(("etl", "r1")), "reason": "  "}
    response = client.post(CANCEL, json=body, headers=ALICE)
    assert response.status_code == 400
    assert response.json()["detail"]["problems"] == ["a reason is required"]


def test_100000_build_ids_are_413_at_once_without_the_database(
    auth: FakeAuthManager, service: FakeService
) -> None:
    client = make_client(service)  # its status store fails the test if asked
    ids = [f"b-{i:020x}" for i in range(100_000)]
    started = time.monotonic()
    response = client.post(CANCEL, json={"build_ids": ids, "reason": "r"}, headers=ALICE)
    elapsed = time.monotonic() - started
    assert response.status_code == 413
    assert (
        "100000 builds named; one request may name at most 50"
        in (response.json()["detail"]["message"])
    )
    assert service.plans == []
    assert elapsed < 10, f"the refusal took {elapsed:.1f} s"


def test_too_many_named_builds_are_413_before_planning(
    client: TestClient, service: FakeService
) -> None:
    body = {"builds": builds(*[("etl", f"r{i}") for i in range(51)]), "reason": "r"}
    response = client.post(CANCEL, json=body, headers=ALICE)
    assert response.status_code == 413
    assert service.plans == []


# --------------------------------------------------------------------- unavailable
def test_an_unreachable_airflow_database_is_503_with_retry_after(
    client: TestClient, service: FakeService
) -> None:
    service.fail_with = OperationalError(
        "SELECT dag_run.id", {}, ConnectionError("connection refused")
    )
    body = {"builds": builds(("etl", "r1")), "reason": "r"}
    response = client.post(CANCEL, json=body, headers=ALICE)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    detail = response.json()["detail"]
    assert "Airflow's database is unavailable" in detail["message"]
    assert detail["problems"] == ["ConnectionError: connection refused"]
    assert "SELECT" not in response.text  # no SQL in the answer


def test_a_service_that_cannot_be_built_is_503_and_built_on_a_later_request(
    auth: FakeAuthManager, service: FakeService
) -> None:
    attempts: list[int] = []

    def factory() -> FakeService:
        attempts.append(1)
        if len(attempts) == 1:
            raise OperationalError("connect", {}, ConnectionError("database starting up"))
        return service

    app = create_app(dispatcher_factory=lambda: None, cancel_factory=factory)
    client = TestClient(app)
    body = {"builds": builds(("etl", "r1")), "reason": "r"}
    first = client.post(CANCEL, json=body, headers=ALICE)
    assert first.status_code == 503 and first.headers["Retry-After"] == "5"
    assert client.post(CANCEL, json=body, headers=ALICE).status_code == 200
    assert client.post(CANCEL, json=body, headers=ALICE).status_code == 200
    assert len(attempts) == 2  # built once it worked, then kept


def test_a_status_store_that_is_down_is_503_for_build_ids(
    auth: FakeAuthManager, service: FakeService
) -> None:
    class DownStore:
        def build_refs(self, build_ids: Any) -> dict[str, tuple[str, str]]:
            raise StoreUnavailable("bkci status store failed to read: connection refused")

    client = make_client(service, DownStore())
    body = {"build_ids": [build_id_for("etl", "r1")], "reason": "r"}
    response = client.post(CANCEL, json=body, headers=ALICE)
    assert response.status_code == 503
    assert "the BK-CI status store is unavailable" in response.json()["detail"]["message"]
    assert service.plans == []


# --------------------------------------------------------------------- GET /v1/cancels
RUNS = [
    {"id": 1, "dag_id": "etl", "run_id": "r1", "state": "failed", "clear_number": 0},
    {"id": 2, "dag_id": "payments", "run_id": "r9", "state": "queued", "clear_number": 1},
]
MARKS: list[dict[str, Any]] = [
    {"dag_run_id": 1, "dag_id": "etl", "run_id": "r1", "prior_state": "running", "at": 0},
    {"dag_run_id": 2, "dag_id": "payments", "run_id": "r9", "prior_state": "queued", "at": 2},
]
TASKS = [  # (dag_run_id, task_id, map_index, new_state)
    (1, "load", -1, "failed"),
    (1, "shard", 3, "failed"),
    (1, "publish", -1, "skipped"),
]


@pytest.fixture
def airflow_db(tmp_path: Path) -> Iterator[Engine]:
    """Airflow's dag_run table and our marker tables, with cancel c-7 of two runs."""
    engine = create_engine(f"sqlite:///{tmp_path / 'airflow.db'}")
    DagRun.__table__.create(engine)
    ensure_tables(engine)
    with engine.begin() as conn:
        for run in RUNS:
            conn.execute(
                insert(DagRun.__table__).values(
                    **run, run_type="manual", log_template_id=None, run_after=T0
                )
            )
        for mark in MARKS:
            values = {k: v for k, v in mark.items() if k != "at"}
            at = T0 + timedelta(seconds=mark["at"])
            conn.execute(
                insert(cancel_table).values(
                    **values,
                    clear_number=0,
                    cancel_id="c-7",
                    reason="bad deploy",
                    canceled_by="alice",
                    canceled_at=at,
                )
            )
        for run_pk, task_id, map_index, new_state in TASKS:
            run = RUNS[run_pk - 1]
            conn.execute(
                insert(cancel_task_table).values(
                    dag_run_id=run_pk,
                    dag_id=run["dag_id"],
                    run_id=run["run_id"],
                    task_id=task_id,
                    map_index=map_index,
                    try_number=1,
                    cancel_id="c-7",
                    new_state=new_state,
                )
            )
    yield engine
    engine.dispose()


@pytest.fixture
def record_client(auth: FakeAuthManager, airflow_db: Engine) -> TestClient:
    return make_client(FakeService(engine=airflow_db))


def test_a_cancel_shows_the_runs_it_changed_and_their_state_now(
    record_client: TestClient,
) -> None:
    response = record_client.get("/v1/cancels/c-7", headers=BOB)
    assert response.status_code == 200
    assert response.json() == {
        "cancel_id": "c-7",
        "reason": "bad deploy",
        "canceled_by": "alice",
        "canceled_at": (T0 + timedelta(seconds=2)).isoformat(),
        "builds": [
            {
                "build_id": build_id_for("etl", "r1"),
                "dag_id": "etl",
                "run_id": "r1",
                "prior_state": "running",
                "state": "failed",
                "cleared_since": False,
                "canceled_at": T0.isoformat(),
                "failed_tasks": ["load", "shard[3]"],
                "skipped_tasks": ["publish"],
            },
            {
                "build_id": build_id_for("payments", "r9"),
                "dag_id": "payments",
                "run_id": "r9",
                "prior_state": "queued",
                "state": "queued",
                "cleared_since": True,  # cleared after the cancel: it runs again
                "canceled_at": (T0 + timedelta(seconds=2)).isoformat(),
                "failed_tasks": [],
                "skipped_tasks": [],
            },
        ],
    }


def test_an_unknown_cancel_id_is_404(record_client: TestClient) -> None:
    response = record_client.get("/v1/cancels/c-404", headers=BOB)
    assert response.status_code == 404
    assert response.json()["detail"]["problems"] == ["unknown cancel id 'c-404'"]


def test_a_cancel_record_needs_read_permission_on_its_dags(
    record_client: TestClient, auth: FakeAuthManager
) -> None:
    auth.no_read = {"bob": {"payments"}}
    response = record_client.get("/v1/cancels/c-7", headers=BOB)
    assert response.status_code == 403
    assert response.json()["detail"]["dags"] == ["payments"]
    assert ("bob", "GET", {"etl", "payments"}) in auth.checked


# --------------------------------------------------------------------- OpenAPI
def test_both_routes_are_documented_with_their_answers(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    post = paths[CANCEL]["post"]
    get = paths["/v1/cancels/{cancel_id}"]["get"]
    assert post["summary"] == "Cancel builds, all or nothing"
    assert get["summary"] == "Show the builds one cancel changed"
    assert set(post["responses"]) == {"200", "400", "401", "403", "404", "413", "422", "503"}
    assert post["security"]  # the bearer token shows in the docs
