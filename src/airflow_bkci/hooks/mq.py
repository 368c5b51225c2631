"""The ``bkci_mq`` connection type: which broker and exchange build events are published to.

The broker is either a full kombu URL in host (``amqp://user@rabbit:5672/ci``,
``redis://cache:6379/3``; login and password fill in what the URL leaves out)
or host, port, login, password and schema (the RabbitMQ virtual host, or the
Redis database number) with extra ``transport`` naming the broker (``amqp``,
the default, or ``redis``). Extra holds the rest, all optional::

    {"exchange": "bkci.builds", "batch": true, "pipelines": ["deploy_*"],
     "event_types": ["dev.airflow-bkci.build.changed"], "confirm_timeout": 10,
     "connect_timeout": 5, "declare": true, "transport_options": {}}
"""

from __future__ import annotations

import logging
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

from airflow.sdk import BaseHook

from airflow_bkci.channels.envelope import EVENT_CHANGED, EVENT_SNAPSHOT
from airflow_bkci.channels.mq import DEFAULT_EXCHANGE, SCHEMES, Broker, MqChannel
from airflow_bkci.exceptions import ConfigError
from airflow_bkci.hooks.webhook import _list

__all__ = ["BkciMqHook", "broker_from_connection", "configured_mq_channels"]

log = logging.getLogger(__name__)

EXTRA_KEYS: Final = frozenset(
    {
        "transport",
        "exchange",
        "batch",
        "pipelines",
        "event_types",
        "confirm_timeout",
        "connect_timeout",
        "declare",
        "transport_options",
    }
)
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def _flag(extra: dict[str, Any], key: str, default: bool, conn_id: str) -> bool:
    value = extra.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"connection {conn_id!r}: extra {key!r} must be true or false, got {value!r}")


def _seconds(extra: dict[str, Any], key: str, default: float, conn_id: str) -> float:
    value = extra.get(key, default)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not seconds > 0:
        raise ConfigError(
            f"connection {conn_id!r}: extra {key!r} must be seconds above 0, got {value!r}"
        )
    return seconds


def broker_url(conn_id: str, conn: Any, transport: str) -> str:
    """The kombu URL the connection's fields describe (the password in clear: do not log)."""
    host = str(conn.host or "").strip()
    login = str(conn.login or "")
    password = str(conn.password or "")
    if "://" in host:
        parts = urlsplit(host)
        if parts.username is None and (login or password):
            # Credentials in their own fields stay out of the host (the UI masks only those).
            netloc = f"{quote(login, safe='')}:{quote(password, safe='')}@{parts.netloc}"
            return urlunsplit(parts._replace(netloc=netloc))
        return host
    if not host:
        raise ConfigError(
            f"connection {conn_id!r} has no host; put the broker's host name in its host field "
            "(with extra 'transport': 'amqp' or 'redis'), or a full URL such as "
            "amqp://user:password@rabbit:5672/vhost"
        )
    userinfo = ""
    if login or password:
        userinfo = f"{quote(login, safe='')}:{quote(password, safe='')}@"
    port = f":{conn.port}" if conn.port else ""
    path = quote(str(conn.schema or ""), safe="")
    return f"{transport}://{userinfo}{host}{port}/{path}"


def broker_from_connection(conn_id: str, conn: Any) -> Broker:
    """The broker a connection describes; ConfigError names the connection and the fix."""
    extra = conn.extra_dejson or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"connection {conn_id!r}: extra must be a JSON object, got {extra!r}")
    unknown = sorted(set(extra) - EXTRA_KEYS)
    if unknown:
        raise ConfigError(
            f"connection {conn_id!r}: extra {unknown} unknown; use any of {sorted(EXTRA_KEYS)}"
        )
    transport = str(extra.get("transport", "amqp")).lower()
    if transport not in SCHEMES:
        raise ConfigError(
            f"connection {conn_id!r}: extra 'transport' {transport!r} unknown; use 'amqp' "
            "(RabbitMQ) or 'redis'"
        )
    exchange = extra.get("exchange", DEFAULT_EXCHANGE)
    if not isinstance(exchange, str):
        raise ConfigError(
            f"connection {conn_id!r}: extra 'exchange' must be a name, got {exchange!r}"
        )
    options = extra.get("transport_options", {})
    if not isinstance(options, dict):
        raise ConfigError(
            f"connection {conn_id!r}: extra 'transport_options' must be a JSON object of "
            f"kombu transport options, got {options!r}"
        )
    pipelines = _list(extra.get("pipelines", ["*"]), "pipelines", conn_id)
    types = _list(extra.get("event_types", [EVENT_CHANGED, EVENT_SNAPSHOT]), "event_types", conn_id)
    return Broker(
        conn_id,
        broker_url(conn_id, conn, transport),
        exchange=exchange,
        batch=_flag(extra, "batch", False, conn_id),
        pipelines=pipelines,
        event_types=frozenset(types),
        confirm_timeout=_seconds(extra, "confirm_timeout", 10.0, conn_id),
        connect_timeout=_seconds(extra, "connect_timeout", 5.0, conn_id),
        declare=_flag(extra, "declare", True, conn_id),
        transport_options=options,
    )


class BkciMqHook(BaseHook):
    """Reads a ``bkci_mq`` connection into a :class:`Broker`."""

    conn_name_attr = "bkci_mq_conn_id"
    default_conn_name = "bkci_mq_default"
    conn_type = "bkci_mq"
    hook_name = "BK-CI status message queue"

    def __init__(self, bkci_mq_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = bkci_mq_conn_id

    def broker(self) -> Broker:
        return broker_from_connection(self.conn_id, self.get_connection(self.conn_id))

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {
                "host": "Host or broker URL",
                "schema": "Virtual host (RabbitMQ) or database number (Redis)",
            },
            "placeholders": {
                "host": "rabbitmq.example.com or amqp://rabbitmq.example.com:5672/ci",
                "port": "5672",
                "schema": "/",
                "extra": '{"transport": "amqp", "exchange": "bkci.builds", "batch": true}',
            },
        }


def configured_mq_channels(conn_ids: list[str] | None = None) -> list[MqChannel]:
    """A channel per ``[bkci] mq_conn_ids`` connection; a broken one is logged and left out.

    Nothing connects here: each channel connects on its first send.
    """
    if conn_ids is None:
        from airflow_bkci import conf

        conn_ids = conf.mq_conn_ids()
    channels = []
    for conn_id in conn_ids:
        try:
            channels.append(MqChannel(BkciMqHook(conn_id).broker()))
        except Exception as exc:
            log.error(
                "bkci: message queue %r is not published to: %s. Other channels go on; "
                "fix the connection (type bkci_mq) and restart the scheduler.",
                conn_id,
                exc,
            )
    return channels
