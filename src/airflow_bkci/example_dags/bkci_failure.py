"""A failing deploy whose downstream task ends upstream_failed, so the build fails."""

from __future__ import annotations

from airflow.sdk import DAG, task


@task
def build() -> None:
    pass


@task(retries=0)
def deploy() -> None:
    raise RuntimeError("deploy target unreachable: db-01")


@task
def verify() -> None:
    pass


with DAG("bkci_failure", schedule=None, catchup=False, tags=["bkci-example"]):
    build() >> deploy() >> verify()
