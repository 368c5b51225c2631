"""A build whose clean-up must run even when it is canceled (cancel tests)."""

from __future__ import annotations

import time

from airflow.sdk import dag, task


@task
def create_env() -> str:
    return "env-1"


@task(retries=0)
def deploy(env: str) -> None:
    time.sleep(900)


@task
def delete_env(env: str) -> None:
    time.sleep(3)


@dag(dag_id="bkci_cancel_teardown", schedule=None, catchup=False, tags=["bkci-tests"])
def bkci_cancel_teardown() -> None:
    env = create_env()
    deploy(env) >> delete_env(env).as_teardown(setups=env)


bkci_cancel_teardown()
