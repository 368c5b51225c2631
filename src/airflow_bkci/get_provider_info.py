"""Provider metadata: registers the package and declares the ``[bkci]`` section."""

from __future__ import annotations

from typing import Any


def _option(
    description: str,
    type_: str,
    default: str | None,
    example: str | None = None,
    sensitive: bool = False,
) -> dict[str, Any]:
    return {
        "description": description,
        "version_added": "0.1.0",
        "type": type_,
        "example": example,
        "default": default,
        "sensitive": sensitive,
    }


OPTIONS: dict[str, dict[str, Any]] = {
    "enabled": _option("Turn status collection on or off in every component.", "boolean", "True"),
    "store_url": _option(
        "SQLAlchemy URL of the status store. Empty: an SQLite file "
        "bkci/status.db under AIRFLOW_HOME. Use PostgreSQL in production.",
        "string",
        "",
        "postgresql+psycopg://airflow@db/bkci",
    ),
    "spool_path": _option(
        "Local SQLite file where task runners append enrichment records before "
        "they are forwarded. Empty: bkci/spool.db under AIRFLOW_HOME.",
        "string",
        "",
        "/var/lib/airflow/bkci-spool.db",
    ),
    "ingest_url": _option(
        "URL of the ingest route that workers post spooled records to. Empty: "
        "derived from [core] execution_api_server_url (same host, /bkci/ingest).",
        "string",
        "",
        "http://airflow-api:8080/bkci/ingest",
    ),
    "ingest_secret": _option(
        "Shared secret that workers present to the ingest route (Bearer token). "
        "Set the same value on API servers and workers, or leave empty to derive "
        "it from [api_auth] jwt_secret.",
        "string",
        "",
        "a-long-random-string",
        sensitive=True,
    ),
    "reconcile_interval": _option(
        "Seconds between two reads of Airflow's database by the scheduler-side reconciler.",
        "float",
        "1.0",
        "0.5",
    ),
    "recent_window": _option(
        "Runs that ended less than this many seconds before the last successful "
        "reconcile are still read, so their last changes are not missed.",
        "float",
        "60",
        "120",
    ),
    "forward_timeout": _option(
        "Seconds a task runner waits at exit for spooled records to be sent.",
        "float",
        "3.0",
        "5.0",
    ),
    "forward_batch_size": _option(
        "Records per request from the spool forwarder.", "integer", "200", "500"
    ),
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-bkci",
        "name": "BK-CI build status",
        "description": "BK-CI build-status reporting and batch cancel for Apache Airflow.",
        "versions": ["0.1.0"],
        "config": {
            "bkci": {
                "description": "BK-CI build status collection and reporting.",
                "options": OPTIONS,
            }
        },
    }
