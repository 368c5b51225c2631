"""What every query route shares: the store, blocking calls, read permission, cursors, errors.

Every query route authenticates first (:data:`airflow_bkci.api.security.Caller`,
401), then validates its input (400/422, no database), then reads. Reads are
blocking and run in a worker thread; an unreachable database is a 503 with
Retry-After, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol, cast

from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from fastapi import HTTPException, Request, status

from airflow_bkci.api.errors import (
    AIRFLOW_DB,
    STATUS_STORE,
    blocking,
    opened,
    problem,
)
from airflow_bkci.api.security import readable_dags
from airflow_bkci.store.queries import BuildFilter, BuildKey

__all__ = [
    "AIRFLOW_DB",
    "STATUS_STORE",
    "QueryStore",
    "blocking",
    "check_readable",
    "conf_filters",
    "decode_cursor",
    "encode_cursor",
    "problem",
    "query_store",
    "readable_among",
]

_CURSOR_VERSION = 1
_MAX_CURSOR = 2000

CONF_PREFIX = "conf."
"""Query parameters ``conf.<key>=<value>`` filter builds by their run's conf."""
MAX_CONF_FILTERS = 10
MAX_CONF_VALUE = 1000
_CONF_KEY = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class QueryStore(Protocol):
    """What the query routes need from :class:`airflow_bkci.store.Store`."""

    def pipeline_ids(self) -> list[str]: ...

    def pipelines(self, dag_ids: Sequence[str]) -> list[dict[str, Any]]: ...

    def build_page(
        self, dag_id: str, flt: BuildFilter, after: BuildKey | None, limit: int
    ) -> list[dict[str, Any]]: ...

    def build_key(self, build_id: str) -> tuple[str, BuildKey] | None: ...

    def snapshot(self, build_id: str) -> dict[str, Any] | None: ...

    def changes_since(self, build_id: str, after: int, limit: int) -> dict[str, Any] | None: ...

    def node_known(self, build_id: str, node_id: str) -> bool: ...

    def history(self, build_id: str, node_id: str = "") -> list[Any]: ...

    def pipeline_metrics(
        self, dag_id: str, since: datetime, until: datetime, top: int = 10
    ) -> dict[str, Any]: ...


async def query_store(request: Request) -> QueryStore:
    """The app's status store, opened (and migrated) on first use; 503 while it cannot be."""
    return cast(QueryStore, await opened(request.app.state.bkci_store, STATUS_STORE))


# --------------------------------------------------------------- permission
async def readable_among(
    auth_manager: BaseAuthManager, user: BaseUser, dag_ids: Sequence[str]
) -> set[str]:
    """The DAGs among ``dag_ids`` the user may read (the auth manager may query Airflow)."""
    if not dag_ids:
        return set()
    return await blocking(AIRFLOW_DB, readable_dags, auth_manager, user, dag_ids)


async def check_readable(
    auth_manager: BaseAuthManager, user: BaseUser, dag_id: str, what: str
) -> None:
    """403 unless the user may read the DAG; ``what`` names what was asked for."""
    if dag_id in await readable_among(auth_manager, user, [dag_id]):
        return
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        detail={
            "message": f"you may not read DAG {dag_id!r}, so not {what} either; ask for "
            "read permission on that DAG",
            "dags": [dag_id],
        },
    )


# ------------------------------------------------------------- conf filters
def conf_filters(params: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The ``conf.<key>=<value>`` parameters as (key, value) pairs sorted by key.

    The keys are free, so FastAPI cannot declare them; every bad one is
    reported at once, as a 422 like FastAPI's own for a declared parameter.
    """
    found: dict[str, str] = {}
    problems: list[str] = []
    for name, value in params:
        if name == CONF_PREFIX.rstrip("."):
            problems.append(
                f"conf={value[:40]!r} names no key: write conf.<key>=<value>, e.g. conf.branch=main"
            )
            continue
        if not name.startswith(CONF_PREFIX):
            continue
        key = name[len(CONF_PREFIX) :]
        if not _CONF_KEY.fullmatch(key):
            problems.append(
                f"{name[:120]!r} has no usable conf key: a key is 1-100 of A-Z a-z 0-9 _ . - "
                "(a top-level key of the run's conf)"
            )
        elif key in found:
            problems.append(f"{name} is given twice: a conf key has one value; give each key once")
        elif len(value) > MAX_CONF_VALUE:
            problems.append(f"{name} is longer than {MAX_CONF_VALUE} characters")
        else:
            found[key] = value
    if len(found) > MAX_CONF_FILTERS:
        problems.append(
            f"{len(found)} conf filters; at most {MAX_CONF_FILTERS}: filter on fewer keys"
        )
    if problems:
        raise problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"bad conf filter: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems,
        )
    return tuple(sorted(found.items()))


# ------------------------------------------------------------------ cursors
def fingerprint(**filters: Any) -> str:
    """A short digest of a list's filters: a cursor only continues the list it came from."""
    text = json.dumps(filters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_cursor(scope: str, position: Any) -> str:
    """An opaque cursor: where the last page ended, and the list (``scope``) it belongs to."""
    raw = json.dumps({"v": _CURSOR_VERSION, "s": scope, "p": position}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, scope: str) -> Any:
    """The position a cursor holds; 400 if it is not one of ours or continues another list."""
    try:
        if len(cursor) > _MAX_CURSOR:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("v") != _CURSOR_VERSION or "p" not in data:
            raise ValueError("not a cursor of this API")
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise problem(
            status.HTTP_400_BAD_REQUEST,
            f"cursor {cursor[:40]!r} is not a cursor this API gave out ({exc}); pass the "
            "next_cursor of the previous page unchanged, or leave cursor out to start "
            "from the first page",
        ) from None
    if data.get("s") != scope:
        raise problem(
            status.HTTP_400_BAD_REQUEST,
            "this cursor continues another list (another pipeline or other filters); repeat "
            "the query and filters of the page that gave it, or leave cursor out to start "
            "from the first page",
        )
    return data["p"]
