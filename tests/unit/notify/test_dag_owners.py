"""Task owners and owner_links, read from a DAG serialized by Airflow itself."""

from __future__ import annotations

from typing import Any

from airflow_bkci.notify import EmailAddress, OwnerSources, Recipients, resolve_recipients
from airflow_bkci.notify.dag_owners import owner_sources


def serialized() -> dict[str, Any]:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, TaskGroup, task
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG(
        "etl",
        schedule=None,
        owner_links={"lena": "mailto:lena@example.com", "data": "https://wiki/data"},
    ) as dag:
        EmptyOperator(task_id="load", owner="lena")
        EmptyOperator(task_id="nobody")
        with TaskGroup("checks"):
            EmptyOperator(task_id="rows", owner="rob@example.com, data")

        @task(owner="mia@example.com")
        def shard(n: int) -> None:
            pass

        shard.expand(n=[1, 2])
    data: dict[str, Any] = DagSerialization.to_dict(dag)
    return data


def test_owners_of_plain_grouped_and_mapped_tasks_and_the_dag_links() -> None:
    sources = owner_sources(serialized())
    assert sources.task_owners == {
        "load": "lena",
        "nobody": "airflow",  # the serializer leaves Airflow's default owner out
        "checks.rows": "rob@example.com, data",
        "shard": "mia@example.com",
    }
    assert sources.owner_links == {
        "lena": "mailto:lena@example.com",
        "data": "https://wiki/data",
    }


def test_those_owners_resolve_to_addresses() -> None:
    sources = owner_sources(serialized())
    found = resolve_recipients("etl", ["load", "nobody", "checks.rows", "shard"], None, sources)
    assert found == Recipients(
        (
            EmailAddress("lena@example.com"),
            EmailAddress("mia@example.com"),
            EmailAddress("rob@example.com"),
        ),
        unresolved=("data",),  # a wiki page is no address
    )


def test_a_serialized_dag_without_tasks_or_links_has_no_owners() -> None:
    assert owner_sources({"dag": {}}, "ops") == OwnerSources(default_owner="ops")
