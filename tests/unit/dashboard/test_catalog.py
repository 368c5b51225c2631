"""AirflowDagCatalog on Airflow's own tables (dag, dag_tag, serialized_dag), SQLite and PG."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.models.dag import DagModel, DagTag
from airflow.models.dag_version import DagVersion
from airflow.models.dagbundle import DagBundleModel
from airflow.models.serialized_dag import SerializedDagModel
from sqlalchemy.orm import Session

from airflow_bkci.dashboard.catalog import AirflowDagCatalog, split_owners

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
TABLES = [
    DagBundleModel.__table__,
    DagModel.__table__,
    DagTag.__table__,
    DagVersion.__table__,
    SerializedDagModel.__table__,
]


def serialized(owners: dict[str, str]) -> dict[str, Any]:
    tasks = [{"__var": {"task_id": t, "owner": o}} for t, o in owners.items()]
    return {"dag": {"tasks": tasks}}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def airflow_db(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'airflow.db'}"
    else:
        url = request.getfixturevalue("pg_server")().replace(
            "postgresql://", "postgresql+psycopg://", 1
        )
    engine = sa.create_engine(url)
    DagModel.metadata.create_all(engine, tables=TABLES)  # type: ignore[arg-type]
    dag = {
        "bundle_name": "dags-folder",
        "max_active_tasks": 16,
        "max_consecutive_failed_dag_runs": 0,
        "has_task_concurrency_limits": False,
    }
    with engine.begin() as conn:
        conn.execute(sa.insert(DagBundleModel.__table__).values(name="dags-folder"))
        conn.execute(
            sa.insert(DagModel.__table__),
            [
                {"dag_id": "etl", "owners": "alice, bob", "is_stale": False, **dag},
                {"dag_id": "old", "owners": "airflow", "is_stale": True, **dag},
                {"dag_id": "deploy", "owners": None, "is_stale": False, **dag},
            ],
        )
        conn.execute(
            sa.insert(DagTag.__table__),
            [
                {"dag_id": "etl", "name": "team-x"},
                {"dag_id": "etl", "name": "nightly"},
                {"dag_id": "old", "name": "team-x"},
                {"dag_id": "deploy", "name": "team-y"},
            ],
        )
        for number, (when, owners, digest) in enumerate(
            [
                (T0, {"load": "carol"}, "v1"),
                (T0 + timedelta(hours=1), {"load": "dave, erin", "extract": "bob"}, "v2"),
            ],
            start=1,
        ):
            version = uuid.uuid4()
            conn.execute(
                sa.insert(DagVersion.__table__).values(
                    id=version, version_number=number, dag_id="etl", created_at=when
                )
            )
            conn.execute(
                sa.insert(SerializedDagModel.__table__).values(
                    id=uuid.uuid4(),
                    dag_id="etl",
                    data=serialized(owners),
                    created_at=when,
                    last_updated=when,
                    dag_hash=digest,
                    dag_version_id=version,
                )
            )
    yield engine
    engine.dispose()


def catalog_on(engine: sa.Engine, sessions: list[int] | None = None) -> AirflowDagCatalog:
    def session() -> Session:
        if sessions is not None:
            sessions.append(1)
        return Session(engine)

    return AirflowDagCatalog(session)


def test_owners_and_tags_of_many_dags_in_one_session(airflow_db: sa.Engine) -> None:
    sessions: list[int] = []
    facts = catalog_on(airflow_db, sessions).describe(["etl", "deploy", "nope"])
    assert sessions == [1]
    assert set(facts) == {"etl", "deploy"}  # Airflow does not know "nope"
    assert (facts["etl"].owners, facts["etl"].tags) == (("alice", "bob"), ("nightly", "team-x"))
    assert (facts["deploy"].owners, facts["deploy"].tags) == ((), ("team-y",))
    assert facts["etl"].task_owners == {}  # not asked for


def test_task_owners_come_from_the_newest_serialized_version(airflow_db: sa.Engine) -> None:
    catalog = catalog_on(airflow_db)
    facts = catalog.describe(["etl", "deploy"], with_tasks=["etl", "deploy"])
    assert facts["etl"].task_owners == {"load": "dave, erin", "extract": "bob"}
    assert facts["deploy"].task_owners == {}  # no serialized DAG
    again = catalog.describe(["etl"], with_tasks=["etl"])  # from the cache: same answer
    assert again["etl"].task_owners == facts["etl"].task_owners


def test_tagged_leaves_out_stale_dags(airflow_db: sa.Engine) -> None:
    catalog = catalog_on(airflow_db)
    assert catalog.tagged("team-x") == ["etl"]
    assert catalog.tagged("nothing") == []


def test_split_owners_keeps_order_once_each() -> None:
    assert split_owners(" alice, bob ,alice,, ") == ("alice", "bob")
    assert split_owners(None) == ()
