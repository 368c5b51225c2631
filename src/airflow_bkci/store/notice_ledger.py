"""The notification rate limit's books in the status store, shared by every dispatcher.

Two tables: how many messages each pipeline got in each window
(``bkci_notice_window``), and the notices held back for a digest
(``bkci_notice_held``). A message is counted with one conditional upsert
(``INSERT ... ON CONFLICT DO UPDATE SET sent = sent + 1 WHERE sent < limit
RETURNING``): the database decides, so HA schedulers share one limit. Held
notices stay until the digest that carries them went out, so a dispatcher
stopped or killed in a storm loses none; whichever dispatcher runs next sends
the digest.

The policy (windows, recoveries, what a digest is) is
:class:`~airflow_bkci.notify.ratelimit.RateLimiter`'s; this only keeps books.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec
from sqlalchemy import delete, func, select

from airflow_bkci.model.event import utcnow
from airflow_bkci.notify.decide import Notice
from airflow_bkci.notify.ratelimit import HeldNotices
from airflow_bkci.store.outbox import _insert
from airflow_bkci.store.store import Store
from airflow_bkci.store.tables import NoticeHeldRow, NoticeWindowRow

__all__ = ["NoticeLedger"]

H = NoticeHeldRow
W = NoticeWindowRow

_ENDED_GROUPS = 100  # windows handed out per look; the rest at the next one


class NoticeLedger:
    """Counts and held notices of the rate limit, in ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def count(self, pipeline_id: str, window_start: datetime, below: int | None = None) -> bool:
        """Count a message in the window; with ``below``, only while fewer went out. Counted?"""
        table = W.__table__
        with self.store._write() as conn:
            stmt = (
                _insert(conn, W)
                .values(pipeline_id=pipeline_id, window_start=window_start, sent=1)
                .on_conflict_do_update(
                    index_elements=[W.pipeline_id, W.window_start],
                    set_={"sent": table.c.sent + 1},
                    where=None if below is None else table.c.sent < below,
                )
                .returning(W.sent)
            )
            return conn.execute(stmt).first() is not None

    def sent(self, pipeline_id: str, window_start: datetime) -> int:
        """Messages counted for the pipeline in the window."""
        with self.store._read() as conn:
            found = conn.scalar(
                select(W.sent).where(W.pipeline_id == pipeline_id, W.window_start == window_start)
            )
        return int(found or 0)

    def hold(self, notice: Notice, window_start: datetime) -> None:
        """Keep ``notice`` for its pipeline's digest; holding it again changes nothing."""
        with self.store._write() as conn:
            conn.execute(
                _insert(conn, H)
                .values(
                    key=notice.dedupe_key,
                    pipeline_id=notice.pipeline_id,
                    window_start=window_start,
                    notice=msgspec.json.encode(notice).decode(),
                    held_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=[H.key])
            )

    def held_count(self, pipeline_id: str) -> int:
        with self.store._read() as conn:
            found = conn.scalar(select(func.count()).where(H.pipeline_id == pipeline_id))
        return int(found or 0)

    def ended(self, before: datetime, keep: int) -> list[HeldNotices]:
        """Held notices of windows begun before ``before``: one entry per pipeline and window."""
        groups = (
            select(
                H.pipeline_id,
                H.window_start,
                func.count(),
                func.min(H.id),
                func.max(H.id),
            )
            .where(H.window_start < before)
            .group_by(H.pipeline_id, H.window_start)
            .order_by(H.window_start, H.pipeline_id)
            .limit(_ENDED_GROUPS)
        )
        with self.store._read() as conn:
            found = []
            for pipeline_id, window, count, first_id, last_id in conn.execute(groups).all():
                rows = conn.scalars(
                    select(H.notice)
                    .where(
                        H.pipeline_id == pipeline_id,
                        H.window_start == window,
                        H.id <= last_id,  # one held since the count goes in the next digest
                    )
                    .order_by(H.id)
                    .limit(keep)
                ).all()
                found.append(
                    HeldNotices(
                        pipeline_id, window, window, _notices(rows), count, first_id, last_id
                    )
                )
            return found

    def of_pipeline(self, pipeline_id: str, keep: int) -> HeldNotices | None:
        """Every notice of the pipeline held now, whichever window held it."""
        with self.store._read() as conn:
            count, first_id, last_id, first_window, last_window = conn.execute(
                select(
                    func.count(),
                    func.min(H.id),
                    func.max(H.id),
                    func.min(H.window_start),
                    func.max(H.window_start),
                ).where(H.pipeline_id == pipeline_id)
            ).one()
            if not count:
                return None
            rows = conn.scalars(
                select(H.notice)
                .where(H.pipeline_id == pipeline_id, H.id <= last_id)
                .order_by(H.id)
                .limit(keep)
            ).all()
        return HeldNotices(
            pipeline_id, first_window, last_window, _notices(rows), count, first_id, last_id
        )

    def forget(self, held: HeldNotices) -> int:
        """Drop the notices a digest carried (they went out); how many went."""
        with self.store._write() as conn:
            result = conn.execute(
                delete(H).where(
                    H.pipeline_id == held.pipeline_id,
                    H.id.between(held.first_id, held.last_id),
                    H.window_start.between(held.first_window, held.last_window),
                )
            )
            return int(result.rowcount or 0)

    def prune(self, held_before: datetime, windows_before: datetime) -> tuple[int, int]:
        """Forget held notices and window counts older than the cutoffs; how many of each."""
        with self.store._write() as conn:
            held = conn.execute(delete(H).where(H.held_at < held_before)).rowcount or 0
            windows = conn.execute(delete(W).where(W.window_start < windows_before)).rowcount or 0
        return int(held), int(windows)


def _notices(rows: Sequence[str]) -> tuple[Notice, ...]:
    return tuple(msgspec.json.decode(row, type=Notice) for row in rows)
