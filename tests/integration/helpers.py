"""Small waits and reads the integration tests share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, text

from airflow_bkci.devstack import AirflowStack


def eventually(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """The first truthy ``check()`` within ``timeout`` s; else fail naming ``what``, last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {value!r})")
        time.sleep(every)


def airflow_rows(stack: AirflowStack, sql: str, **params: Any) -> list[Any]:
    """Rows of a query on the stack's own Airflow database."""
    engine = create_engine(stack.db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def user_token(stack: AirflowStack, username: str, password: str) -> str:
    """A Bearer JWT of this user from the stack's ``POST /auth/token``."""
    import requests

    resp = requests.post(
        f"{stack.api_url}/auth/token",
        json={"username": username, "password": password},
        timeout=60,
    )
    resp.raise_for_status()
    return str(resp.json()["access_token"])
