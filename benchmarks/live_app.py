"""The BK-CI app as the live benchmark serves it: uvicorn workers, a fixed bearer token.

``uvicorn benchmarks.live_app:app --factory --workers N``; the store comes from
``BKCI_BENCH_STORE_URL``. Authentication is the one thing stubbed: Airflow's
token check needs a running Airflow, and it runs once per connection anyway.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from typing import Any

from airflow_bkci.api.live_access import Authenticated, NotAuthenticated
from airflow_bkci.api.routes.live import LiveSettings

TOKEN = "bench-token"


class BenchAccess:
    async def authenticate(self, token: str | None) -> Authenticated:
        if token != TOKEN:
            raise NotAuthenticated("bench: wrong token")
        return Authenticated("bench", time.time() + 3600)

    async def denied(self, who: Authenticated, dag_ids: Collection[str]) -> list[str]:
        return []

    async def existing(self, dag_ids: Collection[str]) -> set[str]:
        return set(dag_ids)


def app() -> Any:
    from airflow_bkci.api.app import create_app
    from airflow_bkci.store import Store

    url = os.environ["BKCI_BENCH_STORE_URL"]
    application = create_app(store_factory=lambda: Store(url), dispatcher_factory=lambda: None)
    application.state.bkci_live_access = BenchAccess()
    application.state.bkci_live_settings = LiveSettings(
        poll_interval=float(os.environ.get("BKCI_BENCH_POLL", "0.1")),
        heartbeat=15.0,
        client_buffer=int(os.environ.get("BKCI_BENCH_BUFFER", "1000")),
        source="/bench",
    )
    return application
