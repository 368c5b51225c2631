"""Keeps the scheduler's forks away from our threads' SQLite calls.

LocalExecutor forks workers from the scheduler while our reconciler and sink
threads run. A fork taken while one of them is inside SQLite copies SQLite's
internal mutexes in their locked state into the child, whose next
``sqlite3.connect`` (our task runner's spool) then hangs forever. Holding one
lock around our SQLite work, and taking it before every fork, closes that
window. Only SQLite needs it; a PostgreSQL-only deployment never waits.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

_guard = threading.Lock()


def _before_fork() -> None:
    _guard.acquire()


def _after_fork() -> None:
    _guard.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )


@contextlib.contextmanager
def sqlite_section(url: object) -> Iterator[None]:
    """Hold the fork guard while working on ``url`` if it is an SQLite database."""
    if not str(url).startswith("sqlite"):
        yield
        return
    with _guard:
        yield
