"""A fork never happens while one of our threads is inside SQLite or an import."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

from airflow_bkci import forksafe
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


SLOW_MODULE = """
import pathlib, time
pathlib.Path({started!r}).touch()
time.sleep({seconds})
DONE = True
"""


def _fork_during_a_slow_import(tmp_path: Path, monkeypatch, name: str, seconds: float) -> int:
    """Fork while another thread runs a module body; the child imports it: its exit status."""
    started = tmp_path / f"{name}.started"
    (tmp_path / f"{name}.py").write_text(SLOW_MODULE.format(started=str(started), seconds=seconds))
    monkeypatch.syspath_prepend(str(tmp_path))
    importer = threading.Thread(target=importlib.import_module, args=(name,))
    importer.start()
    deadline = time.monotonic() + 10
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            signal.alarm(3)
            os._exit(0 if importlib.import_module(name).DONE else 3)
        finally:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    importer.join()
    return status


def test_fork_waits_for_another_threads_import_to_end(tmp_path: Path, monkeypatch):
    """The dispatcher's first notification imports apprise while LocalExecutor forks a worker."""
    status = _fork_during_a_slow_import(tmp_path, monkeypatch, "bkci_slow_import_a", 0.5)

    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
        "the child could not import a module another thread was importing at the fork"
    )


def test_without_the_wait_the_child_hangs_and_the_parent_says_why(
    tmp_path: Path, monkeypatch, caplog
):
    """The hazard is real: with no time to wait, the child's import never returns."""
    monkeypatch.setattr(forksafe, "IMPORT_WAIT_LIMIT", 0.0)
    with caplog.at_level(logging.WARNING, logger="airflow_bkci.forksafe"):
        status = _fork_during_a_slow_import(tmp_path, monkeypatch, "bkci_slow_import_b", 5)

    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM
    assert "another thread still imports bkci_slow_import_b" in caplog.text


def test_an_import_stuck_past_the_limit_delays_only_the_first_fork(tmp_path: Path, monkeypatch):
    (tmp_path / "bkci_stuck_import.py").write_text(
        "import threading\nRELEASE = threading.Event()\n"
        "import builtins\nbuiltins.bkci_stuck_release = RELEASE\nRELEASE.wait(30)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importer = threading.Thread(target=importlib.import_module, args=("bkci_stuck_import",))
    importer.start()
    try:
        deadline = time.monotonic() + 10
        while not forksafe._importing_elsewhere() and time.monotonic() < deadline:
            time.sleep(0.005)

        assert forksafe.wait_for_imports(limit=0.2) is False
        assert forksafe._importing_elsewhere() == [], "a later fork would wait for it again"
    finally:
        import builtins

        getattr(builtins, "bkci_stuck_release", threading.Event()).set()
        importer.join(10)
        if hasattr(builtins, "bkci_stuck_release"):
            del builtins.bkci_stuck_release


def test_the_forking_threads_own_import_never_makes_it_wait():
    """Forking from inside an import (multiprocessing at module level) must not wait on itself."""
    lock = importlib._bootstrap._get_module_lock("bkci_not_a_module")  # type: ignore[attr-defined]
    lock.acquire()
    try:
        assert forksafe._importing_elsewhere() == []
        assert forksafe.wait_for_imports(limit=2) is True
    finally:
        lock.release()
