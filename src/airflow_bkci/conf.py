"""Accessors for the ``[bkci]`` options: the only place that reads them.

Read lazily and not cached across tests' config changes: each accessor is
cheap and callers that are hot keep the value themselves.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_bkci.exceptions import ConfigError

SECTION = "bkci"


def _conf() -> Any:
    from airflow.configuration import conf

    return conf


def _get(option: str) -> str:
    return str(_conf().get(SECTION, option, fallback="") or "")


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")


def enabled() -> bool:
    return bool(_conf().getboolean(SECTION, "enabled", fallback=True))


def store_url() -> str:
    url = _get("store_url")
    if url:
        return url
    path = airflow_home() / "bkci" / "status.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def spool_path() -> Path:
    raw = _get("spool_path")
    path = Path(raw) if raw else airflow_home() / "bkci" / "spool.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def ingest_url() -> str:
    url = _get("ingest_url")
    if url:
        return url
    base = str(_conf().get("core", "execution_api_server_url", fallback="") or "")
    if not base:
        base = "http://localhost:8080/execution/"
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/bkci/ingest", "", ""))


def ingest_secret() -> str:
    secret = _get("ingest_secret")
    if secret:
        return secret
    jwt_secret = str(_conf().get("api_auth", "jwt_secret", fallback="") or "")
    if not jwt_secret:
        raise ConfigError(
            "[bkci] ingest_secret is empty and [api_auth] jwt_secret is not set. "
            "Set [bkci] ingest_secret to the same value on API servers and workers."
        )
    return hashlib.sha256(b"bkci-ingest\x00" + jwt_secret.encode()).hexdigest()


def _float(option: str, default: float) -> float:
    raw = _get(option)
    try:
        return float(raw) if raw else default
    except ValueError as exc:
        raise ConfigError(f"[bkci] {option}={raw!r} is not a number; use e.g. {default}") from exc


def reconcile_interval() -> float:
    return _float("reconcile_interval", 1.0)


def recent_window() -> float:
    return _float("recent_window", 60.0)


def forward_timeout() -> float:
    return _float("forward_timeout", 3.0)


def forward_batch_size() -> int:
    return int(_float("forward_batch_size", 200))
