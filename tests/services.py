"""Checks for the services tests need: skip locally, fail on CI, say how to fix."""

from __future__ import annotations

import os

import pytest

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

_checked: dict[str, str | None] = {}


def require_postgres() -> str:
    """The admin URL of a reachable PostgreSQL, or skip (fail when CI=true)."""
    url = os.environ.get("BKCI_TEST_PG_URL", DEFAULT_PG_URL)
    if url not in _checked:
        _checked[url] = _probe_postgres(url)
    problem = _checked[url]
    if problem is None:
        return url
    message = (
        f"PostgreSQL at {url} is not reachable ({problem}). Start one (e.g. "
        "`docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`) "
        "or point BKCI_TEST_PG_URL at one whose user may create databases."
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _probe_postgres(url: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed; pip install 'psycopg[binary]'"
    libpq_url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        with psycopg.connect(libpq_url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None
