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
    # Always defers, and waits for real, then resumes on a worker (execute_complete).
    # The moment is rendered just before execute, 10 s ahead: a trigger that fires at
    # once (a moment already past) races Airflow 3.3's handling of the deferring
    # process's exit, and the scheduler may fail the resumed try ("state mismatch",
    # apache/airflow#72716, open), whatever the task and our plugin do. On a busy
    # host the scheduler can still read that exit after the resumed try started
    # (seen 13 s late on 2 loaded cores), and it then fails the running try through
    # handle_failure, which honours retries: one retry ends the run as intended.
    resume_on_worker = DateTimeSensorAsync(
        task_id="wait_resume_on_worker",
        retries=1,
        retry_delay=timedelta(seconds=1),
        target_time=(
            "{{ (macros.datetime.now(ti.start_date.tzinfo)"
            " + macros.timedelta(seconds=10)).isoformat() }}"
        ),
    )
    # end_from_trigger: the triggerer itself marks this task success, no worker runs it again.
    end_in_triggerer = WaitSensor(
        task_id="wait_end_in_triggerer", time_to_wait=timedelta(seconds=3), deferrable=True
    )
    [resume_on_worker, end_in_triggerer] >> done()
