"""Shared test configuration: Hypothesis profiles for CI and local runs, and the test order."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests import ordering
from tests.browser import browser  # noqa: F401 - a fixture for every test
from tests.databases import pg_server  # noqa: F401 - a fixture for every test
from tests.webhook import receivers  # noqa: F401 - a fixture for every test

# CI runs are reproducible (derandomize) and never flaky on a slow runner
# (no deadline); a failure prints the blob that replays it with @reproduce_failure.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=200,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=50, deadline=None, print_blob=True)
settings.load_profile(
    os.environ.get(
        "HYPOTHESIS_PROFILE",
        "ci" if os.environ.get("CI", "").lower() in ("true", "1") else "dev",
    )
)


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: the last users are of what runs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ordering.order(items)
    config.stash[ordering.LAST_USER] = ordering.last_users(items)
