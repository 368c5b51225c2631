"""Rate limit and digest: a pipeline that keeps failing sends a few messages, then one digest.

The limiter keeps its books in a status store (SQLite here; both databases and
several limiters at once in tests/unit/store/test_notice_ledger.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from airflow_bkci.exceptions import ConfigError
from airflow_bkci.notify.decide import Notice, PipelineWatch
from airflow_bkci.notify.ratelimit import MAX_DIGEST_NOTICES, Digest, RateLimit, RateLimiter
from airflow_bkci.store import Store
from airflow_bkci.store.notice_ledger import NoticeLedger
from tests.unit.notify.builds import T0, failed_build, good_build


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


Limiters = Callable[..., RateLimiter]


@pytest.fixture
def limiter_for(store: Store) -> Limiters:
    """Limiters on one store: as many as a test wants, like dispatchers of HA schedulers."""

    def make(limit: RateLimit, clock: Callable[[], datetime]) -> RateLimiter:
        return RateLimiter(NoticeLedger(store), limit, clock)

    return make


def sent_all(limiter: RateLimiter) -> list[Digest]:
    """The due digests, each then reported sent, as the notification channel does."""
    due = limiter.due()
    for digest in due:
        limiter.sent(digest)
    return due


def failures(count: int, start_minute: float = 0) -> list[Notice]:
    watch = PipelineWatch()
    out = []
    for n in range(count):
        verdict = watch.observe(failed_build(n + 1, minute=start_minute + n))
        assert isinstance(verdict, Notice)
        out.append(verdict)
    return out


def test_a_storm_of_50_failures_sends_three_then_one_digest(limiter_for: Limiters) -> None:
    clock = Clock(T0)
    limiter = limiter_for(RateLimit(messages=3, window=timedelta(hours=1)), clock)
    storm = failures(50)
    sent = []
    for minute, notice in enumerate(storm):
        clock.now = T0 + timedelta(minutes=minute)
        admission = limiter.admit(notice)
        assert admission.digest is None
        if admission.send:
            sent.append(notice.build.build_num)
        assert limiter.due() == []  # nothing until the window is over
    assert sent == [1, 2, 3]
    assert limiter.held("etl_daily") == 47

    clock.now = T0 + timedelta(minutes=59, seconds=59)
    assert limiter.due() == []
    clock.now = T0 + timedelta(hours=1)
    [digest] = limiter.due()
    assert digest.pipeline_id == "etl_daily"
    assert (digest.window_start, digest.window_end) == (T0, T0 + timedelta(hours=1))
    assert digest.held == 47 and digest.omitted == 0
    assert [n.build.build_num for n in digest.notices] == list(range(4, 51))
    assert limiter.due() == [digest]  # offered again until it went out
    limiter.sent(digest)
    assert limiter.due() == [] and limiter.held("etl_daily") == 0


def test_a_storm_across_windows_loses_nothing_and_never_exceeds_the_limit(
    limiter_for: Limiters,
) -> None:
    clock = Clock(T0)
    limiter = limiter_for(RateLimit(messages=3, window=timedelta(hours=1)), clock)
    per_window: Counter[datetime] = Counter()
    delivered: list[int] = []
    storm = failures(50, start_minute=30)
    for minute in range(30, 200):
        clock.now = T0 + timedelta(minutes=minute)
        window = limiter.limit.window_start(clock.now)
        for digest in sent_all(limiter):
            per_window[window] += 1
            delivered += [n.build.build_num or 0 for n in digest.notices]
        if minute - 30 < len(storm):
            notice = storm[minute - 30]
            if limiter.admit(notice).send:
                per_window[window] += 1
                delivered.append(notice.build.build_num or 0)
    assert sorted(delivered) == list(range(1, 51))  # every failure once, none twice
    assert max(per_window.values()) <= 3  # digests count against the limit too
    assert sum(per_window.values()) == 7  # 3 + digest, digest + 2 more, then one last digest


def test_a_recovery_is_never_held_and_takes_the_digest_with_it(limiter_for: Limiters) -> None:
    clock = Clock(T0)
    limiter = limiter_for(RateLimit(messages=2, window=timedelta(hours=1)), clock)
    watch = PipelineWatch()
    admissions = []
    for minute in range(5):
        verdict = watch.observe(failed_build(minute + 1, minute=minute))
        assert isinstance(verdict, Notice)
        admissions.append(limiter.admit(verdict))
    recovered = watch.observe(good_build(6, minute=10))
    assert isinstance(recovered, Notice)
    clock.now = T0 + timedelta(minutes=10)
    admission = limiter.admit(recovered)
    assert [a.send for a in admissions] == [True, True, False, False, False]
    assert admission.send
    assert admission.digest is not None
    assert [n.build.build_num for n in admission.digest.notices] == [3, 4, 5]
    limiter.sent(admission.digest)
    assert limiter.held("etl_daily") == 0
    clock.now = T0 + timedelta(hours=2)
    assert limiter.due() == []  # the flushed notices are not sent twice


def test_a_recovery_digest_that_did_not_go_out_comes_due_with_its_window(
    limiter_for: Limiters,
) -> None:
    clock = Clock(T0)
    limiter = limiter_for(RateLimit(messages=1, window=timedelta(hours=1)), clock)
    watch = PipelineWatch()
    for minute in range(3):
        verdict = watch.observe(failed_build(minute + 1, minute=minute))
        assert isinstance(verdict, Notice)
        limiter.admit(verdict)
    recovered = watch.observe(good_build(4, minute=10))
    assert isinstance(recovered, Notice)
    early = limiter.admit(recovered).digest
    assert early is not None  # its delivery fails: nobody calls sent()

    clock.now = T0 + timedelta(hours=1)
    [digest] = limiter.due()
    assert [n.build.build_num for n in digest.notices] == [2, 3]
    assert digest.dedupe_key == early.dedupe_key  # one claim in the sent log for both


def test_two_digests_of_one_window_have_different_keys(limiter_for: Limiters) -> None:
    clock = Clock(T0)
    limiter = limiter_for(RateLimit(messages=1), clock)
    watch = PipelineWatch()
    docs = [failed_build(1, minute=1), failed_build(2, minute=2), good_build(3, minute=3)]
    docs += [failed_build(4, minute=4), failed_build(5, minute=5)]
    flushed = []
    for doc in docs:
        verdict = watch.observe(doc)
        assert isinstance(verdict, Notice)
        admission = limiter.admit(verdict)
        if admission.digest:
            flushed.append(admission.digest)
            limiter.sent(admission.digest)
    clock.now = T0 + timedelta(hours=1)
    flushed += sent_all(limiter)
    assert [[n.build.build_num for n in d.notices] for d in flushed] == [[2], [4, 5]]
    assert len({d.dedupe_key for d in flushed}) == 2


def test_held_notices_outlive_the_limiter_and_the_count_is_shared(
    limiter_for: Limiters,
) -> None:
    """A scheduler killed mid-storm: a new one (or an HA peer) sends its digest."""
    clock = Clock(T0 + timedelta(minutes=1))
    limit = RateLimit(messages=2, window=timedelta(hours=1))
    first = limiter_for(limit, clock)
    storm = failures(6, start_minute=1)
    assert [first.admit(n).send for n in storm[:3]] == [True, True, False]
    del first  # gone, as with SIGKILL: nothing of it in memory

    second = limiter_for(limit, clock)
    assert second.admit(storm[3]).send is False  # the window's count survived
    assert second.held("etl_daily") == 2
    clock.now = T0 + timedelta(hours=1)
    [digest] = sent_all(second)
    assert [n.build.build_num for n in digest.notices] == [3, 4]


def test_pipelines_are_limited_separately(limiter_for: Limiters) -> None:
    limiter = limiter_for(RateLimit(messages=1), Clock(T0))
    [ours] = failures(1)
    other = replace(ours, build=replace(ours.build, pipeline_id="reports"))
    assert limiter.admit(ours).send
    assert limiter.admit(other).send
    assert not limiter.admit(replace(ours, build=replace(ours.build, build_id="b-2"))).send


def test_windows_are_aligned_so_every_process_agrees() -> None:
    limit = RateLimit(window=timedelta(hours=1))
    assert limit.window_start(T0 + timedelta(minutes=59)) == T0
    assert limit.window_start(T0 + timedelta(minutes=61)) == T0 + timedelta(hours=1)


def test_a_digest_keeps_memory_bounded_and_counts_the_rest(limiter_for: Limiters) -> None:
    clock = Clock(T0)
    limiter = limiter_for(RateLimit(messages=1), clock)
    [notice] = failures(1)
    storm = [replace(notice, build=replace(notice.build, build_id=f"b-{n}")) for n in range(251)]
    for each in storm:
        limiter.admit(each)
    limiter.admit(storm[5])  # held once, however often it is admitted again
    clock.now = T0 + timedelta(hours=1)
    [digest] = limiter.due()
    assert (len(digest.notices), digest.held, digest.omitted) == (MAX_DIGEST_NOTICES, 250, 50)


@pytest.mark.parametrize(
    ("limit", "option"),
    [
        ({"messages": 0}, "notify_rate_limit"),
        ({"window": timedelta(0)}, "notify_rate_window"),
    ],
)
def test_unusable_limits_name_the_option(limit: dict[str, object], option: str) -> None:
    with pytest.raises(ConfigError, match=f"\\[bkci\\] {option}"):
        RateLimit(**limit)  # type: ignore[arg-type]
