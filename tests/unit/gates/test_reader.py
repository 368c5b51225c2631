"""The REST reader against the plugin's real query routes (ASGI, no sockets), and its errors."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from fastapi import FastAPI
from jwt import InvalidTokenError

from airflow_bkci.api import query_schemas
from airflow_bkci.api.app import create_app
from airflow_bkci.exceptions import ConfigError
from airflow_bkci.gates import (
    EQ,
    GE,
    IN,
    LE,
    WARN,
    BuildNotFound,
    BuildQuery,
    BuildSummary,
    Decision,
    GateReadError,
    GateResult,
    GateRuleError,
    Outcome,
    PipelineAccessDenied,
    PipelineNotFound,
    ReadUnavailable,
    Snapshot,
    check_references,
    duration_p95,
    evaluate,
    evaluate_async,
    failed_count,
    latest_status,
    node_status,
    report_dict,
    success_rate,
)
from airflow_bkci.gates import reader as reader_module
from airflow_bkci.gates.reader import AsyncRestBuildReader, RestBuildReader
from airflow_bkci.model import BuildStatus
from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store
from tests.unit.api.users import User
from tests.unit.store.builders import T0, build_event, event, iso

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.timeout(60)

S = BuildStatus
DAG = "build"
SERVER = "http://testserver"
NOW = T0 + timedelta(minutes=50)


class FakeAuthManager:
    """Tokens name users; alice may not read ``payments``."""

    users = {"alice-token": User("alice"), "bob-token": User("bob")}

    async def get_user_from_token(self, token: str) -> BaseUser:
        if token not in self.users:
            raise InvalidTokenError("Signature verification failed")
        return self.users[token]

    def filter_authorized_dag_ids(
        self, *, dag_ids: set[str], user: User, method: str, team_name: str | None = None
    ) -> set[str]:
        return dag_ids - ({"payments"} if user.name == "alice" else set())


MAIN = {"branch": "main"}
FEATURE = {"branch": "feature", "dry_run": True}


def seed(store: Store) -> None:
    """Five builds of ``build`` ten minutes apart (the last one running) and one of payments.

    Each run of ``build`` has a conf (the collectors put it on run events; the
    store keeps it in its column): r1, r3 and r4 are on main, r2 and r5 on feature.
    """

    def run(
        n: int, status: BuildStatus, run_type: str, seconds: float | None, conf: dict[str, Any]
    ) -> Any:
        due = (n - 1) * 600
        ended = {"ended_at": iso(due + seconds)} if seconds is not None else {}
        return build_event(
            status,
            run=f"r{n}",
            dag=DAG,
            run_type=run_type,
            run_after=iso(due),
            queued_at=iso(due),
            started_at=iso(due),
            conf=conf,
            **ended,
        )

    store.apply(
        [
            run(1, S.SUCCEED, "scheduled", 60, MAIN),
            run(2, S.FAILED, "manual", 300, FEATURE),
            run(3, S.SUCCEED, "scheduled", 120, {**MAIN, "retries": 3}),
            run(4, S.CANCELED, "manual", 30, MAIN),
            run(5, S.RUNNING, "manual", None, FEATURE),
            event(S.FAILED, "tests.unit", run="r2", dag=DAG, stage="tests"),
            event(S.SUCCEED, "build.compile", run="r5", dag=DAG, stage="build"),
            event(S.RUNNING, "tests.unit", run="r5", dag=DAG, stage="tests"),
            build_event(S.SUCCEED, run="p1", dag="payments", run_after=iso(0)),
        ]
    )


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FastAPI]:
    from airflow.api_fastapi.app import _AuthManagerState

    monkeypatch.setattr(_AuthManagerState, "instance", FakeAuthManager())
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    store.migrate()
    seed(store)
    # Mounted where Airflow's API server mounts the plugin's app.
    parent = FastAPI()
    parent.mount("/bkci", create_app(store_factory=lambda: store, dispatcher_factory=lambda: None))
    yield parent
    store.dispose()


class CountingClient(TestClient):
    """A test client that keeps the URL of every request the reader sends."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(app)
        self.sent: list[httpx.URL] = []

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        self.sent.append(request.url)
        return super().send(request, **kwargs)


@pytest.fixture
def http(app: FastAPI) -> CountingClient:
    return CountingClient(app)


def reader(http: TestClient, token: str = "alice-token") -> RestBuildReader:
    return RestBuildReader(SERVER, token, client=http)


RULES = [
    latest_status(DAG, IN, ["SUCCEED"]),
    latest_status(DAG, EQ, "SUCCEED", run_type="scheduled"),
    node_status(DAG, "build", EQ, "SUCCEED"),
    node_status(DAG, "tests", EQ, "SUCCEED"),
    success_rate(DAG, GE, 0.5, window="1h"),
    duration_p95(DAG, LE, "5m", last=4),
    failed_count(DAG, EQ, 1, window="1h", action=WARN),
]


# ------------------------------------------------------------ against the real routes
def test_a_gate_reads_every_indicator_through_the_query_api(http: CountingClient) -> None:
    result = evaluate(RULES, reader(http), now=NOW)
    assert [(r.outcome, r.actual) for r in result.results] == [
        (Outcome.PENDING, "RUNNING (build #5 has not ended)"),
        (Outcome.PASSED, "SUCCEED (build #3)"),  # run_type from the build's document
        (Outcome.PASSED, "SUCCEED (stage 'build' of build #5)"),
        (Outcome.PENDING, "RUNNING (stage 'tests' of build #5 has not ended)"),
        (Outcome.PASSED, "50% (2 of 4 finished builds; within the last 1h)"),
        (Outcome.PASSED, "5m (p95 of 4 finished builds; the last 4)"),
        (Outcome.PASSED, "1 (of 4 finished builds; within the last 1h)"),
    ]
    assert result.decision is Decision.WAIT
    assert [b["id"] for b in result.waiting_on] == [build_id_for(DAG, "r5")]
    assert all(url.path.startswith("/bkci/v1/") for url in http.sent)


def test_the_reader_hands_the_apis_summaries_through(http: CountingClient) -> None:
    builds = reader(http).builds(BuildQuery(DAG, limit=2))
    listed = http.get(
        "/bkci/v1/pipelines/build/builds",
        params={"limit": 2},
        headers={"Authorization": "Bearer alice-token"},
    ).json()["builds"]
    assert builds == listed
    assert [b["run_id"] for b in builds] == ["r5", "r4"]


def test_server_filters_go_to_the_server(http: CountingClient) -> None:
    query = BuildQuery(DAG, since=T0 + timedelta(minutes=15), statuses=(S.SUCCEED, S.FAILED))
    builds = reader(http).builds(query)
    assert [b["run_id"] for b in builds] == ["r3"]
    assert http.sent[-1].params.get_list("status") == ["SUCCEED", "FAILED"]
    assert http.sent[-1].params["since"] == "2026-03-01T12:15:00+00:00"


def test_pages_are_followed_until_the_query_has_what_it_asks(
    http: CountingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "PAGE_SIZE", 2)
    builds = reader(http).builds(BuildQuery(DAG))
    assert [b["run_id"] for b in builds] == ["r5", "r4", "r3", "r2", "r1"]
    assert len(http.sent) == 3
    assert "cursor" not in http.sent[0].params and "cursor" in http.sent[2].params


def test_a_run_type_filter_reads_documents_only_until_it_has_enough(
    http: CountingClient,
) -> None:
    builds = reader(http).builds(BuildQuery(DAG, run_type="scheduled", limit=1))
    assert [b["run_id"] for b in builds] == ["r3"]
    documents = [u.path for u in http.sent if u.path.startswith("/bkci/v1/builds/")]
    assert documents == [f"/bkci/v1/builds/{build_id_for(DAG, f'r{n}')}" for n in (5, 4, 3)]


def test_too_many_documents_to_read_is_an_error_with_the_fix(
    http: CountingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "MAX_DOCUMENTS", 2)
    rule = latest_status(DAG, EQ, "SUCCEED", run_type="scheduled")
    result = evaluate([rule], reader(http), now=NOW).results[0]
    assert result.outcome is Outcome.ERROR
    assert result.reason == (
        "the rule on 'build' needs 2 builds read for run_type: narrow it with a shorter "
        "window, last=N, or fewer filters"
    )


# ------------------------------------------------------------ conf filters
def test_a_conf_rule_judges_the_latest_build_on_that_branch(http: CountingClient) -> None:
    rules = [
        latest_status(DAG, IN, ["SUCCEED"]),  # r5 on feature, still running
        latest_status(DAG, IN, ["SUCCEED"], conf={"branch": "main"}),
        latest_status(DAG, IN, ["SUCCEED"], conf={"branch": "main", "retries": 3}),
        latest_status(DAG, EQ, "FAILED", conf={"branch": "feature"}, window="15m"),
        success_rate(DAG, GE, 0.6, window="1h", conf={"branch": "main"}),
        failed_count(DAG, EQ, 1, window="1h", conf={"dry_run": True}),
    ]
    result = evaluate(rules, reader(http), now=NOW)
    assert [(r.outcome, r.actual) for r in result.results] == [
        (Outcome.PENDING, "RUNNING (build #5 has not ended)"),
        (Outcome.FAILED, "CANCELED (build #4)"),
        (Outcome.PASSED, "SUCCEED (build #3)"),
        (Outcome.PENDING, "RUNNING (build #5 has not ended)"),
        (Outcome.PASSED, "66.67% (2 of 3 finished builds; conf branch='main', within the last 1h)"),
        (Outcome.PASSED, "1 (of 1 finished builds; conf dry_run=True, within the last 1h)"),
    ]
    # The server filtered: one page per rule, no build document read for it.
    assert not [u for u in http.sent if u.path.startswith("/bkci/v1/builds/")]
    sent = [u.params.multi_items() for u in http.sent]
    conf_params = [item for item in sent[2] if item[0].startswith("conf.")]
    assert conf_params == [("conf.branch", "main"), ("conf.retries", "3")]
    assert ("conf.dry_run", "true") in sent[5]


def test_the_async_reader_sends_the_conf_filter_too(app: FastAPI) -> None:
    async def run() -> list[BuildSummary]:
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url=SERVER) as client,
            AsyncRestBuildReader(SERVER, "alice-token", client=client) as source,
        ):
            return await source.builds(BuildQuery(DAG, conf={"branch": "feature"}))

    assert [b["run_id"] for b in asyncio.run(run())] == ["r5", "r2"]


@pytest.mark.parametrize(
    ("wanted", "runs"),
    [
        ({"branch": "main"}, ["r4", "r3", "r1"]),
        ({"retries": 3}, ["r3"]),
        ({"retries": 3.0}, ["r3"]),  # numbers compare by value
        ({"retries": "3"}, ["r3"]),  # the parameter is text: "3" is the number 3 too
        ({"dry_run": True}, ["r5", "r2"]),
        ({"dry_run": "true"}, ["r5", "r2"]),
        ({"dry_run": False}, []),
        ({"branch": "main", "dry_run": True}, []),
        ({"branch": "Main"}, []),
        ({"nope": "x"}, []),
    ],
)
def test_the_servers_conf_match_is_the_one_fake_readers_use(
    http: CountingClient, wanted: dict[str, Any], runs: list[str]
) -> None:
    query = BuildQuery(DAG, conf=wanted)
    assert [b["run_id"] for b in reader(http).builds(query)] == runs
    confs = {"r1": MAIN, "r2": FEATURE, "r3": {**MAIN, "retries": 3}, "r4": MAIN, "r5": FEATURE}
    assert [r for r in ("r5", "r4", "r3", "r2", "r1") if query.conf_holds(confs[r])] == runs


def test_builds_never_show_their_conf(http: CountingClient) -> None:
    builds = reader(http).builds(BuildQuery(DAG, conf={"branch": "main"}))
    snapshot = reader(http).snapshot(builds[0]["id"])
    assert all("conf" not in b for b in builds)
    assert "conf" not in snapshot["document"]


def test_a_server_that_ignores_the_conf_filter_is_an_error_not_a_wrong_build() -> None:
    def old_server(request: httpx.Request) -> httpx.Response:
        # airflow-bkci before conf filters: it ignores conf.* and says nothing about them
        build = {"id": "b-1", "run_after": T0.isoformat(), "status": "SUCCEED", "build_num": 1}
        return httpx.Response(
            200, json={"pipeline_id": DAG, "builds": [build], "next_cursor": None}
        )

    rule = latest_status(DAG, EQ, "SUCCEED", conf={"branch": "main"})
    result = evaluate([rule], mock_reader(old_server), now=NOW)
    error = result.results[0]
    assert error.outcome is Outcome.ERROR and result.decision is Decision.FAIL
    assert error.reason == (
        "the API server did not apply the conf filter of the rule on 'build' (asked "
        "{'branch': 'main'}, it answered for None): upgrade airflow-bkci on the API server to "
        "a version with conf filters, or remove the conf filter"
    )
    plain = evaluate([latest_status(DAG, EQ, "SUCCEED")], mock_reader(old_server), now=NOW)
    assert plain.decision is Decision.PASS  # rules without conf still read an older server


def test_no_permission_to_read_the_pipeline_fails_the_gate_with_a_clear_message(
    http: CountingClient,
) -> None:
    result = evaluate([latest_status("payments", EQ, "SUCCEED")], reader(http), now=NOW)
    error = result.results[0]
    assert error.outcome is Outcome.ERROR and result.decision is Decision.FAIL
    assert error.reason == (
        "no permission to read pipeline 'payments': ask an admin for read permission on that "
        "DAG for the gate's connection user (you may not read DAG 'payments', so not its builds "
        "either; ask for read permission on that DAG)"
    )
    bob = evaluate([latest_status("payments", EQ, "SUCCEED")], reader(http, "bob-token"), now=NOW)
    assert bob.decision is Decision.PASS


def test_a_refused_token_says_to_fix_the_connection(http: CountingClient) -> None:
    with pytest.raises(PipelineAccessDenied) as exc:
        reader(http, "forged").builds(BuildQuery(DAG, limit=1))
    assert exc.value.status == 401
    assert "the API server refused the token (missing, expired or forged)" in str(exc.value)


def test_unknown_pipelines_and_builds_are_not_found(http: CountingClient) -> None:
    with pytest.raises(PipelineNotFound, match="no build of pipeline 'nope'"):
        reader(http).builds(BuildQuery("nope", limit=1))
    with pytest.raises(BuildNotFound, match="build 'b-0000' is not in the status store"):
        reader(http).snapshot("b-0000")
    result = evaluate([latest_status("nope", EQ, "SUCCEED")], reader(http), now=NOW)
    assert result.results[0].outcome is Outcome.UNKNOWN


def test_a_snapshot_is_the_build_tree(http: CountingClient) -> None:
    snapshot: Snapshot = reader(http).snapshot(build_id_for(DAG, "r2"))
    tasks = snapshot["document"]["stages"]["tests"]["tasks"]
    assert (snapshot["pipeline_id"], tasks["tests.unit"]["status"]) == (DAG, "FAILED")


def test_pipelines_are_the_readable_ones(http: CountingClient) -> None:
    assert reader(http).pipelines() == [DAG]
    assert reader(http, "bob-token").pipelines() == [DAG, "payments"]


def test_references_are_checked_against_the_api(http: CountingClient) -> None:
    rules = [latest_status("biuld", EQ, "SUCCEED"), node_status(DAG, "test", EQ, "SUCCEED")]
    with pytest.raises(GateRuleError) as exc:
        check_references(rules, reader(http))
    message = str(exc.value)
    assert "pipeline 'biuld' is unknown" in message and "did you mean 'build'?" in message
    assert "no stage or task 'test'. Fix: did you mean 'tests'?" in message


def _without_time(result: GateResult) -> dict[str, Any]:
    data = report_dict(result, SERVER)
    data.pop("checked_at")
    return data


def test_the_async_reader_gives_the_same_result(app: FastAPI, http: CountingClient) -> None:
    async def run() -> GateResult:
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url=SERVER) as client,
            AsyncRestBuildReader(SERVER, "alice-token", client=client) as source,
        ):
            rules = [*RULES, latest_status("payments", EQ, "SUCCEED")]
            return await evaluate_async(rules, source, now=NOW)

    asynchronous = asyncio.run(run())
    rules = [*RULES, latest_status("payments", EQ, "SUCCEED")]
    assert _without_time(asynchronous) == _without_time(evaluate(rules, reader(http), now=NOW))
    assert asynchronous.decision is Decision.FAIL


def test_the_data_shapes_are_the_apis_models() -> None:
    assert BuildSummary.__required_keys__ == set(query_schemas.BuildSummary.model_fields)
    assert Snapshot.__required_keys__ == set(query_schemas.Snapshot.model_fields)


# ------------------------------------------------------------ answers from a mock server
def mock_reader(handler: Callable[[httpx.Request], httpx.Response]) -> RestBuildReader:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return RestBuildReader("http://airflow:8080/", "jwt-1", client=client, timeout=7)


def test_requests_carry_the_token_prefix_and_timeout() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"pipeline_id": DAG, "builds": [], "next_cursor": None})

    assert mock_reader(handler).builds(BuildQuery(DAG, limit=3)) == []
    request = seen[0]
    assert str(request.url) == "http://airflow:8080/bkci/v1/pipelines/build/builds?limit=3"
    assert request.headers["Authorization"] == "Bearer jwt-1"
    assert request.extensions["timeout"] == httpx.Timeout(7).as_dict()


@pytest.mark.parametrize(
    ("answer", "retry_after"),
    [
        (httpx.Response(503, headers={"Retry-After": "5"}, json={"detail": {"message": "db"}}), 5),
        (httpx.Response(500, text="Internal Server Error"), None),
        (httpx.Response(502, text="Bad Gateway"), None),
        (httpx.Response(429, text="slow down"), None),
    ],
)
def test_server_faults_are_read_again_later(
    answer: httpx.Response, retry_after: float | None
) -> None:
    with pytest.raises(ReadUnavailable, match="reading again later") as exc:
        mock_reader(lambda request: answer).builds(BuildQuery(DAG, limit=1))
    assert exc.value.retry_after == retry_after


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout])
def test_an_unreachable_server_is_read_again_later(error: type[httpx.TransportError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("refused", request=request)

    with pytest.raises(ReadUnavailable, match="cannot reach the API server for http://airflow"):
        mock_reader(handler).pipelines()
    with pytest.raises(ReadUnavailable):  # not caught by evaluate: the gate retries later
        evaluate([latest_status(DAG, EQ, "SUCCEED")], mock_reader(handler), now=NOW)


def test_a_404_that_is_not_ours_says_to_check_the_base_url() -> None:
    answer = httpx.Response(404, json={"detail": "Not Found"})
    with pytest.raises(GateReadError, match="no BK-CI query API at http://airflow:8080/bkci/"):
        mock_reader(lambda request: answer).builds(BuildQuery(DAG, limit=1))


def test_an_answer_that_is_not_json_says_to_check_the_base_url() -> None:
    answer = httpx.Response(200, text="<html>Airflow</html>")
    with pytest.raises(GateReadError, match="did not answer JSON: check the API server's base"):
        mock_reader(lambda request: answer).snapshot("b-1")


def test_other_refusals_are_permanent_read_errors() -> None:
    answer = httpx.Response(422, json={"detail": {"message": "since is not before until"}})
    with pytest.raises(GateReadError) as exc:
        mock_reader(lambda request: answer).builds(BuildQuery(DAG, limit=1))
    assert not isinstance(exc.value, ReadUnavailable)
    assert str(exc.value) == "reading pipeline 'build': HTTP 422: since is not before until"


@pytest.mark.parametrize(
    ("base_url", "token", "problem"),
    [
        ("airflow:8080", "t", "needs http:// or https://"),
        ("http://airflow:8080", "", "needs a token"),
    ],
)
def test_a_reader_without_a_usable_url_or_token_is_a_config_error(
    base_url: str, token: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        RestBuildReader(base_url, token)
