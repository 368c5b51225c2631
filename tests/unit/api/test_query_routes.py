"""The query routes on a real SQLite status store: what each answers, to whom, and to bad input."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from jwt import InvalidTokenError
from sqlalchemy import delete, func, select

from airflow_bkci.api.app import create_app
from airflow_bkci.exceptions import StoreUnavailable
from airflow_bkci.model import BuildStatus
from airflow_bkci.model.event import build_id_for, utcnow
from airflow_bkci.store import Store
from airflow_bkci.store.outbox import Outbox
from airflow_bkci.store.tables import BuildRow, ChangeRow
from tests.unit.api.users import User
from tests.unit.store.builders import build_event, event, iso

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.timeout(60)

S = BuildStatus
ALICE = {"Authorization": "Bearer alice-token"}  # may not read "payments" nor connections
BOB = {"Authorization": "Bearer bob-token"}  # may read everything
ETL = "etl"


class FakeAuthManager:
    """Tokens name users; ``no_read`` holds the DAGs a user may not read."""

    def __init__(self) -> None:
        self.users = {"alice-token": User("alice"), "bob-token": User("bob")}
        self.no_read: dict[str, set[str]] = {"alice": {"payments"}}
        self.connection_readers = {"bob"}

    async def get_user_from_token(self, token: str) -> BaseUser:
        if token not in self.users:
            raise InvalidTokenError("Signature verification failed")
        return self.users[token]

    def filter_authorized_dag_ids(
        self, *, dag_ids: set[str], user: User, method: str, team_name: str | None = None
    ) -> set[str]:
        assert method == "GET"
        return dag_ids - self.no_read.get(user.name, set())

    def is_authorized_connection(self, *, method: str, user: User, details: Any = None) -> bool:
        return method == "GET" and user.name in self.connection_readers


@pytest.fixture
def auth(monkeypatch: pytest.MonkeyPatch) -> FakeAuthManager:
    from airflow.api_fastapi.app import _AuthManagerState

    manager = FakeAuthManager()
    monkeypatch.setattr(_AuthManagerState, "instance", manager)
    return manager


def seed(store: Store) -> None:
    """Six builds of etl (see the metrics test for their numbers), one of payments and other."""

    def run(n: int, status: BuildStatus, trigger: str, user: str | None, **times: float) -> Any:
        return build_event(
            status,
            run=f"r{n}",
            trigger_type=trigger,
            triggering_user=user,
            **{k: iso(v) for k, v in times.items()},
        )

    store.apply(
        [
            run(
                1,
                S.SUCCEED,
                "timetable",
                None,
                run_after=0,
                queued_at=0,
                started_at=10,
                ended_at=70,
            ),
            run(
                2,
                S.FAILED,
                "ui",
                "alice",
                run_after=100,
                queued_at=100,
                started_at=130,
                ended_at=230,
            ),
            run(
                3,
                S.SUCCEED,
                "rest_api",
                "bob",
                run_after=200,
                queued_at=200,
                started_at=205,
                ended_at=245,
            ),
            run(
                4,
                S.CANCELED,
                "ui",
                "alice",
                run_after=300,
                queued_at=300,
                started_at=320,
                ended_at=330,
            ),
            run(5, S.RUNNING, "ui", "alice", run_after=400, queued_at=400, started_at=401),
            run(6, S.QUEUE, "timetable", None, run_after=500, queued_at=500),
            event(S.SUCCEED, "extract", run="r1"),
            event(S.FAILED, "load", run="r2", map_index=0),
            event(S.FAILED, "load", run="r2", map_index=1),
            event(S.SUCCEED, "extract", run="r2"),
            event(S.FAILED, "notify", run="r4"),
            event(S.FAILED, "load", run="r5"),
            build_event(S.SUCCEED, run="p1", dag="payments", run_after=iso(50)),
            build_event(S.RUNNING, run="o1", dag="other", run_after=iso(10)),
        ]
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    store.migrate()
    seed(store)
    yield store
    store.dispose()


@pytest.fixture
def client(auth: FakeAuthManager, store: Store) -> TestClient:
    app = create_app(store_factory=lambda: store, dispatcher_factory=lambda: None)
    return TestClient(app)


def build(n: int, dag: str = ETL) -> str:
    return build_id_for(dag, f"r{n}")


def runs(answer: dict[str, Any]) -> list[str]:
    return [b["run_id"] for b in answer["builds"]]


def all_pages(client: TestClient, url: str, **params: Any) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get(url, params=query, headers=ALICE)
        assert response.status_code == 200, response.text
        pages.append(runs(response.json()))
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return pages


def detail(response: Any) -> str:
    body = response.json()["detail"]
    return body["message"] if isinstance(body, dict) else str(body)


# ----------------------------------------------------------------- authentication
ROUTES = [
    "/v1/pipelines",
    f"/v1/pipelines/{ETL}/builds",
    f"/v1/pipelines/{ETL}/metrics",
    f"/v1/builds/{build_id_for(ETL, 'r1')}",
    f"/v1/builds/{build_id_for(ETL, 'r1')}/changes",
    f"/v1/builds/{build_id_for(ETL, 'r1')}/history",
    "/v1/delivery",
]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer forged"}])
def test_every_query_route_needs_a_valid_airflow_token(
    client: TestClient, path: str, headers: dict[str, str]
) -> None:
    response = client.get(path, headers=headers, params={"limit": 0})  # bad input too: 401 first
    assert response.status_code == 401
    assert response.json()["detail"].startswith(("Not authenticated", "Invalid JWT token"))


def test_every_query_route_is_in_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/pipelines",
        "/v1/pipelines/{dag_id}/builds",
        "/v1/pipelines/{dag_id}/metrics",
        "/v1/builds/{build_id}",
        "/v1/builds/{build_id}/changes",
        "/v1/builds/{build_id}/history",
        "/v1/delivery",
    ):
        assert "get" in paths[path], path
        assert {"401", "503"} <= set(paths[path]["get"]["responses"]), path


# ----------------------------------------------------------------------- pipelines
def test_pipelines_are_the_readable_ones_each_with_its_newest_build(client: TestClient) -> None:
    response = client.get("/v1/pipelines", headers=ALICE)
    assert response.status_code == 200
    pipelines = response.json()["pipelines"]
    assert [p["pipeline_id"] for p in pipelines] == [ETL, "other"]  # not payments
    etl = pipelines[0]
    assert etl["builds"] == 6
    latest = etl["latest_build"]
    assert (latest["id"], latest["run_id"], latest["status"]) == (build(6), "r6", "QUEUE")
    assert latest["run_after"] == iso(500) and latest["trigger_type"] == "timetable"
    assert response.json()["next_cursor"] is None
    everyone = client.get("/v1/pipelines", headers=BOB).json()["pipelines"]
    assert [p["pipeline_id"] for p in everyone] == [ETL, "other", "payments"]


def test_pipelines_page_by_cursor(client: TestClient) -> None:
    first = client.get("/v1/pipelines", params={"limit": 1}, headers=BOB).json()
    second = client.get(
        "/v1/pipelines", params={"limit": 2, "cursor": first["next_cursor"]}, headers=BOB
    ).json()
    assert [p["pipeline_id"] for p in first["pipelines"]] == [ETL]
    assert [p["pipeline_id"] for p in second["pipelines"]] == ["other", "payments"]
    assert second["next_cursor"] is None


# -------------------------------------------------------------------------- builds
def test_builds_are_listed_newest_first_with_their_indexed_fields(client: TestClient) -> None:
    answer = client.get(f"/v1/pipelines/{ETL}/builds", headers=ALICE).json()
    assert runs(answer) == ["r6", "r5", "r4", "r3", "r2", "r1"]
    r2 = answer["builds"][4]
    assert r2 == {
        "id": build(2),
        "pipeline_id": ETL,
        "run_id": "r2",
        "build_num": 2,
        "status": "FAILED",
        "trigger_type": "ui",
        "triggering_user": "alice",
        "run_after": iso(100),
        "queued_at": iso(100),
        "started_at": iso(130),
        "ended_at": iso(230),
        "duration_ms": 100_000,
        "updated_at": r2["updated_at"],
        "sequence": r2["sequence"],
    }
    assert r2["sequence"] >= 1 and answer["next_cursor"] is None


def test_pages_list_every_build_exactly_once(client: TestClient) -> None:
    pages = all_pages(client, f"/v1/pipelines/{ETL}/builds", limit=4)
    assert pages == [["r6", "r5", "r4", "r3"], ["r2", "r1"]]
    single = all_pages(client, f"/v1/pipelines/{ETL}/builds", limit=1)
    assert [r for page in single for r in page] == ["r6", "r5", "r4", "r3", "r2", "r1"]


def test_builds_due_at_the_same_time_page_by_build_number(client: TestClient, store: Store) -> None:
    store.apply([build_event(S.QUEUE, run=f"same{i}", run_after=iso(500)) for i in range(3)])
    pages = all_pages(client, f"/v1/pipelines/{ETL}/builds", limit=1, status="QUEUE")
    assert pages == [["same2"], ["same1"], ["same0"], ["r6"]]


def test_pages_stay_stable_when_new_builds_arrive_between_them(
    client: TestClient, store: Store
) -> None:
    url = f"/v1/pipelines/{ETL}/builds"
    first = client.get(url, params={"limit": 2}, headers=ALICE).json()
    assert runs(first) == ["r6", "r5"]
    # A new build on top and a late one in the middle of what is left.
    store.apply(
        [
            build_event(S.QUEUE, run="r7", run_after=iso(600)),
            build_event(S.SUCCEED, run="late", run_after=iso(150)),
        ]
    )
    rest = all_pages(client, url, limit=2, cursor=first["next_cursor"])
    listed = runs(first) + [r for page in rest for r in page]
    assert listed == ["r6", "r5", "r4", "r3", "late", "r2", "r1"]  # r7 is above the cursor
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "SUCCEED"}, ["r3", "r1"]),
        ({"status": ["FAILED", "CANCELED"]}, ["r4", "r2"]),
        ({"trigger_type": "ui"}, ["r5", "r4", "r2"]),
        ({"trigger_type": ["timetable", "rest_api"]}, ["r6", "r3", "r1"]),
        ({"triggering_user": "alice"}, ["r5", "r4", "r2"]),
        ({"triggering_user": "nobody"}, []),
        ({"since": iso(100), "until": iso(400)}, ["r4", "r3", "r2"]),
        ({"since": iso(400)}, ["r6", "r5"]),
        ({"until": iso(100)}, ["r1"]),
        ({"trigger_type": "ui", "status": "FAILED", "triggering_user": "alice"}, ["r2"]),
    ],
)
def test_builds_filter(client: TestClient, params: dict[str, Any], expected: list[str]) -> None:
    pages = all_pages(client, f"/v1/pipelines/{ETL}/builds", limit=2, **params)
    assert [r for page in pages for r in page] == expected


def test_filters_by_indexed_columns_not_the_document(store: Store) -> None:
    with store.engine.connect() as conn:
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT build_id FROM bkci_build WHERE dag_id = 'etl' AND "
            "triggering_user = 'alice' ORDER BY run_after DESC, build_num DESC LIMIT 51"
        ).all()
    text = " ".join(str(row[-1]) for row in plan)
    assert "ix_bkci_build_dag_id_triggering_user_run_after_build_num" in text
    assert "TEMP B-TREE" not in text  # no sort: the index gives the order


# ----------------------------------------------------------------- one build
def test_a_build_snapshot_is_the_stores_document_and_sequence(
    client: TestClient, store: Store
) -> None:
    response = client.get(f"/v1/builds/{build(2)}", headers=ALICE)
    assert response.status_code == 200
    assert response.json() == store.snapshot(build(2))
    assert response.json()["document"]["stages"]  # the tree, with its tasks


def grow(store: Store) -> None:
    """Two more change sets for r2, one batch each, as a live build makes them."""
    store.apply([event(S.RUNNING, "report", run="r2", at=300)])
    store.apply([event(S.SUCCEED, "report", run="r2", at=310)])


def test_change_sets_after_a_sequence_rebuild_the_snapshot(
    client: TestClient, store: Store
) -> None:
    import jsonpatch

    grow(store)
    current = store.snapshot(build(2))
    assert current is not None and current["sequence"] >= 2
    answer = client.get(f"/v1/builds/{build(2)}/changes", headers=ALICE).json()
    assert answer["after"] == 0 and answer["sequence"] == current["sequence"]
    assert [c["sequence"] for c in answer["changes"]] == list(range(1, current["sequence"] + 1))
    document: dict[str, Any] = {}
    for change in answer["changes"]:
        document = jsonpatch.apply_patch(document, change["patch"])
    assert document == current["document"]
    assert answer["next_after"] is None


def test_change_sets_page_by_next_after(client: TestClient, store: Store) -> None:
    grow(store)
    current = store.snapshot(build(2))
    assert current is not None
    first = client.get(f"/v1/builds/{build(2)}/changes", params={"limit": 1}, headers=ALICE).json()
    assert [c["sequence"] for c in first["changes"]] == [1]
    assert first["next_after"] == 1
    rest = client.get(f"/v1/builds/{build(2)}/changes", params={"after": 1}, headers=ALICE).json()
    assert [c["sequence"] for c in rest["changes"]] == [2, 3] and rest["next_after"] is None
    at_head = client.get(
        f"/v1/builds/{build(2)}/changes", params={"after": current["sequence"]}, headers=ALICE
    ).json()
    assert at_head["changes"] == [] and at_head["next_after"] is None


def test_a_sequence_beyond_the_current_one_is_a_conflict_not_an_empty_list(
    client: TestClient, store: Store
) -> None:
    current = store.snapshot(build(2))
    assert current is not None
    response = client.get(
        f"/v1/builds/{build(2)}/changes",
        params={"after": current["sequence"] + 1},
        headers=ALICE,
    )
    assert response.status_code == 409
    message = detail(response)
    assert f"after={current['sequence'] + 1}" in message
    assert f"current sequence {current['sequence']}" in message and "snapshot" in message


def test_change_sets_no_longer_kept_say_take_a_snapshot(client: TestClient, store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            delete(ChangeRow).where(ChangeRow.build_id == build(2), ChangeRow.sequence == 1)
        )
    response = client.get(f"/v1/builds/{build(2)}/changes", headers=ALICE)
    assert response.status_code == 410
    assert f"GET /v1/builds/{build(2)}" in detail(response)
    later = client.get(f"/v1/builds/{build(2)}/changes", params={"after": 1}, headers=ALICE)
    assert later.status_code == 200


def test_a_nodes_history_lists_its_transitions(client: TestClient, store: Store) -> None:
    store.apply(
        [event(S.RUNNING, "extract", run="r9", at=1), event(S.FAILED, "extract", run="r9", at=2)]
    )
    store.apply([event(S.SUCCEED, "extract", run="r9", try_number=2, at=3)])
    response = client.get(
        f"/v1/builds/{build(9)}/history", params={"node": "extract"}, headers=ALICE
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["node_id"] == "extract" and answer["pipeline_id"] == ETL
    steps = [(t["from_status"], t["to_status"], t["try_number"]) for t in answer["transitions"]]
    assert steps == [(None, "RUNNING", 1), ("RUNNING", "FAILED", 1), ("FAILED", "SUCCEED", 2)]
    assert answer["transitions"][0]["at"] == iso(1)
    mapped = client.get(
        f"/v1/builds/{build(2)}/history", params={"node": "load[1]"}, headers=ALICE
    ).json()
    assert [t["to_status"] for t in mapped["transitions"]] == ["FAILED"]
    own = client.get(f"/v1/builds/{build(2)}/history", headers=ALICE).json()
    assert own["node_id"] == "" and [t["to_status"] for t in own["transitions"]] == ["FAILED"]


# ------------------------------------------------------------------------ metrics
def test_metrics_match_hand_computed_values(client: TestClient) -> None:
    window = {"since": iso(-3600), "until": iso(3600)}
    response = client.get(f"/v1/pipelines/{ETL}/metrics", params=window, headers=ALICE)
    assert response.status_code == 200
    m = response.json()
    assert (m["builds"], m["finished"], m["unfinished"]) == (6, 4, 2)
    assert m["success_rate"] == 0.5  # 2 SUCCEED of 4 finished, the canceled one included
    assert m["by_status"] == {"CANCELED": 1, "FAILED": 1, "SUCCEED": 2}
    # durations 60, 100, 40, 10 s: nearest rank p50 = 2nd of 4, p95 = 4th of 4
    assert m["duration_ms"] == {"count": 4, "p50": 40_000, "p95": 100_000}
    # queued to started 10, 30, 5, 20, 1 s (r6 has not started): 3rd and 5th of 5
    assert m["queue_ms"] == {"count": 5, "p50": 10_000, "p95": 30_000}
    # load failed in r2 (two mapped instances: one build) and r5; notify in r4
    assert m["failing_tasks"] == [
        {"task_id": "load", "failed_builds": 2, "last_failed_build_num": 5},
        {"task_id": "notify", "failed_builds": 1, "last_failed_build_num": 4},
    ]
    assert (m["since"], m["until"]) == (iso(-3600), iso(3600))


def test_metrics_of_a_window(client: TestClient) -> None:
    params = {"since": iso(100), "until": iso(300), "top": 1}
    m = client.get(f"/v1/pipelines/{ETL}/metrics", params=params, headers=ALICE).json()
    assert (m["builds"], m["finished"], m["success_rate"]) == (2, 2, 0.5)
    assert m["duration_ms"] == {"count": 2, "p50": 40_000, "p95": 100_000}
    assert m["failing_tasks"] == [
        {"task_id": "load", "failed_builds": 1, "last_failed_build_num": 2}
    ]


def test_metrics_of_an_empty_window_have_no_rates(client: TestClient) -> None:
    params = {"since": iso(10_000), "until": iso(20_000)}
    m = client.get(f"/v1/pipelines/{ETL}/metrics", params=params, headers=ALICE).json()
    assert (m["builds"], m["success_rate"], m["failing_tasks"]) == (0, None, [])
    assert m["duration_ms"] == {"count": 0, "p50": None, "p95": None}


def test_metrics_default_to_the_last_seven_days(client: TestClient, store: Store) -> None:
    now = utcnow()
    store.apply(
        [build_event(S.SUCCEED, run="recent", run_after=(now - timedelta(days=1)).isoformat())]
    )
    m = client.get(f"/v1/pipelines/{ETL}/metrics", headers=ALICE).json()
    assert m["builds"] == 1 and m["success_rate"] == 1.0


# ------------------------------------------------------------------- permissions
@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("/v1/pipelines/payments/builds", "its builds"),
        ("/v1/pipelines/payments/metrics", "its metrics"),
        (f"/v1/builds/{build_id_for('payments', 'p1')}", "build"),
        (f"/v1/builds/{build_id_for('payments', 'p1')}/changes", "build"),
        (f"/v1/builds/{build_id_for('payments', 'p1')}/history", "build"),
    ],
)
def test_a_dag_the_caller_may_not_read_is_403_naming_it(
    client: TestClient, path: str, what: str
) -> None:
    response = client.get(path, headers=ALICE)
    assert response.status_code == 403
    body = response.json()["detail"]
    assert body["dags"] == ["payments"]
    assert "you may not read DAG 'payments'" in body["message"] and what in body["message"]
    assert client.get(path, headers=BOB).status_code == 200


# --------------------------------------------------------------------- bad input
UNKNOWN_BUILD = build_id_for("etl", "never")


@pytest.mark.parametrize(
    ("path", "params", "code", "words"),
    [
        ("/v1/pipelines/nope/builds", {}, 404, "no pipeline 'nope'"),
        ("/v1/pipelines/nope/metrics", {}, 404, "no pipeline 'nope'"),
        (f"/v1/builds/{UNKNOWN_BUILD}", {}, 404, f"no build {UNKNOWN_BUILD!r}"),
        (f"/v1/builds/{UNKNOWN_BUILD}/changes", {}, 404, "no build"),
        (f"/v1/builds/{UNKNOWN_BUILD}/history", {}, 404, "no build"),
        (
            f"/v1/builds/{build_id_for(ETL, 'r2')}/history",
            {"node": "ghost"},
            404,
            "no node 'ghost'",
        ),
        (f"/v1/pipelines/{ETL}/builds", {"cursor": "garbage!"}, 400, "not a cursor"),
        (f"/v1/pipelines/{ETL}/builds", {"cursor": "e30"}, 400, "not a cursor"),  # "{}"
        ("/v1/pipelines", {"cursor": "bm90IGpzb24"}, 400, "not a cursor"),  # "not json"
        (f"/v1/pipelines/{ETL}/builds", {"limit": 0}, 422, "limit"),
        (f"/v1/pipelines/{ETL}/builds", {"limit": 501}, 422, "limit"),
        ("/v1/pipelines", {"limit": 10_000}, 422, "limit"),
        (f"/v1/pipelines/{ETL}/builds", {"status": "DONE"}, 422, "SUCCEED"),
        (f"/v1/pipelines/{ETL}/builds", {"trigger_type": "manual"}, 422, "rest_api"),
        (f"/v1/pipelines/{ETL}/builds", {"since": "2026-03-01T12:00:00"}, 422, "timezone"),
        (f"/v1/pipelines/{ETL}/builds", {"since": "yesterday"}, 422, "since"),
        (
            f"/v1/pipelines/{ETL}/builds",
            {"since": iso(100), "until": iso(100)},
            422,
            "is not before until",
        ),
        (f"/v1/pipelines/{ETL}/metrics", {"since": iso(200), "until": iso(100)}, 422, "not before"),
        (
            f"/v1/pipelines/{ETL}/metrics",
            {"since": iso(0), "until": iso(400 * 86400)},
            422,
            "longer than 366 days",
        ),
        (f"/v1/pipelines/{ETL}/metrics", {"top": 0}, 422, "top"),
        (f"/v1/builds/{build_id_for(ETL, 'r2')}/changes", {"after": -1}, 422, "after"),
        (f"/v1/builds/{build_id_for(ETL, 'r2')}/changes", {"limit": 5001}, 422, "limit"),
        (f"/v1/builds/{build_id_for(ETL, 'r2')}/history", {"node": "x" * 301}, 422, "node"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_changes_nothing(
    client: TestClient, store: Store, path: str, params: dict[str, Any], code: int, words: str
) -> None:
    before = _state(store)
    response = client.get(path, params=params, headers=ALICE)
    assert response.status_code == code, response.text
    assert words in response.text
    assert _state(store) == before


def _state(store: Store) -> tuple[Any, ...]:
    with store.engine.connect() as conn:
        builds = conn.execute(select(func.count()).select_from(BuildRow)).scalar()
        changes = conn.execute(select(func.count()).select_from(ChangeRow)).scalar()
    return builds, changes, store.last_update()


def test_a_cursor_only_continues_its_own_list(client: TestClient) -> None:
    url = f"/v1/pipelines/{ETL}/builds"
    cursor = client.get(url, params={"limit": 1, "status": "SUCCEED"}, headers=ALICE).json()[
        "next_cursor"
    ]
    other_filter = client.get(url, params={"limit": 1, "cursor": cursor}, headers=ALICE)
    assert other_filter.status_code == 400
    assert "continues another list" in detail(other_filter)
    other_pipeline = client.get(
        "/v1/pipelines/other/builds",
        params={"limit": 1, "status": "SUCCEED", "cursor": cursor},
        headers=ALICE,
    )
    assert other_pipeline.status_code == 400
    pipelines = client.get("/v1/pipelines", params={"cursor": cursor}, headers=ALICE)
    assert pipelines.status_code == 400
    same = client.get(
        url, params={"limit": 1, "status": "SUCCEED", "cursor": cursor}, headers=ALICE
    )
    assert same.status_code == 200 and runs(same.json()) == ["r1"]


# ---------------------------------------------------------------- delivery health
def test_delivery_health_needs_read_access_to_connections(client: TestClient) -> None:
    response = client.get("/v1/delivery", headers=ALICE)
    assert response.status_code == 403
    assert "may not read Airflow connections" in detail(response)


def test_delivery_health_reports_every_endpoint_with_its_circuit(
    client: TestClient, store: Store
) -> None:
    outbox = Outbox(store, owner="host:1:dispatcher")
    assert outbox.open_lanes("hook", lambda dag_id: dag_id == ETL) == 6
    outbox.open_lanes("idle", lambda dag_id: dag_id == "other")
    outbox.delivered([(lane, lane.head_seq) for lane in outbox.claim("idle", 10)])
    outbox.save_circuit("hook", "open", 5, utcnow() + timedelta(seconds=60))
    outbox.save_circuit("mq", "open", 7, utcnow() - timedelta(seconds=1))

    response = client.get("/v1/delivery", headers=BOB)
    assert response.status_code == 200
    health = {e["endpoint"]: e for e in response.json()["endpoints"]}
    assert set(health) == {"hook", "idle", "mq"}
    hook = health["hook"]
    assert (hook["pending_lanes"], hook["dead_letters"], hook["gone"]) == (6, 0, None)
    assert 0 <= hook["oldest_pending_s"] < 60
    assert hook["circuit"]["state"] == "open" and hook["circuit"]["failures"] == 5
    assert hook["circuit"]["owner"] == "host:1:dispatcher"
    assert health["mq"]["circuit"]["state"] == "half_open"  # its open_until has passed
    assert health["idle"]["pending_lanes"] == 0
    assert health["idle"]["circuit"] == {
        "state": "closed",
        "failures": 0,
        "open_until": None,
        "owner": None,
        "changed_at": None,
    }


# -------------------------------------------------------------- store unavailable
def test_a_store_that_cannot_open_is_503_with_retry_after(auth: FakeAuthManager) -> None:
    def down() -> Store:
        raise StoreUnavailable("bkci status store is down")

    client = TestClient(create_app(store_factory=down, dispatcher_factory=lambda: None))
    response = client.get(f"/v1/pipelines/{ETL}/builds", headers=ALICE)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "status store is unavailable" in detail(response)


def test_a_store_lost_after_it_opened_is_503(auth: FakeAuthManager, tmp_path: Path) -> None:
    lost = Store(f"sqlite:///{tmp_path / 'no-such-dir' / 'status.db'}")  # opens lazily
    client = TestClient(create_app(store_factory=lambda: lost, dispatcher_factory=lambda: None))
    response = client.get(f"/v1/builds/{build(2)}", headers=ALICE)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "StoreUnavailable" in response.text
    lost.dispose()
