"""The dashboard's pipeline, series, build, transitions and session routes: answers and refusals."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_bkci.model.event import build_id_for
from airflow_bkci.store import Store
from tests.unit.dashboard.helpers import ALICE, BOB, FakeCatalog, S, task
from tests.unit.store.builders import build_event, event

pytestmark = pytest.mark.timeout(60)

DAY0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
ETL_R1 = build_id_for("etl", "r1")
SECRET_S1 = build_id_for("secret", "s1")


def at(hours: float) -> str:
    return (DAY0 + timedelta(hours=hours)).isoformat()


@pytest.fixture(autouse=True)
def seeded(store: Store, catalog: FakeCatalog) -> None:
    """etl: builds on 1 and 3 March (2 March has none); secret: one build."""

    def build(run: str, status: Any, due: float, seconds: float, dag: str = "etl") -> Any:
        return build_event(
            status,
            run=run,
            dag=dag,
            run_after=at(due),
            started_at=at(due),
            ended_at=(DAY0 + timedelta(hours=due, seconds=seconds)).isoformat(),
        )

    store.apply(
        [
            build("r1", S.SUCCEED, 1, 60),
            build("r2", S.FAILED, 2, 120),
            build("r3", S.SUCCEED, 49, 30),
            build("r4", S.SUCCEED, 50, 90),
            build("r5", S.SUCCEED, 51, 300),
            build("s1", S.SUCCEED, 1, 5, dag="secret"),
        ]
    )
    store.apply(
        [
            event(S.QUEUE, "extract", run="r1", stage="extract", at=1),
            event(S.RUNNING, "extract", run="r1", stage="extract", at=2),
            event(S.SUCCEED, "extract", run="r1", stage="extract", at=3),
            task("etl", "r1", "load", S.QUEUE, at=4),
        ]
    )
    catalog.add("etl", ["alice", "bob"], ["team-x"])
    catalog.add("secret", ["mallory"])
    catalog.add("fresh", ["nina"], ["new"])  # Airflow knows it, no build yet


# ------------------------------------------------------------------ pipeline
def test_pipeline_header_has_owners_tags_editable_and_airflow_links(client: Any) -> None:
    answer = client.get("/v1/dashboard/pipelines/etl", headers=BOB)
    assert answer.json() == {
        "dag_id": "etl",
        "owners": ["alice", "bob"],
        "tags": ["team-x"],
        "editable": True,
        "links": {"grid": "/dags/etl", "runs": "/dags/etl/runs"},
    }


def test_pipeline_editable_follows_the_put_permission(client: Any, catalog: FakeCatalog) -> None:
    catalog.add("deploy", ["bob"])  # alice may read deploy but not change it
    answers = [client.get("/v1/dashboard/pipelines/deploy", headers=h) for h in (ALICE, BOB)]
    assert [a.json()["editable"] for a in answers] == [False, True]


def test_pipeline_airflow_knows_without_builds_is_found(client: Any) -> None:
    answer = client.get("/v1/dashboard/pipelines/fresh", headers=BOB)
    assert (answer.status_code, answer.json()["owners"]) == (200, ["nina"])


def test_unknown_pipeline_is_404_naming_it(client: Any) -> None:
    for path in ("/v1/dashboard/pipelines/nope", "/v1/dashboard/pipelines/nope/series"):
        answer = client.get(path, headers=BOB)
        assert answer.status_code == 404
        assert "'nope'" in answer.json()["detail"]["message"]


def test_unreadable_pipeline_is_403_naming_the_dag(client: Any) -> None:
    for path in ("/v1/dashboard/pipelines/secret", "/v1/dashboard/pipelines/secret/series"):
        answer = client.get(path, headers=ALICE)
        assert answer.status_code == 403
        assert answer.json()["detail"]["dags"] == ["secret"]


# -------------------------------------------------------------------- series
def series(client: Any, **params: Any) -> dict[str, Any]:
    answer = client.get("/v1/dashboard/pipelines/etl/series", params=params, headers=BOB)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_series_by_day_has_every_day_with_empty_ones_zero(client: Any) -> None:
    body = series(client, since=at(0), until=at(72), bucket="day")
    assert body["bucket"] == "day"
    points = body["points"]
    assert [p["start"] for p in points] == [at(0), at(24), at(48)]
    first, empty, third = points
    assert (first["builds"], first["succeeded"], first["failed"]) == (2, 1, 1)
    assert first["success_rate"] == 0.5
    assert (first["duration_p50_ms"], first["duration_p95_ms"]) == (60000, 120000)
    assert empty == {
        "start": at(24),
        "builds": 0,
        "finished": 0,
        "succeeded": 0,
        "failed": 0,
        "canceled": 0,
        "success_rate": None,
        "duration_p50_ms": None,
        "duration_p95_ms": None,
    }
    # 30, 90 and 300 s: p50 90 s, p95 300 s
    assert (third["builds"], third["duration_p50_ms"], third["duration_p95_ms"]) == (
        3,
        90000,
        300000,
    )


def test_series_by_hour_aligns_buckets_on_the_hour(client: Any) -> None:
    points = series(client, since=at(0.5), until=at(3), bucket="hour")["points"]
    assert [p["start"] for p in points] == [at(0), at(1), at(2)]
    # the bucket holding since starts before it, but counts only builds due from since
    assert [p["builds"] for p in points] == [0, 1, 1]


def test_series_of_more_than_1000_buckets_is_refused(client: Any) -> None:
    answer = client.get(
        "/v1/dashboard/pipelines/etl/series",
        params={"since": at(0), "until": at(1001), "bucket": "hour"},
        headers=BOB,
    )
    assert answer.status_code == 422
    assert "1001 buckets" in answer.json()["detail"]["message"]
    assert len(series(client, since=at(0), until=at(1000), bucket="hour")["points"]) == 1000


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"since": at(5), "until": at(1)}, "is not before"),
        ({"since": at(0), "until": at(24 * 400)}, "366 days"),
        ({"bucket": "week"}, "'hour' or 'day'"),
        ({"since": "2026-03-01T00:00:00"}, "timezone"),
    ],
)
def test_series_bad_parameters_are_422(client: Any, params: dict[str, str], says: str) -> None:
    answer = client.get("/v1/dashboard/pipelines/etl/series", params=params, headers=BOB)
    assert answer.status_code == 422
    assert says in answer.text


# --------------------------------------------------------------------- build
def test_build_has_document_sequence_editable_and_links(client: Any) -> None:
    body = client.get(f"/v1/dashboard/builds/{ETL_R1}", headers=BOB).json()
    assert body["document"]["id"] == ETL_R1
    assert body["document"]["stages"]["extract"]["tasks"]["extract"]["status"] == "SUCCEED"
    assert body["sequence"] > 0
    assert body["editable"] is True
    assert body["links"]["run"] == "/dags/etl/runs/r1"
    assert body["links"]["grid"] == "/dags/etl"
    assert body["links"]["tasks"]["extract"] == {
        "task": "/dags/etl/runs/r1/tasks/extract",
        "log": "/dags/etl/runs/r1/tasks/extract?try_number=1",
    }
    assert set(body["links"]["tasks"]) == {"extract", "load"}


def test_build_sequence_matches_the_snapshot(client: Any) -> None:
    mine = client.get(f"/v1/dashboard/builds/{ETL_R1}", headers=BOB).json()
    snapshot = client.get(f"/v1/builds/{ETL_R1}", headers=BOB).json()
    assert (mine["document"], mine["sequence"]) == (snapshot["document"], snapshot["sequence"])


def test_unknown_build_is_404_and_unreadable_is_403(client: Any) -> None:
    for suffix in ("", "/transitions"):
        missing = client.get(f"/v1/dashboard/builds/b-nope{suffix}", headers=BOB)
        assert missing.status_code == 404
        assert "'b-nope'" in missing.json()["detail"]["message"]
        hidden = client.get(f"/v1/dashboard/builds/{SECRET_S1}{suffix}", headers=ALICE)
        assert (hidden.status_code, hidden.json()["detail"]["dags"]) == (403, ["secret"])


def test_transitions_are_every_nodes_newest_first(client: Any) -> None:
    rows = client.get(f"/v1/dashboard/builds/{ETL_R1}/transitions", headers=BOB).json()[
        "transitions"
    ]
    extract = [(r["from"], r["to"]) for r in rows if r["node"] == "extract"]
    assert extract == [("RUNNING", "SUCCEED"), ("QUEUE", "RUNNING"), (None, "QUEUE")]
    assert {r["node"] for r in rows} == {"", "extract", "load"}
    times = [r["at"] for r in rows]
    assert times == sorted(times, reverse=True)
    first = rows[0]
    assert first["from_status"] == first["from"] and first["to_status"] == first["to"]
    assert {"try_number", "source", "airflow_state", "recorded_at"} <= set(first)


def test_transitions_limit(client: Any) -> None:
    url = f"/v1/dashboard/builds/{ETL_R1}/transitions"
    rows = client.get(url, params={"limit": 2}, headers=BOB).json()["transitions"]
    everything = client.get(url, headers=BOB).json()["transitions"]
    assert rows == everything[:2]
    assert client.get(url, params={"limit": 0}, headers=BOB).status_code == 422
    assert client.get(url, params={"limit": 5001}, headers=BOB).status_code == 422


# ----------------------------------------------------------------------- me
def test_me_names_the_signed_in_user(client: Any) -> None:
    assert client.get("/v1/dashboard/me", headers=ALICE).json() == {"user": "alice"}


def test_me_reads_the_session_cookie_airflow_sets(client: Any) -> None:
    client.cookies.set("_token", "bob-token")
    assert client.get("/v1/dashboard/me").json() == {"user": "bob"}


# --------------------------------------------------------------- no session
DATA_ROUTES = [
    "/v1/dashboard/wall",
    "/v1/dashboard/pipelines/etl",
    "/v1/dashboard/pipelines/etl/series",
    f"/v1/dashboard/builds/{ETL_R1}",
    f"/v1/dashboard/builds/{ETL_R1}/transitions",
    "/v1/dashboard/me",
]


@pytest.mark.parametrize("path", DATA_ROUTES)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer expired"}, {"Authorization": "Bearer forged"}],
    ids=["no-token", "expired", "forged"],
)
def test_every_data_route_is_401_without_a_valid_session(
    client: Any, path: str, headers: dict[str, str]
) -> None:
    answer = client.get(path, headers=headers)
    assert answer.status_code == 401
    assert "etl" not in answer.text and "document" not in answer.text
