"""Airflow's SimpleAuthManager, except that one user may not change one DAG nor see another.

The integration stacks configure it as ``[core] auth_manager``; the Airflow
processes import it from the repository (``PYTHONPATH``).
"""

from __future__ import annotations

import warnings
from typing import Any

with warnings.catch_warnings():
    # Importing Airflow's API app pulls in Starlette's TestClient, which warns without httpx2.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

LIMITED_USER = "cancel_limited"
LIMITED_PASSWORD = "cancel-limited-password"
LIMITED_DAG = "bkci_cancel_teardown"
"""``LIMITED_USER`` has the User role (may edit DAGs) but may only read this one."""
READ_ONLY_DAGS = frozenset({LIMITED_DAG, "bkci_dash_hold"})
"""Every DAG ``LIMITED_USER`` may read but not change (the dashboard tests use the second)."""
HIDDEN_DAG = "bkci_branch"
"""``LIMITED_USER`` may not even read this one (query and live permission tests)."""


class RestrictedAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method: Any, user: Any, **kwargs: Any) -> bool:
        details = kwargs.get("details")
        if user.get_name() == LIMITED_USER and details is not None and details.id == HIDDEN_DAG:
            return False
        if (
            user.get_name() == LIMITED_USER
            and method != "GET"
            and details is not None
            and details.id in READ_ONLY_DAGS
        ):
            return False
        return bool(super().is_authorized_dag(method=method, user=user, **kwargs))
