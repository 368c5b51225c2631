"""QualityGateTrigger.run(): resumes when the builds end, times out, and outlasts an API outage."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_bkci.gates import (
    EQ,
    BuildQuery,
    BuildSummary,
    GateConnectionError,
    ReadUnavailable,
    latest_status,
    node_status,
    result_from_json,
)
from airflow_bkci.gates.reader import AsyncRestBuildReader
from airflow_bkci.triggers.quality_gate import MAX_BACKOFF, QualityGateTrigger, next_delay
from tests.unit.gates.fakes import PIPELINE, AsyncFakeReader, FakeReader, summary, tree

BASE = "http://airflow-api:8080"


class Builds(AsyncFakeReader):
    """Each read of builds takes the next step: a list of builds, or an error to raise."""

    def __init__(self, *steps: list[BuildSummary] | Exception) -> None:
        super().__init__(FakeReader([], {"b-build-1": tree("RUNNING", {"test": {}})}))
        self.steps = list(steps)
        self.reads = 0

    async def builds(self, query: BuildQuery) -> list[BuildSummary]:
        step = self.steps[min(self.reads, len(self.steps) - 1)]
        self.reads += 1
        if isinstance(step, Exception):
            raise step
        self.reader._builds = step
        return await super().builds(query)


def trigger(*rules: Any, seconds: float = 60.0, poll: float = 0.01) -> QualityGateTrigger:
    return QualityGateTrigger(
        rules=[r.to_dict() for r in rules or [latest_status(PIPELINE, EQ, "SUCCEED")]],
        conn_id="bkci_api",
        deadline=datetime.now(timezone.utc) + timedelta(seconds=seconds),
        poll_interval=poll,
        link_base=BASE,
    )


def events(gate: QualityGateTrigger, reader: Any) -> list[dict[str, Any]]:
    async def opened() -> Any:
        if isinstance(reader, Exception):
            raise reader
        return reader

    gate._open = opened  # type: ignore[method-assign]

    async def collect() -> list[dict[str, Any]]:
        return [json.loads(json.dumps(e.payload)) async for e in gate.run()]

    return asyncio.run(collect())


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The trigger's sleeps, recorded and cut short."""
    slept: list[float] = []
    real = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return slept


def test_it_fires_once_the_build_it_waits_for_ends(pauses: list[float]) -> None:
    # Each read of the gate reads builds once per rule: two rules, two steps per read.
    running, ended = [summary(1, "RUNNING")], [summary(1, "SUCCEED")]
    reader = Builds(running, running, running, running, ended)
    rules = (latest_status(PIPELINE, EQ, "SUCCEED"), node_status(PIPELINE, "test", EQ, "SUCCEED"))
    reader.reader.documents["b-build-1"] = tree("SUCCEED", {"test": {"test.unit": "SUCCEED"}})
    (event,) = events(trigger(*rules, poll=5), reader)
    assert (event["outcome"], event["decision"]) == ("decided", "pass")
    assert event["report"]["quality_check"] == "QUALITY_CHECK_PASS"
    assert result_from_json(event["result"]).decision.value == "pass"
    assert pauses == [5, 5, 5]  # the first read waits too: the task has just read


def test_a_failing_end_is_a_decision_too() -> None:
    (event,) = events(trigger(), Builds([summary(1, "FAILED")]))
    assert (event["outcome"], event["decision"]) == ("decided", "fail")
    assert event["report"]["rules"][0]["actual"] == "FAILED (build #1)"


def test_at_the_deadline_it_fires_with_the_last_result() -> None:
    (event,) = events(trigger(seconds=0.1), Builds([summary(1, "RUNNING")]))
    assert event["outcome"] == "timeout"
    assert event["error"] is None
    result = result_from_json(event["result"])
    assert result.decision.value == "wait"
    assert [b["build_num"] for b in result.waiting_on] == [1]


def test_it_keeps_reading_with_backoff_while_the_api_cannot_answer(pauses: list[float]) -> None:
    down = ReadUnavailable("HTTP 503: store down; reading again later")
    reader = Builds(
        down, down, ReadUnavailable("HTTP 429", retry_after=30), [summary(1, "SUCCEED")]
    )
    (event,) = events(trigger(poll=2), reader)
    assert event["decision"] == "pass"
    assert pauses == [2, 4, 8, 30]  # doubling, and the server's Retry-After when longer


def test_a_deadline_during_an_outage_says_what_failed_last() -> None:
    reader = Builds(ReadUnavailable("HTTP 503: store down"))
    (event,) = events(trigger(seconds=0.1), reader)
    assert event == {"outcome": "timeout", "result": None, "error": "HTTP 503: store down"}


def test_a_connection_that_cannot_be_used_ends_the_wait() -> None:
    refused = GateConnectionError("bkci_api", "its login was refused (HTTP 401)")
    (event,) = events(trigger(), refused)
    assert event["outcome"] == "error"
    assert event["error"].startswith("connection 'bkci_api' cannot reach the BK-CI query API")


@pytest.mark.parametrize(
    ("previous", "poll", "retry_after", "expected"),
    [(5, 5, None, 10), (200, 5, None, MAX_BACKOFF), (5, 5, 60, 60), (5, 5, 9999, MAX_BACKOFF),
     (5, 600, None, 600)],
)  # fmt: skip
def test_backoff(previous: float, poll: float, retry_after: float | None, expected: float) -> None:
    assert next_delay(previous, poll, retry_after) == expected


def test_it_serialises_to_what_makes_it_again() -> None:
    gate = trigger()
    classpath, kwargs = gate.serialize()
    assert classpath == "airflow_bkci.triggers.quality_gate.QualityGateTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert QualityGateTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_it_opens_its_reader_from_the_connection_and_keeps_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = {"conn_type": "http", "host": BASE, "extra": {"token": "jwt-1", "timeout": 7}}
    monkeypatch.setenv("AIRFLOW_CONN_BKCI_API", json.dumps(conn))
    gate = trigger()

    async def open_twice() -> tuple[Any, Any]:
        # The look-up runs through sync_to_async: the event loop goes on meanwhile.
        first, again = await gate._open(), await gate._open()
        await gate._close()
        return first, again

    first, again = asyncio.run(open_twice())
    assert isinstance(first, AsyncRestBuildReader)
    assert again is first  # one reader while its token is fresh
    assert gate._reader is None  # closed with the trigger
