"""Headless Chromium for the dashboard tests: Debian's browser, driven by Playwright.

Playwright's own browser download cannot run here, so the tests launch the
system Chromium (``BKCI_CHROMIUM``, default ``/usr/bin/chromium``). A missing
browser skips on a laptop with the command that installs it, and fails on CI.
Screenshots go to ``BKCI_TEST_ARTIFACTS`` (default ``test-artifacts/``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.services import unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser

REPO = Path(__file__).parents[1]

# Without the background-networking flags Chromium keeps dialing Google's
# hosts, which this closed network refuses; the sandbox needs user namespaces
# that a root CI container does not have.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """The Chromium executable to drive, or skip (fail when CI=true) saying how to get one."""
    wanted = os.environ.get("BKCI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(wanted, os.X_OK):
        unavailable(
            f"no Chromium at {wanted}: install Debian's (`apt-get install chromium`) or point "
            "BKCI_CHROMIUM at a Chromium or Chrome executable"
        )
    return wanted


def artifacts_dir() -> Path:
    """Where tests leave screenshots for people to look at (kept after the run)."""
    folder = Path(os.environ.get("BKCI_TEST_ARTIFACTS", REPO / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module; each test opens its own context.

    Not per session: Playwright's sync API keeps an asyncio loop running in the
    main thread until it stops, and every later ``asyncio.run`` (other modules'
    tests) would fail while it runs.
    """
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        unavailable("Playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
