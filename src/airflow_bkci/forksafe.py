"""Keeps the scheduler's forks away from our threads' SQLite calls and imports.

LocalExecutor forks workers from the scheduler while our reconciler, sink and
dispatcher threads run. A fork taken while one of them is inside SQLite copies
SQLite's internal mutexes in their locked state into the child, whose next
SQLite call (our task runner's spool) then hangs forever, and so does its
task. Holding one lock around our SQLite work, and taking it before every
fork, closes that window. Only SQLite needs it; a PostgreSQL-only deployment
never waits.

The lock is reentrant: the store takes it around each of its transactions,
and a caller may already hold it around a larger piece of work.

Imports have the same hazard. A thread importing a module holds that module's
import lock while the module body runs; a fork in that window leaves the child
with the module half-initialised in ``sys.modules`` and its lock owned by a
thread that does not exist there, so the child's first import of it hangs.
Our threads import some modules when they first need them (requests with
the webhook channel, apprise and its plugins with the first notification, a
second or more): a LocalExecutor worker forked meanwhile runs every later
task whose DAG file imports the same module into the DAG-bag import timeout.
So a fork also waits, for at most ``IMPORT_WAIT_LIMIT``, until no other thread
is inside an import. Python keeps no public record of imports in progress; we
read importlib's own table of module locks, and if a future Python changes it
the wait just does nothing.
"""

from __future__ import annotations

import contextlib
import importlib._bootstrap
import logging
import os
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

log = logging.getLogger(__name__)

IMPORT_WAIT_LIMIT = 10.0  # seconds; importing apprise took 1-3 s on a busy 2-core machine
_POLL = 0.002

_guard = threading.RLock()
_unguarded = contextlib.nullcontext()
# Imports a fork already waited the limit for: later forks do not wait again.
_given_up: set[tuple[int, int]] = set()


def _importing_elsewhere() -> list[Any]:
    """The module locks another thread holds now, except any it would need us to finish."""
    bootstrap: Any = importlib._bootstrap
    table = getattr(bootstrap, "_module_locks", None)
    blocking_on = getattr(bootstrap, "_blocking_on", None) or {}
    if not isinstance(table, dict):
        return []
    me = threading.get_ident()
    mine: set[int] = set()
    held: list[Any] = []
    for ref in list(table.values()):
        lock = ref() if callable(ref) else None
        owner = getattr(lock, "owner", None)
        if owner is None:
            continue
        if owner == me:
            mine.add(id(lock))
        elif (id(lock), owner) not in _given_up:
            held.append(lock)
    # A thread waiting for a module this thread is importing (we fork from
    # inside an import) can never finish: do not wait for it.
    return [lock for lock in held if not _waits_for(blocking_on.get(lock.owner), mine)]


def _waits_for(blocked_on: Any, mine: set[int]) -> bool:
    # Python 3.11 keeps one lock per waiting thread, 3.12 and later a list of them.
    locks = blocked_on if isinstance(blocked_on, list) else [blocked_on]
    return any(id(lock) in mine for lock in locks if lock is not None)


def wait_for_imports(limit: float | None = None) -> bool:
    """Wait until no other thread is inside an import; False if ``limit`` ran out first."""
    deadline = time.monotonic() + (IMPORT_WAIT_LIMIT if limit is None else limit)
    while True:
        try:
            held = _importing_elsewhere()
        except Exception:  # an importlib we do not know: never stop a fork over it
            return True
        if not held:
            return True
        if time.monotonic() >= deadline:
            _given_up.update((id(lock), lock.owner) for lock in held)
            log.warning(
                "forking while another thread still imports %s after %.0f s; the child "
                "may hang when it imports the same module",
                ", ".join(sorted(str(getattr(lock, "name", "?")) for lock in held)),
                IMPORT_WAIT_LIMIT if limit is None else limit,
            )
            return False
        time.sleep(_POLL)


def _before_fork() -> None:
    _guard.acquire()
    wait_for_imports()


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
