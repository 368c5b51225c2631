"""The notification sent log in the status store: a key is sent at most once, by anyone.

Every dispatcher (HA schedulers, API server workers, a relay, and each of
them again after a restart) claims a notice's dedupe key here before it
sends, with one ``INSERT ... ON CONFLICT DO NOTHING``: the database decides
who inserted the row, so two of them can never both send it. A failed
delivery deletes the key again, so the dispatcher's retry of the lane may
send it then.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import delete, select

from airflow_bkci.model.event import utcnow
from airflow_bkci.notify.sentlog import ROUTE_SEPARATOR
from airflow_bkci.store.outbox import _insert
from airflow_bkci.store.store import Store
from airflow_bkci.store.tables import NoticeSentRow

__all__ = ["MAX_KEY_CHARS", "NoticeLog"]

N = NoticeSentRow

MAX_KEY_CHARS = 400
"""Longer keys (a long route target) are stored as a prefix and a SHA-256 of the whole key."""

_NOTICE_PREFIX = "bkci-notice/"
_DIGEST_PREFIX = "bkci-digest/"


class NoticeLog:
    """A :class:`~airflow_bkci.notify.sentlog.SentLog` kept in the status store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def claim(self, key: str) -> bool:
        """Record ``key``; True when this call inserted it (the caller sends)."""
        build_id, kind, route = _describe(key)
        with self.store._write() as conn:
            result = conn.execute(
                _insert(conn, N)
                .values(
                    key=_stored(key),
                    build_id=build_id,
                    kind=kind,
                    route=route,
                    sent_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=[N.key])
                # RETURNING rather than rowcount: the row comes back only to the
                # inserter, the same way on SQLite and every PostgreSQL driver.
                .returning(N.key)
            )
            return result.first() is not None

    def release(self, key: str) -> None:
        """Forget ``key``: its delivery failed and a later attempt may send it."""
        with self.store._write() as conn:
            conn.execute(delete(N).where(N.key == _stored(key)))

    def claimed(self, build_id: str | None = None) -> list[str]:
        """Claimed keys (of one build), oldest first: for operators and tests."""
        stmt = select(N.key).order_by(N.sent_at, N.key)
        if build_id is not None:
            stmt = stmt.where(N.build_id == build_id)
        with self.store._read() as conn:
            return [str(key) for key in conn.scalars(stmt)]

    def prune(self, older_than: timedelta) -> int:
        """Delete keys claimed more than ``older_than`` ago; how many went."""
        cutoff = utcnow() - older_than
        with self.store._write() as conn:
            return int(conn.execute(delete(N).where(N.sent_at < cutoff)).rowcount or 0)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        with self.store._read() as conn:
            found = conn.execute(select(N.key).where(N.key == _stored(key))).first()
        return found is not None


def _stored(key: str) -> str:
    if len(key) <= MAX_KEY_CHARS:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: MAX_KEY_CHARS - len(digest) - 1]}#{digest}"


def _describe(key: str) -> tuple[str | None, str, str | None]:
    """(build id, kind, route) of a key, for people reading the table."""
    head, _, route = key.partition(ROUTE_SEPARATOR)
    route_name = route[:250] or None
    if head.startswith(_NOTICE_PREFIX):
        parts = head.split("/")
        if len(parts) == 4:
            return parts[1][:64], parts[2].upper()[:20], route_name
    if head.startswith(_DIGEST_PREFIX):
        return None, "DIGEST", route_name
    return None, "OTHER", route_name
