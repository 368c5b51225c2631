"""Keeps the scheduler's forks away from our threads' SQLite calls.

LocalExecutor forks workers from the scheduler while our reconciler, sink and
dispatcher threads run. A fork taken while one of them is inside SQLite copies
SQLite's internal mutexes in their locked state into the child, whose next
SQLite call (our task runner's spool) then hangs forever, and so does its
task. Holding one lock around our SQLite work, and taking it before every
fork, closes that window. Only SQLite needs it; a PostgreSQL-only deployment
never waits.

The lock is reentrant: the store takes it around each of its transactions,
and a caller may already hold it around a larger piece of work.
"""

from __future__ import annotations

import contextlib
import os
import threading
from contextlib import AbstractContextManager

_guard = threading.RLock()
_unguarded = contextlib.nullcontext()


def _before_fork() -> None:
    _guard.acquire()


def _after_fork() -> None:
    _guard.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )


def sqlite_section(url: object) -> AbstractContextManager[object]:
    """What to hold while working on ``url``: the fork guard if it is an SQLite database.

    Cheap to call once and reuse: the answer depends on the URL only.
    """
    return _guard if str(url).startswith("sqlite") else _unguarded
