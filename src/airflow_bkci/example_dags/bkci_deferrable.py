"""Deferrable waits run by the triggerer: one resumes on a worker, one ends in the triggerer."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.providers.standard.sensors.time_delta import WaitSensor
from airflow.sdk import DAG, task


@task
def done() -> None:
    pass


with DAG("bkci_deferrable", schedule=None, catchup=False, tags=["bkci-example"]):
    # Always defers, and waits for real: the moment is rendered from this try's own start.
    # Then it resumes on a worker (execute_complete).
    resume_on_worker = DateTimeSensorAsync(
        task_id="wait_resume_on_worker",
        target_time="{{ (ti.start_date + macros.timedelta(seconds=3)).isoformat() }}",
    )
    # end_from_trigger: the triggerer itself marks this task success, no worker runs it again.
    end_in_triggerer = WaitSensor(
        task_id="wait_end_in_triggerer", time_to_wait=timedelta(seconds=3), deferrable=True
    )
    [resume_on_worker, end_in_triggerer] >> done()
