"""The sent log in the store: a key is claimed once, by one of many dispatchers at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_bkci.notify import SentLog
from airflow_bkci.notify.sentlog import route_key
from airflow_bkci.store import Store
from airflow_bkci.store.notices import MAX_KEY_CHARS, NoticeLog
from airflow_bkci.store.tables import NoticeSentRow

pytestmark = pytest.mark.timeout(60)

KEY = "bkci-notice/b-0123456789abcdef0123/failed/0"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'status.db'}"
    url: str = request.getfixturevalue("pg_server")()
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    store.migrate()
    yield store
    store.dispose()


def test_a_key_is_claimed_once_until_it_is_released(store: Store) -> None:
    log = NoticeLog(store)
    assert isinstance(log, SentLog)
    assert log.claim(KEY) and not log.claim(KEY)
    assert KEY in log
    log.release(KEY)
    assert KEY not in log and log.claim(KEY)


def test_rows_say_what_was_sent(store: Store) -> None:
    log = NoticeLog(store)
    log.claim(KEY)
    log.claim(route_key(KEY, "smtp:smtp_default"))
    log.claim("bkci-digest/etl/2025-03-01T10:00:00+00:00/" + KEY)
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(NoticeSentRow.build_id, NoticeSentRow.kind, NoticeSentRow.route).order_by(
                NoticeSentRow.key
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (None, "DIGEST", None),
        ("b-0123456789abcdef0123", "FAILED", None),
        ("b-0123456789abcdef0123", "FAILED", "smtp:smtp_default"),
    ]
    assert log.claimed("b-0123456789abcdef0123") == [KEY, route_key(KEY, "smtp:smtp_default")]


def test_long_keys_stay_distinct(store: Store) -> None:
    log = NoticeLog(store)
    long_a = route_key(KEY, "apprise:chat:" + "a" * 500)
    long_b = route_key(KEY, "apprise:chat:" + "a" * 499 + "b")
    assert log.claim(long_a) and log.claim(long_b) and not log.claim(long_a)
    assert all(len(k) <= MAX_KEY_CHARS for k in log.claimed())


def test_only_one_of_many_dispatchers_claims_each_key(store_url: str, store: Store) -> None:
    stores = [Store(store_url) for _ in range(4)]
    keys = [f"bkci-notice/b-{i:020d}/failed/0" for i in range(25)]
    won: list[list[str]] = [[] for _ in stores]
    start = threading.Barrier(len(stores))

    def claim_all(index: int) -> None:
        log = NoticeLog(stores[index])
        start.wait()
        won[index] = [k for k in keys if log.claim(k)]

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for each in stores:
        each.dispose()

    claimed = [k for each in won for k in each]
    assert sorted(claimed) == keys  # every key once, by exactly one of them


def test_old_keys_are_pruned(store: Store) -> None:
    log = NoticeLog(store)
    log.claim(KEY)
    assert log.prune(timedelta(days=30)) == 0
    assert log.prune(timedelta(seconds=-1)) == 1 and KEY not in log
