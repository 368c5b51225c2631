"""The webhook channel: signed CloudEvents batches over HTTP POST.

One pooled ``requests`` session per endpoint; every attempt is signed afresh
(Standard Webhooks rejects stale timestamps). The answer decides what the
dispatcher does: 2xx delivered; 410 the endpoint is gone; any other 4xx but
408/409/425/429 a permanent rejection of these change sets; everything else,
connection errors and timeouts included, a retry (honouring ``Retry-After``).
"""

from __future__ import annotations

import enum
import fnmatch
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from airflow_bkci.channels.envelope import (
    CONTENT_TYPE_BATCH,
    EVENT_CHANGED,
    EVENT_SNAPSHOT,
    batch_id,
    encode_batch,
)
from airflow_bkci.channels.signing import WebhookSigner
from airflow_bkci.exceptions import ConfigError

__all__ = ["Delivery", "Endpoint", "SendResult", "WebhookChannel"]

log = logging.getLogger(__name__)

_RETRYABLE_4XX = frozenset({408, 409, 425, 429})
_USER_AGENT = "airflow-bkci-webhook/1"


class Delivery(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"
    GONE = "gone"
    LATER = "later"
    """Nothing failed: the channel waits for data and asks to get the builds again after
    ``retry_after`` (no failure counted against the endpoint's circuit)."""


@dataclass(frozen=True)
class SendResult:
    delivery: Delivery
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Endpoint:
    """Where one webhook goes and what it wants; ``name`` is its Airflow connection id."""

    name: str
    url: str
    secret: str = field(repr=False)
    pipelines: tuple[str, ...] = ("*",)
    event_types: frozenset[str] = frozenset({EVENT_CHANGED, EVENT_SNAPSHOT})
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"webhook endpoint {self.name!r}: URL {self.url!r} is not http(s); put the full "
                "URL (https://host/path) in the connection's host field"
            )
        unknown = set(self.event_types) - {EVENT_CHANGED, EVENT_SNAPSHOT}
        if unknown or not self.event_types:
            raise ConfigError(
                f"webhook endpoint {self.name!r}: event_types {sorted(unknown) or '[]'} unknown; "
                f"use any of {EVENT_CHANGED!r}, {EVENT_SNAPSHOT!r}"
            )

    def accepts(self, pipeline_id: str) -> bool:
        return any(fnmatch.fnmatchcase(pipeline_id, glob) for glob in self.pipelines)

    @property
    def wants_changes(self) -> bool:
        """False when the endpoint takes snapshots only: every change then goes as one."""
        return EVENT_CHANGED in self.event_types


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _settle_environment(session: requests.Session, url: str) -> None:
    """Read the proxy and CA-bundle environment once, for this endpoint.

    requests reads it again on every request (a millisecond each, a third of
    a small batch's cost); the dispatcher's endpoints are fixed for its life.
    """
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(settings.get("proxies") or {})
    session.verify = settings.get("verify", True)
    session.trust_env = False


class WebhookChannel:
    """Sends batches of events to one endpoint. ``send`` never raises."""

    def __init__(self, endpoint: Endpoint, session: requests.Session | None = None) -> None:
        self.endpoint = endpoint
        self.signer = WebhookSigner(endpoint.secret)  # a malformed secret fails here, named
        self.session = session or requests.Session()
        self.session.mount("http://", HTTPAdapter(pool_maxsize=4, max_retries=0))
        self.session.mount("https://", HTTPAdapter(pool_maxsize=4, max_retries=0))
        _settle_environment(self.session, endpoint.url)

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def wants_changes(self) -> bool:
        return self.endpoint.wants_changes

    def accepts(self, pipeline_id: str) -> bool:
        return self.endpoint.accepts(pipeline_id)

    def send(self, events: Sequence[Mapping[str, Any]]) -> SendResult:
        body = encode_batch(events)
        try:
            headers = {
                "Content-Type": CONTENT_TYPE_BATCH,
                "User-Agent": _USER_AGENT,
                **self.signer.headers(batch_id(events), body),
            }
            response = self.session.post(
                self.endpoint.url,
                data=body,
                headers=headers,
                timeout=(min(5.0, self.endpoint.timeout), self.endpoint.timeout),
                allow_redirects=False,
            )
        except requests.ConnectionError as exc:
            return SendResult(
                Delivery.RETRY,
                error=(
                    f"no HTTP answer from {self.endpoint.url} (ConnectionError: {exc}); check "
                    f"that connection {self.name!r} points at the receiver and that it is up"
                ),
            )
        except requests.RequestException as exc:
            return SendResult(Delivery.RETRY, error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # never into the dispatcher's loop
            log.warning("bkci webhook %s: send failed", self.name, exc_info=True)
            return SendResult(Delivery.RETRY, error=f"{type(exc).__name__}: {exc}")
        return self._classify(response)

    def _classify(self, response: requests.Response) -> SendResult:
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(Delivery.DELIVERED, status)
        detail = f"HTTP {status} from {self.endpoint.url}: {response.text[:200]!r}"
        if status == 410:
            return SendResult(Delivery.GONE, status, detail)
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            return SendResult(Delivery.REJECTED, status, detail)
        return SendResult(Delivery.RETRY, status, detail, _retry_after(response.headers))

    def close(self) -> None:
        self.session.close()
