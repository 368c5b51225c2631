"""A task that fails on its first try and succeeds on the retry."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, get_current_context, task


@task(retries=1, retry_delay=timedelta(seconds=1))
def flaky() -> str:
    try_number = get_current_context()["ti"].try_number
    if try_number == 1:
        raise RuntimeError("artifact cache not ready yet (try 1), retrying")
    return f"ok on try {try_number}"


@task
def after() -> None:
    pass


with DAG("bkci_retry", schedule=None, catchup=False, tags=["bkci-example"]):
    flaky() >> after()
