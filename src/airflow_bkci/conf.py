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
    return _float("reconcile_interval", 0.5)


def spool_poll_interval() -> float:
    return _float("spool_poll_interval", 0.1)


def recent_window() -> float:
    return _float("recent_window", 60.0)


def forward_timeout() -> float:
    return _float("forward_timeout", 3.0)


def forward_batch_size() -> int:
    return int(_float("forward_batch_size", 200))


def webhook_conn_ids() -> list[str]:
    return [c.strip() for c in _get("webhook_conn_ids").split(",") if c.strip()]


def record_events_to() -> str | None:
    """Where the store appends every batch it applies (``[bkci] record_events_to``), or None."""
    return _get("record_events_to").strip() or None


DISPATCH_PLACES = ("scheduler", "api-server")


def dispatch_in() -> frozenset[str]:
    """Where the outbox dispatcher runs (``[bkci] dispatch_in``)."""
    raw = str(_conf().get(SECTION, "dispatch_in", fallback="scheduler") or "")
    places = frozenset(p.strip() for p in raw.split(",") if p.strip())
    unknown = places - set(DISPATCH_PLACES)
    if unknown:
        raise ConfigError(
            f"[bkci] dispatch_in names {', '.join(sorted(unknown))}: use a comma-separated "
            f"list of {', '.join(DISPATCH_PLACES)} (or leave it empty for none)."
        )
    return places


def event_source() -> str:
    return _get("event_source") or "/airflow-bkci"


def dispatch_batch_size() -> int:
    return max(1, int(_float("dispatch_batch_size", 100)))


def dispatch_batch_wait() -> float:
    return max(0.0, _float("dispatch_batch_wait", 0.05))


def snapshot_threshold() -> int:
    return max(1, int(_float("snapshot_threshold", 200)))


def retry_schedule() -> tuple[float, ...]:
    raw = _get("retry_schedule") or "5,300,1800,7200,18000,36000,36000"
    try:
        steps = tuple(float(x) for x in raw.split(",") if x.strip())
    except ValueError as exc:
        raise ConfigError(
            f"[bkci] retry_schedule={raw!r} is not a list of seconds; use e.g. 5,300,1800"
        ) from exc
    if not steps or any(s < 0 for s in steps):
        raise ConfigError(f"[bkci] retry_schedule={raw!r} needs one or more seconds >= 0")
    return steps


def outbox_retention_days() -> float:
    return _float("outbox_retention_days", 7.0)


def cancel_atomic_limit() -> int:
    """Most builds one cancel changes in a single transaction (``[bkci] cancel_atomic_limit``)."""
    return max(1, int(_float("cancel_atomic_limit", 5000)))


def cancel_max_builds() -> int:
    """Most builds one request may name, chunked or not (``[bkci] cancel_max_builds``)."""
    return max(1, int(_float("cancel_max_builds", 50000)))


def cancel_lock_timeout() -> float:
    """Seconds a cancel waits for one row lock before it retries the whole transaction."""
    return max(0.05, _float("cancel_lock_timeout", 3.0))


def cancel_attempts() -> int:
    """How many times a cancel's transaction is tried on lock timeouts and deadlocks."""
    return max(1, int(_float("cancel_attempts", 5)))


def cancel_previous() -> str:
    """``[bkci] cancel_previous``: ``<dag id glob>=<group template>`` entries."""
    return _get("cancel_previous")


def cancel_previous_interval() -> float:
    """Seconds between two cancel-previous passes in the scheduler; 0 turns them off."""
    return _float("cancel_previous_interval", 1.0)


def mq_conn_ids() -> list[str]:
    """``[bkci] mq_conn_ids``: ``bkci_mq`` connections the dispatcher publishes to."""
    return [c.strip() for c in _get("mq_conn_ids").split(",") if c.strip()]


def live_poll_interval() -> float:
    """Seconds between two looks at the store by each API server worker's live tailer."""
    return max(0.01, _float("live_poll_interval", 0.1))


def live_heartbeat() -> float:
    """Seconds between heartbeats on an idle WebSocket (0: none)."""
    return max(0.0, _float("live_heartbeat", 15.0))


def live_client_buffer() -> int:
    """Events one WebSocket client may have unsent before it is told to resync."""
    return max(1, int(_float("live_client_buffer", 1000)))


def live_max_subscriptions() -> int:
    """Most pipelines plus builds one WebSocket client may subscribe to."""
    return max(1, int(_float("live_max_subscriptions", 1000)))


# -- the dashboard ([bkci] dashboard_*) -----------------------------------------------------

MAX_DASHBOARD_WINDOW = 366 * 86400


def dashboard_pipelines() -> list[str]:
    """``[bkci] dashboard_pipelines``: the wall's pipelines when the URL names none, in order."""
    return list(
        dict.fromkeys(d.strip() for d in _get("dashboard_pipelines").split(",") if d.strip())
    )


def dashboard_tag() -> str | None:
    """``[bkci] dashboard_tag``: the DAG tag whose DAGs the wall shows when nothing else says."""
    return _get("dashboard_tag").strip() or None


def dashboard_window() -> int:
    """``[bkci] dashboard_window``: seconds of builds the wall's numbers cover by default."""
    seconds = int(_float("dashboard_window", 604800))
    if not 1 <= seconds <= MAX_DASHBOARD_WINDOW:
        raise ConfigError(
            f"[bkci] dashboard_window={seconds} is out of range: give 1 to "
            f"{MAX_DASHBOARD_WINDOW} seconds (366 days), e.g. 604800 for a week"
        )
    return seconds


# -- notifications ([bkci] notify_*) -------------------------------------------------------

_TRUE = frozenset({"true", "t", "1", "yes", "on"})
_FALSE = frozenset({"false", "f", "0", "no", "off"})


def _flag(option: str, default: bool) -> bool:
    raw = _get(option).strip().lower()
    if not raw:
        return default
    if raw in _TRUE | _FALSE:
        return raw in _TRUE
    raise ConfigError(f"[bkci] {option}={raw!r} is not a boolean; use True or False")


def notify_owners_file() -> Path | None:
    """``[bkci] notify_owners_file``: the owners rules file, or None for none."""
    raw = _get("notify_owners_file").strip()
    return Path(raw) if raw else None


def notify_enabled() -> bool:
    """``[bkci] notify_enabled``: ``auto`` (default) is on exactly when an owners file is set.

    A tool should not mail people nobody asked it to: with ``auto`` only a
    deployment that wrote an owners file sends; ``True`` also sends to task
    owners and ``owner_links`` alone.
    """
    raw = _get("notify_enabled").strip().lower() or "auto"
    if raw == "auto":
        return notify_owners_file() is not None
    if raw in _TRUE | _FALSE:
        return raw in _TRUE
    raise ConfigError(f"[bkci] notify_enabled={raw!r} is not auto, True or False")


def notify_canceled() -> bool:
    return _flag("notify_canceled", False)


def notify_recovered() -> bool:
    return _flag("notify_recovered", True)


def notify_triggering_user() -> bool:
    return _flag("notify_triggering_user", False)


def notify_rate_limit() -> int:
    """Messages per pipeline per window (checked by ``RateLimit``: at least 1)."""
    return int(_float("notify_rate_limit", 3))


def notify_rate_window() -> float:
    return _float("notify_rate_window", 3600.0)


def notify_settle() -> float:
    """Seconds a failure's message waits for late error summaries and task states (0: none)."""
    return max(0.0, _float("notify_settle", 5.0))


def notify_max_age() -> float:
    """Builds that ended longer ago than this (seconds) get no message (0: no limit)."""
    return max(0.0, _float("notify_max_age", 86400.0))


def notify_email_conn_id() -> str:
    """The SMTP connection for plain addresses; default Airflow's ``[email] email_conn_id``."""
    own = _get("notify_email_conn_id").strip()
    if own:
        return own
    airflow_default = str(_conf().get("email", "email_conn_id", fallback="") or "")
    return airflow_default.strip() or "smtp_default"


def notify_from_email() -> str | None:
    """The sender when the SMTP connection names none: Airflow's ``[email] from_email``."""
    return str(_conf().get("email", "from_email", fallback="") or "").strip() or None


def api_base_url() -> str | None:
    """Airflow's ``[api] base_url`` (unset by default)."""
    return str(_conf().get("api", "base_url", fallback="") or "").strip() or None


def notify_base_url() -> str:
    """The base of links in messages: ``[api] base_url``, with Airflow's own fallback."""
    return api_base_url() or "http://localhost:8080/"
