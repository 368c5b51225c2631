"""Links into Airflow 3's UI: a DAG's runs, one run, a task try's log, a task group.

The paths are the UI router's (``dags/:dagId/runs/:runId/tasks/:taskId[/mapped/:mapIndex]``,
as ``TaskInstance.log_url`` builds them); every id is escaped as one path segment. With no
base URL the links are paths.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["group_url", "run_url", "runs_url", "task_url"]


def _q(segment: str) -> str:
    return quote(segment, safe="")


def runs_url(base_url: str | None, dag_id: str) -> str:
    """The DAG's runs."""
    return f"{(base_url or '').rstrip('/')}/dags/{_q(dag_id)}/runs"


def run_url(base_url: str | None, dag_id: str, run_id: str) -> str:
    """One build (DAG run)."""
    return f"{runs_url(base_url, dag_id)}/{_q(run_id)}"


def task_url(
    base_url: str | None,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int = -1,
    try_number: int | None = None,
) -> str:
    """A task of a run (its log is the page's default tab); a mapped instance; one try."""
    url = f"{run_url(base_url, dag_id, run_id)}/tasks/{_q(task_id)}"
    if map_index >= 0:
        url += f"/mapped/{map_index}"
    if try_number is not None and try_number > 0:
        url += f"?try_number={try_number}"
    return url


def group_url(base_url: str | None, dag_id: str, run_id: str, group_id: str) -> str:
    """A task group of a run."""
    return f"{run_url(base_url, dag_id, run_id)}/tasks/group/{_q(group_id)}"
