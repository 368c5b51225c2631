"""The spool keeps every appended record until it is acked or quarantined, across processes."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_bkci.spool.spool import Spool


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool.db")
    yield s
    s.close()


def _append_many(path: str, worker: int, count: int) -> None:
    s = Spool(path, autocheckpoint=False)  # as task runners open it
    for i in range(count):
        s.append({"worker": worker, "i": i})
    s.close()


def _claim_all(path: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    s = Spool(path)
    got: list[int] = []
    while rows := s.claim(7):
        got.extend(row_id for row_id, _ in rows)
        s.ack(row_id for row_id, _ in rows)
    out.put(got)
    s.close()


def test_append_claim_ack_roundtrip(spool: Spool) -> None:
    spool.append({"a": 1})
    spool.append({"a": 2})
    rows = spool.claim(10)
    assert [json.loads(text) for _, text in rows] == [{"a": 1}, {"a": 2}]
    assert spool.pending_count() == 2
    spool.ack([rows[0][0]])
    assert spool.pending_count() == 1


def test_claimed_rows_are_leased_until_released(spool: Spool) -> None:
    spool.append({"a": 1})
    (row,) = spool.claim(10)
    assert spool.claim(10) == []  # another forwarder sees nothing while leased
    spool.release([row[0]])
    assert spool.claim(10) == [row]


def test_expired_lease_makes_rows_claimable_again(spool: Spool) -> None:
    spool.append({"a": 1})
    first = spool.claim(10, lease=0.0)
    assert spool.claim(10) == first  # the first forwarder died mid-request


def test_quarantine_moves_the_row_aside_with_its_reason(spool: Spool) -> None:
    bad = spool.append_text("{not json")
    spool.append({"ok": True})
    spool.quarantine(bad, "not JSON")
    assert spool.pending_count() == 1
    assert [json.loads(t) for _, t in spool.claim(10)] == [{"ok": True}]
    assert spool.quarantined() == [(bad, "{not json", "not JSON")]


def test_two_processes_append_concurrently_and_nothing_is_lost(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.db")
    Spool(path).close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, w, 300)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = Spool(path)
    records = [json.loads(t) for _, t in s.claim(10_000)]
    assert len(records) == 600
    assert {(r["worker"], r["i"]) for r in records} == {(w, i) for w in (1, 2) for i in range(300)}


def test_two_processes_never_claim_the_same_row(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.db")
    s = Spool(path)
    for i in range(500):
        s.append({"i": i})
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_claim_all, args=(path, out))
    child.start()
    mine: list[int] = []
    while rows := s.claim(5):
        mine.extend(row_id for row_id, _ in rows)
        s.ack(row_id for row_id, _ in rows)
    theirs = out.get(timeout=60)
    child.join(60)
    assert not set(mine) & set(theirs)
    assert len(mine) + len(theirs) == 500
    assert s.pending_count() == 0


def test_a_forked_child_opens_its_own_connection(spool: Spool) -> None:
    spool.append({"parent": True})
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=spool.append, args=({"child": True},))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert sorted(json.loads(t).popitem()[0] for _, t in spool.claim(10)) == ["child", "parent"]


def test_pending_count_counts_leased_rows_and_stops_at_its_limit(spool: Spool) -> None:
    for i in range(5):
        spool.append({"i": i})
    spool.claim(2)  # leased rows are still pending
    assert spool.pending_count() == 5
    assert [spool.pending_count(limit=n) for n in (0, 3, 5, 50)] == [0, 3, 5, 5]
