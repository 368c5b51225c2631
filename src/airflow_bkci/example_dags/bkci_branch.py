"""A branch that picks one path; the other path is skipped and the join still runs."""

from __future__ import annotations

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, task


@task.branch
def choose() -> str:
    return "fast_path"


@task
def fast_path() -> None:
    pass


@task
def slow_path() -> None:
    pass


with DAG("bkci_branch", schedule=None, catchup=False, tags=["bkci-example"]):
    join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")
    choose() >> [fast_path(), slow_path()] >> join
