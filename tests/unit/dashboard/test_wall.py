"""GET /v1/dashboard/wall: which pipelines, for whom, and the numbers on each tile."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_bkci.model.event import utcnow
from airflow_bkci.store import Store
from tests.unit.dashboard.helpers import (
    ALICE,
    BOB,
    FakeAuthManager,
    FakeCatalog,
    S,
    finished,
    running,
    task,
)

pytestmark = pytest.mark.timeout(60)

WALL = "/v1/dashboard/wall"


@pytest.fixture(autouse=True)
def seeded(store: Store, catalog: FakeCatalog) -> None:
    """etl: r0 (10 days ago) and r1..r6 in the last week; deploy, secret: one build each;
    nightly: known to Airflow only."""
    now = utcnow()
    store.apply(
        [
            finished("etl", "r0", S.SUCCEED, due_hours_ago=240, seconds=1000, now=now),
            finished("etl", "r1", S.SUCCEED, due_hours_ago=50, seconds=60, now=now),
            finished("etl", "r2", S.FAILED, due_hours_ago=40, seconds=100, now=now, user="alice"),
            finished("etl", "r3", S.SUCCEED, due_hours_ago=30, seconds=40, now=now),
            finished("etl", "r4", S.CANCELED, due_hours_ago=20, seconds=10, now=now),
            finished("etl", "r5", S.SUCCEED, due_hours_ago=10, seconds=80, now=now),
            running("etl", "r6", due_hours_ago=1, now=now),
            task("etl", "r2", "extract", S.SUCCEED, 40),
            task("etl", "r2", "load", S.FAILED, 39.99, stage="load", stage_name="Load"),
            task("etl", "r6", "extract", S.RUNNING, stage="extract"),
            finished("deploy", "d1", S.SUCCEED, due_hours_ago=2, seconds=30, now=now),
            finished("secret", "s1", S.FAILED, due_hours_ago=3, seconds=5, now=now),
        ]
    )
    catalog.add("etl", ["alice"], ["team-x"], {"load": "carol, dave", "extract": "erin"})
    catalog.add("deploy", ["bob"], ["team-y"])
    catalog.add("secret", ["mallory"], ["team-x"])
    catalog.add("nightly", ["nina"], ["team-x"])


def wall(client: Any, headers: dict[str, str] = BOB, **params: Any) -> dict[str, Any]:
    answer = client.get(WALL, params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def tile_ids(body: dict[str, Any]) -> list[str]:
    return [t["dag_id"] for t in body["tiles"]]


# ------------------------------------------------------------------ selection
@pytest.mark.parametrize(
    ("params", "config", "source", "tiles"),
    [
        (
            {"pipelines": "deploy", "tag": "team-x"},
            {"PIPELINES": "etl", "TAG": "team-x"},
            "url",
            ["deploy"],
        ),
        ({"tag": "team-y"}, {"PIPELINES": "etl", "TAG": "team-x"}, "tag", ["deploy"]),
        ({}, {"PIPELINES": "deploy, etl", "TAG": "team-y"}, "config", ["deploy", "etl"]),
        ({}, {"TAG": "team-x"}, "config_tag", ["etl", "nightly", "secret"]),
        ({}, {}, "all", ["deploy", "etl", "secret"]),
    ],
    ids=[
        "url-beats-tag-and-config",
        "tag-beats-config",
        "config-beats-config-tag",
        "config-tag",
        "all-store-pipelines",
    ],
)
def test_the_first_selection_that_names_pipelines_wins(
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
    params: dict[str, str],
    config: dict[str, str],
    source: str,
    tiles: list[str],
) -> None:
    for option, value in config.items():
        monkeypatch.setenv(f"AIRFLOW__BKCI__DASHBOARD_{option}", value)
    body = wall(client, **params)
    assert (body["source"], tile_ids(body)) == (source, tiles)


def test_named_pipelines_keep_their_order_and_repeat_or_comma_forms_mix(client: Any) -> None:
    answer = client.get(
        WALL + "?pipelines=secret,deploy&pipelines=etl&pipelines=deploy", headers=BOB
    )
    assert tile_ids(answer.json()) == ["secret", "deploy", "etl"]


def test_all_is_capped_by_limit_after_permissions(client: Any) -> None:
    # alice cannot read "secret": the limit counts only what she may see
    assert tile_ids(wall(client, ALICE, limit=2)) == ["deploy", "etl"]
    assert tile_ids(wall(client, BOB, limit=1)) == ["deploy"]


# ---------------------------------------------------------------- permissions
def test_an_unreadable_pipeline_is_never_a_tile(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "secret" not in tile_ids(wall(client, ALICE))
    assert "secret" not in tile_ids(wall(client, ALICE, tag="team-x"))
    monkeypatch.setenv("AIRFLOW__BKCI__DASHBOARD_TAG", "team-x")
    assert tile_ids(wall(client, ALICE)) == ["etl", "nightly"]


def test_unreadable_and_unknown_named_pipelines_look_alike_in_missing(client: Any) -> None:
    body = wall(client, ALICE, pipelines="secret,etl,nope")
    assert tile_ids(body) == ["etl"]
    assert body["missing"] == [
        {"dag_id": "secret", "reason": "unknown"},
        {"dag_id": "nope", "reason": "unknown"},
    ]


def test_configured_pipelines_that_are_missing_are_reported(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__BKCI__DASHBOARD_PIPELINES", "gone,deploy")
    body = wall(client, BOB)
    assert (body["source"], tile_ids(body)) == ("config", ["deploy"])
    assert body["missing"] == [{"dag_id": "gone", "reason": "unknown"}]


def test_a_tag_that_matches_nothing_is_an_empty_wall(client: Any) -> None:
    body = wall(client, BOB, tag="no-such-tag")
    assert (body["source"], body["tiles"], body["missing"]) == ("tag", [], [])


def test_editable_is_the_permission_to_change_the_dag(client: Any, auth: FakeAuthManager) -> None:
    tiles = {t["dag_id"]: t["editable"] for t in wall(client, ALICE)["tiles"]}
    assert tiles == {"deploy": False, "etl": True}
    assert "PUT" in auth.methods


# --------------------------------------------------------------------- values
def test_stats_cover_the_window_and_percentiles_are_nearest_rank(client: Any) -> None:
    etl = wall(client, pipelines="etl")["tiles"][0]
    # r1..r6 in the week (r0 is 10 days old); r6 still runs; durations 60, 100, 40, 10, 80 s
    assert etl["stats"] == {
        "builds": 6,
        "finished": 5,
        "succeeded": 3,
        "failed": 1,
        "canceled": 1,
        "success_rate": 0.6,
        "duration_p50_ms": 60000,
        "duration_p95_ms": 100000,
    }


def test_window_narrows_the_stats(client: Any) -> None:
    # the last 25 hours: r4 (canceled, 10 s), r5 (80 s) and the running r6
    stats = wall(client, pipelines="etl", window="25h")["tiles"][0]["stats"]
    assert (stats["builds"], stats["finished"], stats["success_rate"]) == (3, 2, 0.5)
    assert (stats["duration_p50_ms"], stats["duration_p95_ms"]) == (10000, 80000)
    body = wall(client, pipelines="etl", window=str(25 * 3600))
    assert body["tiles"][0]["stats"] == stats


def test_trend_is_the_newest_finished_builds_oldest_first(client: Any) -> None:
    trend = wall(client, pipelines="etl", trend=3)["tiles"][0]["trend"]
    assert [(p["build_num"], p["status"], p["duration_ms"]) for p in trend] == [
        (4, "SUCCEED", 40000),
        (5, "CANCELED", 10000),
        (6, "SUCCEED", 80000),
    ]
    assert all(p["ended_at"].endswith("+00:00") for p in trend)
    full = wall(client, pipelines="etl")["tiles"][0]["trend"]
    # every finished build (#1..#6 = r0..r5; r6 runs), r0 too: the trend ignores the window
    assert [p["build_num"] for p in full] == [1, 2, 3, 4, 5, 6]


def test_last_failure_names_the_failed_task_and_its_owners(client: Any) -> None:
    failure = wall(client, pipelines="etl")["tiles"][0]["last_failure"]
    assert failure["build_num"] == 3
    assert failure["task"] == "load"
    assert failure["owners"] == ["carol", "dave"]  # the task's owners, not the DAG's (alice)
    assert failure["triggering_user"] == "alice"
    assert failure["ended_at"] is not None


def test_last_failure_without_a_failed_task_falls_back_to_the_dag_owners(client: Any) -> None:
    secret = wall(client, BOB, pipelines="secret")["tiles"][0]
    assert secret["last_failure"]["task"] is None
    assert secret["last_failure"]["owners"] == ["mallory"]
    assert wall(client, BOB, pipelines="deploy")["tiles"][0]["last_failure"] is None


def test_latest_build_and_its_document_with_sequence(client: Any) -> None:
    etl = wall(client, pipelines="etl")["tiles"][0]
    assert etl["latest"]["run_id"] == "r6"
    assert etl["latest"]["status"] == "RUNNING"
    document = etl["latest_document"]
    assert document["run_id"] == "r6"
    assert document["sequence"] == etl["latest"]["sequence"] > 0
    assert document["stages"]["extract"]["tasks"]["extract"]["status"] == "RUNNING"
    assert (etl["owners"], etl["tags"]) == (["alice"], ["team-x"])


def test_a_pipeline_known_only_to_airflow_is_an_empty_tile(client: Any) -> None:
    nightly = wall(client, pipelines="nightly")["tiles"][0]
    assert nightly["latest"] is None and nightly["latest_document"] is None
    assert nightly["stats"]["builds"] == 0 and nightly["stats"]["success_rate"] is None
    assert (nightly["trend"], nightly["last_failure"], nightly["owners"]) == ([], None, ["nina"])


def test_airflow_metadata_is_read_once_for_every_tile(client: Any, catalog: FakeCatalog) -> None:
    wall(client, BOB)
    assert len(catalog.describe_calls) == 1
    described, with_tasks = catalog.describe_calls[0]
    assert sorted(described) == ["deploy", "etl", "secret"]
    assert with_tasks == ["etl"]  # only a failure with a failed task needs task owners


def test_the_window_is_reported(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime

    monkeypatch.setenv("AIRFLOW__BKCI__DASHBOARD_WINDOW", "3600")
    window = wall(client)["window"]
    since, until = (datetime.fromisoformat(window[k]) for k in ("since", "until"))
    assert (until - since).total_seconds() == 3600


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("window=0", "window='0'"),
        ("window=367d", "366 days"),
        ("window=week", "window='week'"),
        ("trend=0", "greater than or equal to 1"),
        ("trend=101", "less than or equal to 100"),
        ("limit=201", "less than or equal to 200"),
        ("pipelines=" + ",".join(f"d{i}" for i in range(201)), "at most 200"),
        ("pipelines=" + "x" * 251, "longer than 250"),
        ("tag=" + "t" * 101, "at most 100"),
    ],
)
def test_bad_parameters_are_422_with_the_reason(client: Any, query: str, says: str) -> None:
    answer = client.get(f"{WALL}?{query}", headers=BOB)
    assert answer.status_code == 422
    assert says in answer.text
