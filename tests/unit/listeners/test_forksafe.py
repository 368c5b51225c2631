"""A fork never happens while one of our threads is inside SQLite."""

from __future__ import annotations

import os
import threading

from airflow_bkci.listeners.forksafe import sqlite_section


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


def test_postgres_work_never_holds_the_guard():
    with sqlite_section("postgresql+psycopg://db/x"):
        pid = os.fork()  # would deadlock if the guard were held
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
