"""A fork never happens while one of our threads is inside SQLite."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from airflow_bkci.forksafe import sqlite_section
from airflow_bkci.spool.spool import Spool
from airflow_bkci.store import Store
from tests.recordings import replay

FORKS = 150


def test_fork_waits_for_an_sqlite_section_to_end():
    inside = threading.Event()
    release = threading.Event()
    finished: list[bool] = []

    def work() -> None:
        with sqlite_section("sqlite:////tmp/x.db"):
            inside.set()
            release.wait(5)
            finished.append(True)

    thread = threading.Thread(target=work)
    thread.start()
    inside.wait(5)
    threading.Timer(0.2, release.set).start()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    assert finished == [True], "fork returned while the thread was still inside SQLite"
    os.waitpid(pid, 0)
    thread.join()


def test_the_section_is_reentrant():
    with sqlite_section("sqlite:///a.db"), sqlite_section("sqlite:///b.db"):
        pid = os.fork()  # the forking thread holds the guard already: no deadlock
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)


def test_postgres_work_never_holds_the_guard():
    with sqlite_section("postgresql+psycopg://db/x"):
        assert sqlite_section("postgresql+psycopg://db/x") is not sqlite_section("sqlite://")


def test_task_runners_forked_beside_a_busy_store_never_hang(tmp_path: Path):
    """What LocalExecutor does: fork while the sink and dispatcher threads use the store.

    Unguarded, about one fork in a hundred copies a locked SQLite mutex and the
    child's first spool write (a task runner's first hook) hangs for ever.
    """
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            replay(store, after_each=lambda: stop.is_set() or store.builds(limit=5))

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    hung = 0
    try:
        for _ in range(FORKS):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                try:
                    signal.alarm(5)
                    Spool(tmp_path / "spool.db").append({"hook": "running"})
                finally:
                    os._exit(0)
            _, status = os.waitpid(pid, 0)
            hung += os.WIFSIGNALED(status)
    finally:
        stop.set()
        thread.join(30)
        store.dispose()
    assert hung == 0, f"{hung} of {FORKS} children hung on their first SQLite call"
