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
        "Seconds between two reads of Airflow's database by the scheduler-side reconciler "
        "(it bounds how soon a state that no hook reports is seen).",
        "float",
        "0.5",
        "2.0",
    ),
    "cancel_atomic_limit": _option(
        "Most builds one batch cancel changes in a single all-or-nothing transaction. A larger "
        "request is refused with this limit in the message unless the caller asks for chunked "
        "mode (atomic batches of this size, one after the other).",
        "integer",
        "5000",
        "2000",
    ),
    "cancel_max_builds": _option(
        "Most builds one cancel request may name, chunked or not.",
        "integer",
        "50000",
        "10000",
    ),
    "cancel_lock_timeout": _option(
        "Seconds a cancel waits for a row lock (PostgreSQL lock_timeout, SQLite busy timeout) "
        "before it rolls back and tries the whole transaction again.",
        "float",
        "3.0",
        "1.0",
    ),
    "cancel_attempts": _option(
        "How many times a cancel's transaction is tried when it meets a lock timeout or a "
        "deadlock (exponential backoff with jitter in between).",
        "integer",
        "5",
        "10",
    ),
    "cancel_previous": _option(
        "Cancel-previous concurrency groups by DAG id: <dag id glob>=<group key template> "
        "entries, one per line or separated by ';'. When a newer queued or running run of a "
        "group appears, the scheduler cancels the group's earlier ones. DAGs can opt in with "
        "the tag 'bkci:cancel-previous' (one group per DAG) or 'bkci:group=<template>' instead.",
        "string",
        "",
        "deploy_*={{ conf.get('branch', 'main') }}",
    ),
    "cancel_previous_interval": _option(
        "Seconds between two cancel-previous checks in the scheduler; 0 turns the feature off.",
        "float",
        "1.0",
        "5.0",
    ),
    "spool_poll_interval": _option(
        "Seconds between two reads of this host's spool by the scheduler, which applies "
        "the records task runners on its host spooled (LocalExecutor): a task's RUNNING "
        "is then reported while it runs, not at its exit. 0 leaves the spool to the task "
        "runners, which send it to the ingest route at their exit.",
        "float",
        "0.1",
        "0",
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
    "webhook_conn_ids": _option(
        "Comma-separated ids of Airflow connections of type bkci_webhook: each one is "
        "an endpoint that gets every build's change sets. Host: the full URL; password: "
        'the whsec_ secret; extra: {"pipelines": [globs], "event_types": [types], '
        '"timeout": seconds}. Empty: no webhooks.',
        "string",
        "",
        "bkci_ops_hook,bkci_dashboard",
    ),
    "mq_conn_ids": _option(
        "Comma-separated ids of Airflow connections of type bkci_mq: each one is a message "
        "broker (RabbitMQ or Redis, through kombu) that gets every build's change sets on a "
        "topic exchange. Empty: no message queue.",
        "string",
        "",
        "bkci_rabbit",
    ),
    "live_poll_interval": _option(
        "Seconds between two looks at the status store by the WebSocket tailer of each API "
        "server worker (it bounds how soon a change reaches live clients).",
        "float",
        "0.1",
        "0.25",
    ),
    "live_heartbeat": _option(
        "Seconds between heartbeat messages on an idle WebSocket; 0 sends none.",
        "float",
        "15.0",
        "30",
    ),
    "live_client_buffer": _option(
        "Events a WebSocket client may have waiting before it is told to resync (a slow "
        "client never holds up the others).",
        "integer",
        "1000",
        "5000",
    ),
    "live_max_subscriptions": _option(
        "Most pipelines and builds one WebSocket client may subscribe to.",
        "integer",
        "1000",
        "200",
    ),
    "event_source": _option(
        "The CloudEvents source of every event this deployment sends (keep it stable: "
        "with the event id it is the consumers' idempotency key).",
        "string",
        "/airflow-bkci",
        "//airflow.example.com/bkci",
    ),
    "record_events_to": _option(
        "Append every batch of status events the store applies to this JSON Lines file "
        "(empty: off). For a bug report: `airflow-bkci replay-events FILE` rebuilds the "
        "same builds and change sets in another store. Grows without bound; turn it off after.",
        "string",
        "",
        "/tmp/bkci-events.jsonl",
    ),
    "dispatch_in": _option(
        "Where the outbox dispatcher runs, comma-separated: scheduler, api-server (each API "
        "server worker runs one). Several dispatchers share the lanes safely; "
        "``airflow-bkci relay --dispatch`` runs one anywhere else.",
        "string",
        "scheduler",
        "scheduler,api-server",
    ),
    "dispatch_batch_size": _option(
        "Most events per request to one endpoint.", "integer", "100", "500"
    ),
    "dispatch_batch_wait": _option(
        "Seconds the dispatcher waits after a busy pass for more change sets to batch.",
        "float",
        "0.05",
        "0.2",
    ),
    "snapshot_threshold": _option(
        "A lane further behind than this many change sets gets one snapshot instead.",
        "integer",
        "200",
        "50",
    ),
    "retry_schedule": _option(
        "Seconds before each retry of a failing delivery (up to 10 % jitter); after the "
        "last one the change sets become dead letters and the build gets a snapshot.",
        "string",
        "5,300,1800,7200,18000,36000,36000",
        "1,10,60",
    ),
    "outbox_retention_days": _option(
        "Change sets every endpoint has are deleted after this many days.",
        "float",
        "7",
        "1",
    ),
    "notify_enabled": _option(
        "Owner-routed notifications of failed, canceled and recovered builds (see "
        "docs/notifications.md). auto: on exactly when notify_owners_file is set, so nobody "
        "is mailed unasked; True: also without an owners file (task owners and the DAG's "
        "owner_links only); False: off.",
        "string",
        "auto",
        "True",
    ),
    "notify_owners_file": _option(
        "Path of the owners rules file (CODEOWNERS-style lines: <pipeline glob>[/<task glob>] "
        "followed by recipients). Read again when it changes. Empty: no rules file.",
        "string",
        "",
        "/opt/airflow/bkci-owners",
    ),
    "notify_canceled": _option(
        "Also notify when a build is canceled (the owners of the pipeline).",
        "boolean",
        "False",
        "True",
    ),
    "notify_recovered": _option(
        "Notify when a build succeeds after failed builds of its pipeline.",
        "boolean",
        "True",
        "False",
    ),
    "notify_triggering_user": _option(
        "Also notify the user who triggered the build (an email address, or a name mapped "
        "by the DAG's owner_links).",
        "boolean",
        "False",
        "True",
    ),
    "notify_rate_limit": _option(
        "Messages per pipeline per window; failures beyond it go out as one digest when the "
        "window ends (or right before the recovery message). At least 1.",
        "integer",
        "3",
        "5",
    ),
    "notify_rate_window": _option(
        "Length of a rate-limit window in seconds; windows are aligned to the epoch.",
        "float",
        "3600",
        "900",
    ),
    "notify_email_conn_id": _option(
        "SMTP connection that plain email addresses are sent through. Empty: Airflow's "
        "[email] email_conn_id (smtp_default).",
        "string",
        "",
        "smtp_ops",
    ),
    "notify_settle": _option(
        "Seconds a FAILED or CANCELED build's message waits while its document is not "
        "settled: a failed task's error summary (the worker reports it separately) or a "
        "task's final state has not arrived yet. After that it goes out with what there is. "
        "0: never wait.",
        "float",
        "5",
        "0",
    ),
    "notify_max_age": _option(
        "Builds that ended longer ago than this many seconds get no message: turning "
        "notifications on (or a long outage) does not mail people about old failures. "
        "0: no limit.",
        "float",
        "86400",
        "3600",
    ),
    "dashboard_pipelines": _option(
        "Comma-separated DAG ids the dashboard's wall (/bkci/ui/wall) shows, in this order, "
        "when its URL names neither pipelines nor a tag. Empty: [bkci] dashboard_tag decides.",
        "string",
        "",
        "etl,deploy,nightly_report",
    ),
    "dashboard_tag": _option(
        "A DAG tag: when neither the wall's URL nor [bkci] dashboard_pipelines names pipelines, "
        "the wall shows the DAGs with this tag. Empty: every pipeline the viewer may read.",
        "string",
        "",
        "team-x",
    ),
    "dashboard_window": _option(
        "Seconds of builds (by when they were due) the wall's success rate and duration "
        "percentiles cover when the URL gives no window; at most 366 days.",
        "integer",
        "604800",
        "86400",
    ),
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-bkci",
        "name": "BK-CI build status",
        "description": "BK-CI build-status reporting and batch cancel for Apache Airflow.",
        "versions": ["0.1.0"],
        "connection-types": [
            {
                "connection-type": "bkci_webhook",
                "hook-class-name": "airflow_bkci.hooks.webhook.BkciWebhookHook",
            },
            {
                "connection-type": "bkci_mq",
                "hook-class-name": "airflow_bkci.hooks.mq.BkciMqHook",
            },
        ],
        "config": {
            "bkci": {
                "description": "BK-CI build status collection and reporting.",
                "options": OPTIONS,
            }
        },
    }
