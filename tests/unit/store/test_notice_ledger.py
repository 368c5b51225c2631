"""The rate limit's books in the store: one limit for every dispatcher, on both databases."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace
from datetime import timedelta

from airflow_bkci.notify.decide import Notice, PipelineWatch
from airflow_bkci.notify.ratelimit import RateLimit, RateLimiter
from airflow_bkci.store import Store
from airflow_bkci.store.notice_ledger import NoticeLedger
from tests.unit.notify.builds import T0, failed_build

LIMIT = RateLimit(messages=3, window=timedelta(hours=1))
WINDOW = T0


def storm(count: int, pipeline: str = "etl_daily") -> list[Notice]:
    watch = PipelineWatch()
    out = []
    for n in range(count):
        verdict = watch.observe(failed_build(n + 1, minute=n))
        assert isinstance(verdict, Notice)
        build = replace(verdict.build, pipeline_id=pipeline, build_id=f"{pipeline}-{n + 1}")
        out.append(replace(verdict, build=build))
    return out


def test_dispatchers_racing_on_one_window_let_through_exactly_the_limit(store_url: str) -> None:
    """Four HA schedulers, each with its own engine, admit 40 failures at once."""
    stores = [Store(store_url) for _ in range(4)]
    stores[0].migrate()
    notices = storm(40)
    start = threading.Barrier(len(stores))
    admitted: list[bool] = []
    errors: list[BaseException] = []

    def dispatch(store: Store, mine: list[Notice]) -> None:
        limiter = RateLimiter(NoticeLedger(store), LIMIT, lambda: T0 + timedelta(minutes=5))
        try:
            start.wait()
            admitted.extend(limiter.admit(notice).send for notice in mine)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=dispatch, args=(store, notices[n::4]))
        for n, store in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        assert admitted.count(True) == 3 and len(admitted) == 40
        ledger = NoticeLedger(stores[0])
        assert ledger.sent("etl_daily", WINDOW) == 3
        assert ledger.held_count("etl_daily") == 37
    finally:
        for store in stores:
            store.dispose()


def test_held_notices_come_back_whole_per_pipeline_and_window(store: Store) -> None:
    ledger = NoticeLedger(store)
    ours, theirs = storm(3), storm(2, pipeline="reports")
    for notice in ours[:2]:
        ledger.hold(notice, WINDOW)
    ledger.hold(ours[2], WINDOW + timedelta(hours=1))
    for notice in theirs:
        ledger.hold(notice, WINDOW)

    ended = ledger.ended(WINDOW + timedelta(hours=1), keep=10)

    assert [(h.pipeline_id, h.first_window, h.count) for h in ended] == [
        ("etl_daily", WINDOW, 2),
        ("reports", WINDOW, 2),
    ]
    assert ended[0].notices == tuple(ours[:2])  # every field, datetimes aware
    everything = ledger.of_pipeline("etl_daily", keep=10)
    assert everything is not None
    assert (everything.first_window, everything.last_window) == (
        WINDOW,
        WINDOW + timedelta(hours=1),
    )
    assert everything.notices == tuple(ours)
    assert ledger.forget(ended[0]) == 2
    assert ledger.held_count("etl_daily") == 1 and ledger.held_count("reports") == 2


def test_a_digest_forgets_only_what_it_carried(store: Store) -> None:
    """A notice held after the digest was read stays for the next one."""
    ledger = NoticeLedger(store)
    first, later = storm(2)
    ledger.hold(first, WINDOW)
    held = ledger.of_pipeline("etl_daily", keep=10)
    assert held is not None
    ledger.hold(later, WINDOW)

    assert ledger.forget(held) == 1
    remaining = ledger.of_pipeline("etl_daily", keep=10)
    assert remaining is not None and remaining.notices == (later,)


def test_old_windows_and_stale_held_notices_are_pruned(store: Store) -> None:
    ledger = NoticeLedger(store)
    ledger.count("etl_daily", WINDOW)
    ledger.count("etl_daily", WINDOW + timedelta(hours=2))
    (notice,) = storm(1)
    ledger.hold(notice, WINDOW)

    held, windows = ledger.prune(
        held_before=T0 - timedelta(days=1), windows_before=WINDOW + timedelta(hours=1)
    )
    assert (held, windows) == (0, 1)  # the notice was held just now: it stays
    assert ledger.sent("etl_daily", WINDOW + timedelta(hours=2)) == 1
    assert ledger.held_count("etl_daily") == 1


def test_a_dispatcher_killed_with_sigkill_loses_no_held_notice(store_url: str, tmp_path) -> None:
    Store(store_url).migrate()
    notices = storm(5)
    ready = tmp_path / "held"
    during = lambda: T0 + timedelta(minutes=5)  # noqa: E731
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the doomed dispatcher
        try:
            limiter = RateLimiter(NoticeLedger(Store(store_url)), LIMIT, during)
            sends = [limiter.admit(notice).send for notice in notices]
            # Written aside and renamed: the parent must never read a half-written file.
            ready.with_suffix(".tmp").write_text(repr(sends))
            ready.with_suffix(".tmp").rename(ready)
            time.sleep(60)
        finally:
            os._exit(1)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert ready.read_text() == repr([True, True, True, False, False])

    store = Store(store_url)
    try:
        after = lambda: T0 + timedelta(hours=1, minutes=1)  # noqa: E731
        [digest] = RateLimiter(NoticeLedger(store), LIMIT, after).due()
        assert digest.notices == tuple(notices[3:])
    finally:
        store.dispose()
