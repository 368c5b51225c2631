"""Forwarder: drains the local spool to the ingest route, best effort.

Rows leave the spool only when the receiver answered 2xx (acked) or refused
that one row for good (quarantined locally with the reason). Anything else, a
dead receiver, a slow network, a wrong secret, leaves the rows for the next
try, for another task runner on the host, or for ``airflow-bkci relay``.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401 - see below
import http.client
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

from tenacity import RetryCallState, Retrying, wait_exponential_jitter

from airflow_bkci import conf
from airflow_bkci.exceptions import BkciError, InvalidEvent
from airflow_bkci.spool.records import event_from_text
from airflow_bkci.spool.spool import Spool

__all__ = ["BatchResult", "Forwarder", "backoff_delay"]

log = logging.getLogger(__name__)

WaitStrategy = Callable[[RetryCallState], float]
DEFAULT_WAIT: WaitStrategy = wait_exponential_jitter(multiplier=0.5, max=30, jitter=0.5)
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
PENDING_SHOWN = 1000
"""A failed send's warning counts the backlog up to this many rows."""


def backoff_delay(wait: WaitStrategy, failures: int) -> float:
    """Delay before the next try after ``failures`` failures in a row, per ``wait``."""
    state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(1, failures)
    return float(wait(state))


@dataclass
class BatchResult:
    """What one pass over the spool did."""

    sent: int = 0
    quarantined: int = 0
    claimed: int = 0
    error: str | None = None
    retry_after: float | None = None
    rejected_reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def add(self, other: BatchResult) -> None:
        self.sent += other.sent
        self.quarantined += other.quarantined
        self.claimed += other.claimed
        self.error, self.retry_after = other.error, other.retry_after
        self.rejected_reasons.extend(other.rejected_reasons)


class TransportError(OSError):
    """The request did not get an answer: refused, reset, timed out, bad URL."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for the connection, and then for each read of the answer."""

    connect: float
    read: float


@dataclass(frozen=True)
class Reply:
    """The receiver's answer, read in full."""

    status_code: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _retry_after(response: Reply) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _detail(response: Reply) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:200]
    return str(body)[:200]


class _Endpoint:
    """One kept-alive connection to the ingest URL, on the standard library's http.client.

    Not httpx: its first client costs about 16 ms of CPU in a fresh task runner
    (imports and an SSL context even for plain http), paid at every task's exit;
    http.client answers a refused connection in about 0.2 ms. A TLS context is
    made only for an https URL, from the system's CA store (SSL_CERT_FILE and
    SSL_CERT_DIR apply). ``encodings.idna`` is imported with this module: the
    socket module imports it on its first name lookup (about 1 ms), and task
    runners forked from a process that imported us then share it.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"ingest URL {url!r} is not an http(s) URL")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str], timeouts: Timeouts) -> Reply:
        reused = self._conn is not None
        try:
            return self._post(body, headers, timeouts)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.close()
            if not reused:
                raise
        # A kept-alive connection the receiver had closed: one more try on a new one
        # (the receiver drops records it already has, by source and counter).
        return self._post(body, headers, timeouts)

    def _post(self, body: bytes, headers: dict[str, str], timeouts: Timeouts) -> Reply:
        conn = self._connect(timeouts)
        try:
            if conn.sock is not None:
                conn.sock.settimeout(timeouts.read)
            conn.request("POST", self.target, body=body, headers=headers)
            answer = conn.getresponse()
            reply = Reply(answer.status, answer.headers, answer.read())
        except BaseException:
            self.close()
            raise
        if answer.will_close:
            self.close()
        return reply

    def open(self, timeouts: Timeouts) -> None:
        """Connect now, unless a kept-alive connection is open."""
        self._connect(timeouts)

    def _connect(self, timeouts: Timeouts) -> http.client.HTTPConnection:
        if self._conn is None:
            conn: http.client.HTTPConnection
            if self.https:
                conn = http.client.HTTPSConnection(
                    self.host,
                    self.port,
                    timeout=timeouts.connect,
                    context=ssl.create_default_context(),
                )
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=timeouts.connect)
            conn.connect()
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Forwarder:
    """Posts spooled records in batches, on the calling thread.

    ``drain()`` sends until the spool is empty or a send fails (``airflow-bkci
    relay``); ``send_now()`` does the same within a time limit and honours the
    host's receiver backoff (a task runner's exit). No thread of its own: a
    task runner's only cost while its task runs is the append.
    """

    def __init__(
        self,
        spool: Spool,
        url: str,
        secret: str | None,
        *,
        batch_size: int = 200,
        connect_timeout: float = 1.0,
        read_timeout: float = 5.0,
        wait: WaitStrategy = DEFAULT_WAIT,
    ) -> None:
        self.spool = spool
        self.url = url
        self._secret = secret
        self.batch_size = max(1, int(batch_size))
        self.timeouts = Timeouts(connect=connect_timeout, read=read_timeout)
        self.wait = wait
        # Made on the first send: a task runner whose receiver is backing off
        # never builds one.
        self._endpoint: _Endpoint | None = None

    def close(self) -> None:
        """Close the kept-alive connection, if any."""
        if self._endpoint is not None:
            self._endpoint.close()

    @classmethod
    def from_conf(cls, spool: Spool, **kwargs: Any) -> Forwarder:
        """A forwarder configured from ``[bkci]`` (ingest_url, ingest_secret, batch size)."""
        secret: str | None
        try:
            secret = conf.ingest_secret()
        except BkciError as exc:
            log.warning("BK-CI forwarder cannot authenticate, records stay spooled: %s", exc)
            secret = None
        kwargs.setdefault("batch_size", conf.forward_batch_size())
        return cls(spool, conf.ingest_url(), secret, **kwargs)

    # -- synchronous work -------------------------------------------------

    def drain(self, *, max_seconds: float | None = None) -> BatchResult:
        """Send batches until the spool has nothing claimable, a send fails, or time is up."""
        total = BatchResult()
        end = None if max_seconds is None else time.monotonic() + max_seconds
        while True:
            timeouts = self.timeouts
            if end is not None:
                left = max(0.01, end - time.monotonic())
                timeouts = Timeouts(
                    connect=min(left, self.timeouts.connect), read=min(left, self.timeouts.read)
                )
            result = self.send_batch(timeouts)
            total.add(result)
            if not result.ok or result.claimed == 0:
                return total
            if end is not None and time.monotonic() >= end:
                return total

    def send_batch(self, timeouts: Timeouts | None = None) -> BatchResult:
        """Claim one batch, post it, ack or quarantine or give it back. Never raises."""
        try:
            return self._send_batch(timeouts or self.timeouts)
        except Exception as exc:
            log.warning("BK-CI forwarder failed on the spool at %s", self.spool.path, exc_info=True)
            return BatchResult(error=f"spool error: {type(exc).__name__}: {exc}")

    def _send_batch(self, timeouts: Timeouts) -> BatchResult:
        result = BatchResult()
        if not self.spool.has_claimable():
            return result
        if self._secret is None:
            result.error = "no ingest secret: set [bkci] ingest_secret on this worker"
            return result
        try:
            # Connected before anything is claimed: a receiver that is down costs
            # one refused connection, not a lease, a parse and a release of the
            # whole batch (a task runner's exit pays for this).
            if self._endpoint is None:
                self._endpoint = _Endpoint(self.url)
            self._endpoint.open(timeouts)
        except (OSError, http.client.HTTPException) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            return result
        rows = self.spool.claim(self.batch_size)
        result.claimed = len(rows)
        ids: list[int] = []
        records: list[str] = []
        for row_id, text in rows:
            reason = self._local_reject(text)
            if reason is None:
                ids.append(row_id)
                records.append(text)  # checked JSON already: sent as spooled
            else:
                self._quarantine(row_id, reason, result)
        if not records:
            return result
        body = ("[" + ",".join(records) + "]").encode()
        headers = {
            "Authorization": f"Bearer {self._secret}",
            "Content-Type": "application/json",
        }
        try:
            response = self._endpoint.post(body, headers, timeouts)
        except (OSError, http.client.HTTPException) as exc:
            self.spool.release(ids)
            result.error = f"{type(exc).__name__}: {exc}"
            return result
        self._handle_response(response, ids, result)
        return result

    def _local_reject(self, text: str) -> str | None:
        try:
            event_from_text(text)
        except InvalidEvent as exc:
            return exc.reason
        return None

    def _quarantine(self, row_id: int, reason: str, result: BatchResult) -> None:
        self.spool.quarantine(row_id, reason)
        result.quarantined += 1
        result.rejected_reasons.append(reason)
        log.warning("BK-CI spool row %d quarantined in %s: %s", row_id, self.spool.path, reason)

    def _handle_response(self, response: Reply, ids: list[int], result: BatchResult) -> None:
        status = response.status_code
        if 200 <= status < 300:
            rejected = self._rejected_indexes(response, len(ids))
            for index, reason in rejected.items():
                self._quarantine(ids[index], f"rejected by receiver: {reason}", result)
            accepted = [row_id for i, row_id in enumerate(ids) if i not in rejected]
            self.spool.ack(accepted)
            result.sent += len(accepted)
            return
        if status == 413 and len(ids) == 1:
            self._quarantine(ids[0], "record too large for the receiver (HTTP 413)", result)
            return
        self.spool.release(ids)
        if status == 413:
            self.batch_size = max(1, len(ids) // 2)
            result.error = f"HTTP 413: batch of {len(ids)} too large; trying {self.batch_size}"
            result.retry_after = 0.0
        elif status in (401, 403):
            result.error = (
                f"HTTP {status} from {self.url}: {_detail(response)}. Set [bkci] "
                "ingest_secret to the same value on API servers and workers."
            )
        else:
            result.error = f"HTTP {status} from {self.url}: {_detail(response)}"
            if status in _RETRYABLE_STATUS:
                result.retry_after = _retry_after(response)

    @staticmethod
    def _rejected_indexes(response: Reply, count: int) -> dict[int, str]:
        try:
            body = response.json()
        except ValueError:
            log.warning("BK-CI receiver answered %d without JSON; acking the batch", 200)
            return {}
        out: dict[int, str] = {}
        items = body.get("rejected", []) if isinstance(body, dict) else []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            index = item.get("index")
            if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < count:
                out[index] = str(item.get("reason", "no reason given"))[:1000]
        return out

    # -- outcome, shared with every forwarder on the host ---------------------

    def record_outcome(self, result: BatchResult) -> float | None:
        """Note a pass's outcome in the spool; the delay before the next try, if it failed.

        The backoff lives in the spool, so every task runner and relay on the
        host sees that the receiver is failing and none of them waits on it.
        """
        if result.ok:
            self.spool.receiver_ok(self.url)
            return None
        if result.retry_after == 0.0:  # a smaller batch can go at once
            return 0.0
        floor = result.retry_after or 0.0
        state = self.spool.receiver_failed(
            self.url,
            result.error or "unknown error",
            lambda failures: max(backoff_delay(self.wait, failures), floor),
        )
        return max(0.0, state.retry_at - time.time())

    def send_now(self, timeout: float) -> bool:
        """Send what is spooled, on the calling thread, for at most about ``timeout`` s.

        For a task runner's exit. True when everything claimable was sent.
        Returns False at once while the host's receiver is backing off (rows
        stay for a later forwarder or ``airflow-bkci relay``). Never raises.
        """
        try:
            state = self.spool.backoff(self.url)
            if state is not None and state.retry_at > time.time():
                log.debug("BK-CI forwarder skipped: %s is backing off (%s)", self.url, state.error)
                return False
            result = self.drain(max_seconds=timeout)
            if result.ok and state is None:
                pass  # nothing to forget: keep the exit free of a write
            else:
                delay = self.record_outcome(result)
                if delay is not None:
                    log.warning(
                        "BK-CI forwarder could not send to %s: %s. %s records stay in %s; "
                        "the next try on this host waits %.1fs",
                        self.url,
                        result.error,
                        self._pending(),
                        self.spool.path,
                        delay,
                    )
            if result.sent:
                self.spool.checkpoint()  # task runners append with autocheckpoint off
            return result.ok
        except Exception:
            log.warning("BK-CI forwarder failed on the spool at %s", self.spool.path, exc_info=True)
            return False

    def _pending(self) -> str:
        """The backlog for the warning, counted no further than ``PENDING_SHOWN`` rows."""
        try:
            count = self.spool.pending_count(limit=PENDING_SHOWN)
        except Exception:
            return "some"
        return str(count) if count < PENDING_SHOWN else f"{PENDING_SHOWN} or more"
