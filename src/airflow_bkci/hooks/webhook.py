"""The ``bkci_webhook`` connection type: where a webhook endpoint is and how to sign for it.

Host holds the full URL (``https://ci.example.com/hooks/bkci``), password the
``whsec_`` secret, and extra the optional filters::

    {"pipelines": ["deploy_*", "etl"], "event_types": ["dev.airflow-bkci.build.changed"],
     "timeout": 10}
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_bkci.channels.envelope import EVENT_CHANGED, EVENT_SNAPSHOT
from airflow_bkci.channels.signing import decode_secret
from airflow_bkci.channels.webhook import Endpoint, WebhookChannel
from airflow_bkci.exceptions import ConfigError

if TYPE_CHECKING:
    from airflow_bkci.channels.dispatcher import Dispatcher
    from airflow_bkci.store.store import Store

__all__ = ["BkciWebhookHook", "configured_channels", "endpoint_from_connection"]

log = logging.getLogger(__name__)


def _list(value: Any, what: str, conn_id: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(
            f"connection {conn_id!r}: extra {what!r} must be a list of strings, got {value!r}"
        )
    return tuple(value)


def endpoint_from_connection(conn_id: str, conn: Any) -> Endpoint:
    """The endpoint a connection describes; ConfigError names the connection and the fix."""
    url = str(conn.host or "")
    if url and "://" not in url:
        scheme = conn.schema or "https"
        port = f":{conn.port}" if conn.port else ""
        url = f"{scheme}://{url}{port}"
    if not url:
        raise ConfigError(
            f"connection {conn_id!r} has no host; put the endpoint's full URL "
            "(https://host/path) in its host field"
        )
    secret = str(conn.password or "")
    try:
        decode_secret(secret)
    except ConfigError as exc:
        raise ConfigError(f"connection {conn_id!r}: password: {exc}") from None
    extra = conn.extra_dejson or {}
    pipelines = _list(extra.get("pipelines", ["*"]), "pipelines", conn_id)
    types = _list(extra.get("event_types", [EVENT_CHANGED, EVENT_SNAPSHOT]), "event_types", conn_id)
    try:
        timeout = float(extra.get("timeout", 10.0))
    except (TypeError, ValueError):
        raise ConfigError(
            f"connection {conn_id!r}: extra 'timeout' must be seconds, got {extra.get('timeout')!r}"
        ) from None
    return Endpoint(conn_id, url, secret, pipelines, frozenset(types), timeout)


class BkciWebhookHook(BaseHook):
    """Reads a ``bkci_webhook`` connection into an :class:`Endpoint`."""

    conn_name_attr = "bkci_webhook_conn_id"
    default_conn_name = "bkci_webhook_default"
    conn_type = "bkci_webhook"
    hook_name = "BK-CI status webhook"

    def __init__(self, bkci_webhook_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = bkci_webhook_conn_id

    def endpoint(self) -> Endpoint:
        return endpoint_from_connection(self.conn_id, self.get_connection(self.conn_id))

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["login", "port", "schema"],
            "relabeling": {"host": "Endpoint URL", "password": "Signing secret (whsec_...)"},
            "placeholders": {
                "host": "https://ci.example.com/hooks/bkci",
                "extra": '{"pipelines": ["*"], "timeout": 10}',
            },
        }


def configured_channels(conn_ids: list[str] | None = None) -> list[WebhookChannel]:
    """A channel per configured connection; a broken one is logged and left out."""
    if conn_ids is None:
        from airflow_bkci import conf

        conn_ids = conf.webhook_conn_ids()
    channels = []
    for conn_id in conn_ids:
        try:
            channels.append(WebhookChannel(BkciWebhookHook(conn_id).endpoint()))
        except Exception as exc:
            log.error(
                "bkci: webhook %r is not delivered to: %s. Other endpoints go on; "
                "fix the connection (type bkci_webhook) and restart the scheduler.",
                conn_id,
                exc,
            )
    return channels


def dispatcher_from_conf(store: Store) -> Dispatcher | None:
    """The dispatcher ``[bkci]`` describes, or None when no endpoint is configured.

    Its channels are the webhooks of ``webhook_conn_ids``, the message
    queues of ``mq_conn_ids`` and, when ``notify_enabled`` says so, the
    owner notifications; a broken connection is logged and left out.
    """
    from airflow_bkci import conf
    from airflow_bkci.channels.dispatcher import Channel, Dispatcher
    from airflow_bkci.channels.notify import configured_notify_channels
    from airflow_bkci.hooks.mq import configured_mq_channels

    # Names are connection ids, so a webhook and a queue never share outbox lanes;
    # the notification channel's name has a ':' no connection id has.
    channels: list[Channel] = [
        *configured_channels(),
        *configured_mq_channels(),
        *configured_notify_channels(store),
    ]
    if not channels:
        return None
    return Dispatcher(
        store,
        channels,
        source=conf.event_source(),
        batch_size=conf.dispatch_batch_size(),
        batch_wait=conf.dispatch_batch_wait(),
        snapshot_threshold=conf.snapshot_threshold(),
        schedule=conf.retry_schedule(),
        retention=timedelta(days=conf.outbox_retention_days()),
    )
