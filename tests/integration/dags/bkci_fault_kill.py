"""A task whose process dies by SIGKILL right after its running hook (fault tests only)."""

from __future__ import annotations

import os
import signal

from airflow.sdk import dag, task


@task(retries=0)
def killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@dag(dag_id="bkci_fault_kill", schedule=None, catchup=False, tags=["bkci-tests"])
def bkci_fault_kill() -> None:
    killed()


bkci_fault_kill()
