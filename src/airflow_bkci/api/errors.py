"""Which failures of a database behind a route are worth a 503 and a retry."""

from __future__ import annotations

from airflow_bkci.exceptions import StoreUnavailable

__all__ = ["RETRY_AFTER_SECONDS", "is_connection_error"]

RETRY_AFTER_SECONDS = 5


def is_connection_error(exc: BaseException) -> bool:
    """The database is down, restarting or unreachable: the same request may work later."""
    if isinstance(exc, StoreUnavailable | ConnectionError | TimeoutError):
        return True
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover - sqlalchemy comes with Airflow
        return False
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError)
