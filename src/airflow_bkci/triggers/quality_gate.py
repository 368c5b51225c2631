"""``QualityGateTrigger``: a deferred quality gate waits in the triggerer for the builds it names.

The gate task defers when a rule looks at a build that has not ended; no worker
slot is held meanwhile. The trigger reads build status through the plugin's
query API (the triggerer has no database), as the gate's connection user, every
``poll_interval`` seconds, and fires once the decision is no longer "wait" or
the gate's deadline passes. The event carries the result as JSON
(:mod:`airflow_bkci.gates.serde`), so the resumed task judges exactly what the
trigger saw, even if a newer build has started since.

Event payloads (``outcome`` tells them apart):

- ``decided``: ``decision``, ``result``, ``report`` (the XCom report dict);
- ``timeout``: the deadline passed; ``result`` is the last one read (None if
  no read ever worked) and ``error`` the last read's error, if any;
- ``error``: the connection cannot be used (missing, or its login refused).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_bkci.gates.errors import GateConnectionError, ReadUnavailable

if TYPE_CHECKING:
    from airflow_bkci.gates.reader import AsyncRestBuildReader
    from airflow_bkci.gates.rules import Rule

__all__ = [
    "DECIDED",
    "DEFAULT_POLL_INTERVAL",
    "ERROR",
    "MAX_BACKOFF",
    "TIMEOUT",
    "QualityGateTrigger",
    "next_delay",
]

DEFAULT_POLL_INTERVAL = 30.0
"""Seconds between reads while the builds run."""

MAX_BACKOFF = 300.0
"""Longest pause between reads while the API server cannot answer."""

TOKEN_MAX_AGE = 3600.0
"""Seconds before a token from a login is renewed; Airflow's JWTs live a day by default."""

DECIDED, TIMEOUT, ERROR = "decided", "timeout", "error"


def next_delay(previous: float, poll_interval: float, retry_after: float | None = None) -> float:
    """The pause after a read the API server could not answer: doubling, at most MAX_BACKOFF.

    A ``Retry-After`` the server sent is honoured up to the same bound.
    """
    delay = min(max(previous, poll_interval) * 2, max(MAX_BACKOFF, poll_interval))
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_BACKOFF))
    return delay


def _event(payload: dict[str, Any]) -> TriggerEvent:
    return TriggerEvent(payload)  # type: ignore[no-untyped-call]  # Airflow leaves it untyped


def _utc(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


class QualityGateTrigger(BaseTrigger):
    """Polls a gate's rules until no rule waits for a running build, or ``deadline``.

    ``rules`` are rule dicts (``Rule.to_dict()``), checked when the task made
    them; ``link_base`` is the UI base URL for the report's links.
    """

    def __init__(
        self,
        *,
        rules: Sequence[Mapping[str, Any]],
        conn_id: str,
        deadline: datetime | str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        link_base: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Airflow leaves it untyped
        self.rules = [dict(rule) for rule in rules]
        self.conn_id = conn_id
        self.deadline = _utc(deadline)
        self.poll_interval = float(poll_interval)
        self.link_base = link_base
        self._reader: AsyncRestBuildReader | None = None
        self._opened_at = 0.0

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_bkci.triggers.quality_gate.QualityGateTrigger",
            {
                "rules": self.rules,
                "conn_id": self.conn_id,
                "deadline": self.deadline.isoformat(),
                "poll_interval": self.poll_interval,
                "link_base": self.link_base,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_bkci.gates import parse_rules

        rules = parse_rules(self.rules)
        last: dict[str, Any] | None = None
        error: str | None = None
        delay = self.poll_interval
        try:
            # The task read a moment ago and saw "wait": the first read waits a
            # full interval. Firing at once would also race Airflow 3.3's handling
            # of the deferring process's exit (apache/airflow#72716).
            while (left := self._seconds_left()) > 0:
                await asyncio.sleep(min(delay, left))
                try:
                    event = await self._read(rules)
                except ReadUnavailable as exc:
                    error = str(exc)
                    delay = next_delay(delay, self.poll_interval, exc.retry_after)
                    self.log.warning("%s; reading again in %.0f s", exc, delay)
                    continue
                except GateConnectionError as exc:
                    yield _event({"outcome": ERROR, "error": str(exc)})
                    return
                error, delay = None, self.poll_interval
                if event["decision"] != "wait":
                    yield _event({"outcome": DECIDED, **event})
                    return
                last = event["result"]
                self.log.info("%s", event["report"]["headline"])
            yield _event({"outcome": TIMEOUT, "result": last, "error": error})
        finally:
            await self._close()

    def _seconds_left(self) -> float:
        return (self.deadline - datetime.now(timezone.utc)).total_seconds()

    async def _read(self, rules: Sequence[Rule]) -> dict[str, Any]:
        """One evaluation of every rule: decision, result (JSON) and report."""
        from airflow_bkci.gates import evaluate_async, report_dict, result_to_json

        reader = await self._open()
        result = await evaluate_async(rules, reader)
        return {
            "decision": result.decision.value,
            "result": result_to_json(result),
            "report": report_dict(result, self.link_base),
        }

    async def _open(self) -> AsyncRestBuildReader:
        """The reader, opened again when its token is old (a login's token expires)."""
        if self._reader is not None and time.monotonic() - self._opened_at < TOKEN_MAX_AGE:
            return self._reader
        from asgiref.sync import sync_to_async

        from airflow_bkci.gates.access import api_access
        from airflow_bkci.gates.reader import AsyncRestBuildReader

        await self._close()
        # A connection look-up and a login block: off the triggerer's event loop.
        access = await sync_to_async(api_access)(self.conn_id)
        # Making the client loads TLS certificates: off the event loop too.
        self._reader = await sync_to_async(AsyncRestBuildReader)(
            access.base_url, access.token, timeout=access.timeout
        )
        self._opened_at = time.monotonic()
        return self._reader

    async def _close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.aclose()
