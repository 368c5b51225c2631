"""Checks for the services tests need: skip locally, fail on CI, say how to fix."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NoReturn

import pytest

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_checked: dict[str, str | None] = {}


def require_postgres() -> str:
    """The admin URL of a reachable PostgreSQL, or skip (fail when CI=true)."""
    return _require(
        "BKCI_TEST_PG_URL",
        DEFAULT_PG_URL,
        _probe_postgres,
        "PostgreSQL at {url} is not reachable ({problem}). Start one (e.g. "
        "`docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`) "
        "or point BKCI_TEST_PG_URL at one whose user may create databases.",
    )


def require_rabbitmq() -> str:
    """The AMQP URL of a reachable RabbitMQ, or skip (fail when CI=true)."""
    return _require(
        "BKCI_TEST_AMQP_URL",
        DEFAULT_AMQP_URL,
        _probe_rabbitmq,
        "RabbitMQ at {url} is not reachable ({problem}). Start one (e.g. "
        "`docker run -d -p 5672:5672 rabbitmq:4`) or point BKCI_TEST_AMQP_URL at one "
        "whose user may declare and delete exchanges and queues.",
    )


def require_redis() -> str:
    """The URL of a reachable Redis, or skip (fail when CI=true)."""
    return _require(
        "BKCI_TEST_REDIS_URL",
        DEFAULT_REDIS_URL,
        _probe_redis,
        "Redis at {url} is not reachable ({problem}). Start one (e.g. "
        "`docker run -d -p 6379:6379 redis:7`) or point BKCI_TEST_REDIS_URL at one.",
    )


def _require(variable: str, default: str, probe: Callable[[str], str | None], advice: str) -> str:
    """The service's URL once ``probe`` finds it up (checked once per URL), else skip or fail."""
    url = os.environ.get(variable, default)
    if url not in _checked:
        _checked[url] = probe(url)
    problem = _checked[url]
    if problem is None:
        return url
    unavailable(advice.format(url=url, problem=problem))


def unavailable(message: str) -> NoReturn:
    """Skip the test with ``message``; on CI (CI=true) fail it instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _probe_postgres(url: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed; pip install 'psycopg[binary]'"
    libpq_url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        with psycopg.connect(libpq_url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _probe_rabbitmq(url: str) -> str | None:
    try:
        import pika
    except ImportError:
        return "pika is not installed; pip install pika"
    params = pika.URLParameters(url)
    params.socket_timeout = 3
    params.connection_attempts = 1
    try:
        pika.BlockingConnection(params).close()
    except pika.exceptions.AMQPError as exc:
        return f"{type(exc).__name__}: {exc}"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _probe_redis(url: str) -> str | None:
    try:
        import redis
    except ImportError:
        return "redis is not installed; pip install redis"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
