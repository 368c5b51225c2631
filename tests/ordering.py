"""Test order that keeps at most one Airflow stack running, and none under the unit tests.

A started stack (scheduler, dag-processor, triggerer, api-server) keeps a core
of a 2-core runner busy even when idle. Session-scoped fixtures live until the
session ends, so in plain collection order the SQLite and the PostgreSQL stack
ran side by side through most of the integration tests and through every unit
test after them. Here the unit tests go first, then the integration tests that
need no stack, then those on the SQLite stack, then those on the PostgreSQL
stack; each stack is stopped right after the last test that needs it (see
``tests.integration.conftest``). Order within a group is collection order.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

BACKENDS = ("sqlite", "pg")

# Fixtures whose parameter names the stack a test runs on ("sqlite" or "pg").
_BACKEND_PARAMS = ("examples", "stack")

LAST_USER = pytest.StashKey[dict[str, str]]()
"""For each backend, the node id of the last test that needs its stack."""


def _is_integration(item: pytest.Item) -> bool:
    return "integration" in item.path.parts


def stacks_needed(item: pytest.Item) -> set[str]:
    """The backends whose stack ``item`` uses, from its fixtures and parameters."""
    needed = {b for b in BACKENDS if f"{b}_stack" in getattr(item, "fixturenames", ())}
    callspec = getattr(item, "callspec", None)
    if callspec is not None and _is_integration(item):
        for name in _BACKEND_PARAMS:
            if callspec.params.get(name) in BACKENDS:
                needed.add(callspec.params[name])
    return needed


def _rank(item: pytest.Item) -> int:
    if not _is_integration(item):
        return 0
    needed = stacks_needed(item)
    if not needed:
        return 1
    if needed == {"sqlite"}:
        return 2
    if "sqlite" in needed:  # both: between the two groups, while both are up
        return 3
    return 4


def order(items: list[pytest.Item]) -> None:
    """Sort ``items`` in place by group, keeping collection order within a group."""
    ranked = sorted(enumerate(items), key=lambda pair: (_rank(pair[1]), pair[0]))
    items[:] = [item for _, item in ranked]


def last_users(items: Iterable[pytest.Item]) -> dict[str, str]:
    last: dict[str, str] = {}
    for item in items:
        for backend in stacks_needed(item):
            last[backend] = item.nodeid
    return last
