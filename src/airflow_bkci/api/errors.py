"""Answers every route of the app shares: problems, and a 503 for a database that is down.

Blocking calls run in a worker thread through :func:`blocking`; a database
that is down, restarting or unreachable becomes a 503 with ``Retry-After``,
never a 500. The body of every error is ``{"detail": {"message", "problems"}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import HTTPException, status
from starlette.concurrency import run_in_threadpool

from airflow_bkci.exceptions import StoreUnavailable

__all__ = [
    "AIRFLOW_DB",
    "RETRY_AFTER_SECONDS",
    "STATUS_STORE",
    "blocking",
    "first_line",
    "is_connection_error",
    "opened",
    "problem",
    "unavailable",
]

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
AIRFLOW_DB = "Airflow's database"
STATUS_STORE = "the BK-CI status store"

R = TypeVar("R")


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


def problem(
    code: int, message: str, problems: Sequence[str] = (), headers: dict[str, str] | None = None
) -> HTTPException:
    """An HTTP error whose body is ``{"detail": {"message", "problems"}}``."""
    return HTTPException(
        code, detail={"message": message, "problems": list(problems) or [message]}, headers=headers
    )


def first_line(exc: BaseException) -> str:
    """The driver's own words, without the SQL and parameters SQLAlchemy appends."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else 'no message'}"


def unavailable(where: str, exc: BaseException, message: str | None = None) -> HTTPException:
    """503 with Retry-After: ``where`` (or ``message``) cannot answer now, ``exc`` says why."""
    return problem(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"{message or f'{where} is unavailable'}; retry after {RETRY_AFTER_SECONDS} s",
        [first_line(exc)],
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def blocking(
    where: str,
    func: Callable[..., R],
    *args: Any,
    retryable: Callable[[BaseException], bool] = is_connection_error,
    answer: Callable[[str, BaseException], HTTPException] = unavailable,
) -> R:
    """Run ``func`` in a worker thread; a ``retryable`` failure becomes ``answer`` (a 503)."""
    try:
        return await run_in_threadpool(func, *args)
    except Exception as exc:
        if not retryable(exc):
            raise
        log.warning("bkci API: %s failed", where, exc_info=True)
        raise answer(where, exc) from None


async def opened(provider: Any, where: str) -> Any:
    """The app's lazily built store or service; whatever stops it opening is a 503."""
    if provider.ready:  # the common case: no thread hop
        return provider.get()
    try:
        return await run_in_threadpool(provider.get)
    except Exception as exc:
        log.warning("bkci API: cannot open %s", where, exc_info=True)
        raise unavailable(where, exc) from None
