"""Builds the dashboard tests hold open: ``hold`` runs until its marker file appears.

A run's marker is ``$AIRFLOW_HOME/markers/<run_id>.go``; the test writes it to
let the build go on (``ship`` then runs), or cancels the build. The hold gives
up after 15 minutes so a failed test never keeps an executor slot for long.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from airflow.sdk import TaskGroup, dag, get_current_context, task

HOLD_SECONDS = 900


@task(retries=0)
def hold() -> None:
    run_id = get_current_context()["ti"].run_id
    marker = Path(os.environ["AIRFLOW_HOME"]) / "markers" / f"{run_id}.go"
    deadline = time.monotonic() + HOLD_SECONDS
    while not marker.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"nobody wrote {marker} within {HOLD_SECONDS} s")
        time.sleep(0.1)


@task
def ship() -> None:
    pass


@dag(
    schedule=None,
    catchup=False,
    max_active_runs=8,
    tags=["dashboard-test"],
    default_args={"owner": "dash-owner"},
)
def bkci_dash_hold() -> None:
    with TaskGroup("build"):
        held = hold()
    with TaskGroup("deliver"):
        shipped = ship()
    held >> shipped


bkci_dash_hold()
