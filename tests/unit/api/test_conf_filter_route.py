"""``GET /v1/pipelines/{dag_id}/builds?conf.<key>=<value>`` on SQLite and PostgreSQL."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from jwt import InvalidTokenError

from airflow_bkci.api.app import create_app
from airflow_bkci.model import BuildStatus
from airflow_bkci.store import Store
from tests.unit.api.users import User
from tests.unit.store.builders import build_event, iso

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.timeout(60)

S = BuildStatus
ALICE = {"Authorization": "Bearer alice-token"}
URL = "/v1/pipelines/etl/builds"

# What each run of etl was triggered with, oldest first ("none": no conf at all).
CONFS: dict[str, dict[str, Any] | None] = {
    "r1": {"branch": "main", "retries": 3, "dry_run": False},
    "r2": {"branch": "feature", "retries": "3", "dry_run": True},
    "r3": {"branch": "main", "retries": 3.0, "dry_run": "true", "env": {"region": "eu"}},
    "r4": {"branch": "main", "tags": ["main"], "ratio": 0.25, "x.y": "dotted"},
    "r5": None,
    "r6": {"branch": "main", "owner": None},
}


class FakeAuthManager:
    async def get_user_from_token(self, token: str) -> BaseUser:
        if token != "alice-token":
            raise InvalidTokenError("Signature verification failed")
        return User("alice")

    def filter_authorized_dag_ids(
        self, *, dag_ids: set[str], user: User, method: str, team_name: str | None = None
    ) -> set[str]:
        return dag_ids


@pytest.fixture(scope="module")
def pg_database(pg_server: Any) -> str:
    """One database for this module's PostgreSQL tests."""
    url: str = pg_server()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'status.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    store = Store(url)
    store.migrate()
    with store.engine.begin() as conn:  # the PostgreSQL database is shared by the module
        conn.exec_driver_sql("DELETE FROM bkci_build")
        conn.exec_driver_sql("DELETE FROM bkci_pipeline")
    store.apply(
        [
            build_event(
                S.FAILED if run == "r2" else S.SUCCEED,
                run=run,
                run_after=iso(n * 60),
                **({"conf": conf} if conf is not None else {}),
            )
            for n, (run, conf) in enumerate(CONFS.items())
        ]
    )
    yield store
    store.dispose()


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, store: Store) -> TestClient:
    from airflow.api_fastapi.app import _AuthManagerState

    monkeypatch.setattr(_AuthManagerState, "instance", FakeAuthManager())
    app = create_app(store_factory=lambda: store, dispatcher_factory=lambda: None)
    return TestClient(app)


def listed(client: TestClient, params: list[tuple[str, str]]) -> list[str]:
    """Every matching run, newest first, read one build per page."""
    runs: list[str] = []
    cursor = None
    while True:
        page = [*params, ("limit", "1"), *([("cursor", cursor)] if cursor else [])]
        response = client.get(URL, params=page, headers=ALICE)
        assert response.status_code == 200, response.text
        runs += [b["run_id"] for b in response.json()["builds"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return runs


def detail(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["detail"]
    return body


# --------------------------------------------------------------------- matching
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("conf.branch", "main")], ["r6", "r4", "r3", "r1"]),
        ([("conf.branch", "feature")], ["r2"]),
        ([("conf.branch", "Main")], []),
        # numbers by value: 3 and 3.0; "3" is also the string "3"
        ([("conf.retries", "3")], ["r3", "r2", "r1"]),
        ([("conf.retries", "3.0")], ["r3", "r1"]),
        ([("conf.ratio", "0.25")], ["r4"]),
        ([("conf.ratio", "2.5e-1")], ["r4"]),
        # booleans by their JSON text, and the string "true"
        ([("conf.dry_run", "true")], ["r3", "r2"]),
        ([("conf.dry_run", "false")], ["r1"]),
        # keys are top-level keys, dots and all; lists, objects and null never match
        ([("conf.x.y", "dotted")], ["r4"]),
        ([("conf.tags", "main")], []),
        ([("conf.tags", '["main"]')], []),
        ([("conf.env", '{"region":"eu"}')], []),
        ([("conf.env.region", "eu")], []),
        ([("conf.owner", "null")], []),
        ([("conf.owner", "")], []),
        ([("conf.nope", "x")], []),
        # beyond a float: no JSON number equals it (and PostgreSQL refuses Infinity)
        ([("conf.retries", "1e400")], []),
        # several keys must all hold, with the other filters
        ([("conf.branch", "main"), ("conf.retries", "3")], ["r3", "r1"]),
        ([("conf.branch", "main"), ("status", "SUCCEED"), ("until", iso(100))], ["r1"]),
        ([("conf.retries", "3"), ("status", "FAILED")], ["r2"]),
    ],
)
def test_conf_filters_match_top_level_keys_across_pages(
    client: TestClient, params: list[tuple[str, str]], expected: list[str]
) -> None:
    assert listed(client, params) == expected


def test_the_answer_says_which_conf_filters_it_applied_and_never_shows_a_conf(
    client: TestClient,
) -> None:
    params = [("conf.retries", "3"), ("conf.branch", "main")]
    answer = client.get(URL, params=params, headers=ALICE).json()
    assert answer["conf"] == {"branch": "main", "retries": "3"}
    assert [b["run_id"] for b in answer["builds"]] == ["r3", "r1"]
    assert all("conf" not in b for b in answer["builds"])
    unfiltered = client.get(URL, headers=ALICE).json()
    assert unfiltered["conf"] == {} and len(unfiltered["builds"]) == 6


def test_a_cursor_continues_only_the_list_of_its_conf_filters(client: TestClient) -> None:
    first = client.get(URL, params={"conf.branch": "main", "limit": 2}, headers=ALICE).json()
    assert [b["run_id"] for b in first["builds"]] == ["r6", "r4"]
    rest = client.get(
        URL,
        params={"conf.branch": "main", "limit": 2, "cursor": first["next_cursor"]},
        headers=ALICE,
    )
    assert [b["run_id"] for b in rest.json()["builds"]] == ["r3", "r1"]
    for other in ({"conf.branch": "feature"}, {}):
        moved = client.get(URL, params={**other, "cursor": first["next_cursor"]}, headers=ALICE)
        assert moved.status_code == 400
        assert "this cursor continues another list" in detail(moved)["message"]


# ------------------------------------------------------------------- bad filters
@pytest.mark.parametrize(
    ("params", "problem"),
    [
        (
            [("conf.git branch", "main")],
            "'conf.git branch' has no usable conf key: a key is 1-100 of A-Z a-z 0-9 _ . -",
        ),
        ([("conf.", "main")], "'conf.' has no usable conf key"),
        ([("conf." + "k" * 101, "x")], "has no usable conf key"),
        ([("conf", "branch=main")], "conf='branch=main' names no key: write conf.<key>=<value>"),
        (
            [("conf.branch", "main"), ("conf.branch", "dev")],
            "conf.branch is given twice: a conf key has one value; give each key once",
        ),
        ([("conf.branch", "x" * 1001)], "conf.branch is longer than 1000 characters"),
        (
            [(f"conf.k{i}", "v") for i in range(11)],
            "11 conf filters; at most 10: filter on fewer keys",
        ),
    ],
)
def test_a_bad_conf_filter_is_a_422_that_says_how_to_fix_it(
    client: TestClient, params: list[tuple[str, str]], problem: str
) -> None:
    response = client.get(URL, params=params, headers=ALICE)
    assert response.status_code == 422
    body = detail(response)
    assert body["message"].startswith("bad conf filter: ")
    assert any(problem in p for p in body["problems"]), body


def test_every_bad_conf_filter_is_reported_at_once(client: TestClient) -> None:
    params = [("conf.a b", "1"), ("conf", "x"), ("conf.ok", "1"), ("conf.ok", "2")]
    body = detail(client.get(URL, params=params, headers=ALICE))
    assert len(body["problems"]) == 3
    assert body["message"].endswith("(and 2 more)")


def test_ten_conf_filters_are_allowed(client: TestClient) -> None:
    params = [("conf.branch", "main"), *((f"conf.k{i}", "v") for i in range(9))]
    response = client.get(URL, params=params, headers=ALICE)
    assert response.status_code == 200 and response.json()["builds"] == []


def test_a_conf_filter_needs_a_token_first(client: TestClient) -> None:
    response = client.get(URL, params={"conf.a b": "x"})
    assert response.status_code == 401


def test_the_conf_parameter_is_in_the_openapi_schema(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/pipelines/{dag_id}/builds"]["get"]
    conf = [p for p in operation["parameters"] if p["name"] == "conf"]
    assert len(conf) == 1
    assert (conf[0]["in"], conf[0]["style"], conf[0]["explode"]) == ("query", "form", True)
    assert conf[0]["schema"]["maxProperties"] == 10
    assert "conf.<key>=<value>" in conf[0]["description"]
    assert {"status", "since", "cursor"} <= {p["name"] for p in operation["parameters"]}
