"""The statements of one cancel transaction, all set-based, none of them per run.

:class:`CancelWrites` works on one open connection inside the caller's
transaction; it never commits. Order matters and is the caller's: lock, then
task markers before the task updates they describe, then notes, audit rows
and run markers (which read the runs' states before they end), then the runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, extract, func, insert, literal, or_, select, update

from airflow_bkci.cancel.marks import cancel_table, cancel_task_table
from airflow_bkci.cancel.plan import Plan, Target, by_dag, chunks
from airflow_bkci.cancel.request import BuildResult

RUNNING_LIKE = ("running", "deferred", "up_for_reschedule", "awaiting_input")
"""Task states with a live process or trigger: they fail, as in Airflow's mark-failed."""
FINISHED = ("success", "failed", "skipped", "upstream_failed", "removed")
AUDIT_EVENT = "bkci_cancel"
MAX_NOTE = 1000


def task_key(task_id: str, map_index: int) -> str:
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


class CancelWrites:
    """One cancel's statements on ``conn``: ``cancel_id`` and ``now`` stamp every row."""

    def __init__(
        self,
        conn: Connection,
        plan: Plan,
        cancel_id: str,
        now: datetime,
        *,
        chunk: int,
    ) -> None:
        from airflow.models.dagrun import DagRun, DagRunNote
        from airflow.models.log import Log
        from airflow.models.taskinstance import TaskInstance

        self.conn = conn
        self.plan = plan
        self.request = plan.request
        self.cancel_id = cancel_id
        self.now = now
        self.chunk = chunk
        self.is_sqlite = conn.dialect.name == "sqlite"
        self.dag_run = DagRun.__table__
        self.task_instance = TaskInstance.__table__
        self.note_table = DagRunNote.__table__
        self.log_table = Log.__table__

    def set_lock_timeout(self, seconds: float) -> None:
        """PostgreSQL: bound every row-lock wait of this transaction (SQLite: the busy timeout)."""
        if not self.is_sqlite:
            ms = max(1, int(seconds * 1000))
            self.conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{ms}ms'")

    def lock(self, batch: Sequence[Target]) -> dict[int, tuple[str, int]]:
        """Lock the runs in id order; {id: (state, clear_number)} as they are now."""
        dr = self.dag_run.c
        locked: dict[int, tuple[str, int]] = {}
        for part in chunks(batch, self.chunk):
            stmt = (
                select(dr.id, dr.state, dr.clear_number)
                .where(dr.id.in_([t.id for t in part]))
                .order_by(dr.id)
                .with_for_update(of=self.dag_run)
            )
            locked.update({row[0]: (str(row[1]), row[2] or 0) for row in self.conn.execute(stmt)})
        return locked

    def already_marked(self, locked: dict[int, tuple[str, int]]) -> set[int]:
        """Runs canceled before in their current clear."""
        c = cancel_table.c
        marked: set[int] = set()
        for part in chunks(sorted(locked), self.chunk):
            stmt = select(c.dag_run_id, c.clear_number).where(c.dag_run_id.in_(list(part)))
            marked.update(run for run, clear in self.conn.execute(stmt) if clear == locked[run][1])
        return marked

    def change_tasks(self, dag_id: str, part: list[Target]) -> set[int]:
        """Task markers, then failed or skipped, for one DAG's chunk.

        Returns the runs that still have teardowns to run.
        """
        ti, dr = self.task_instance.c, self.dag_run.c
        teardowns = sorted(self.plan.teardowns.get(dag_id, frozenset()))
        unfinished = or_(ti.state.is_(None), ti.state.not_in(FINISHED))
        of_chunk = and_(ti.dag_id == dag_id, ti.run_id.in_([t.run_id for t in part]))
        not_teardown = ti.task_id.not_in(teardowns) if teardowns else literal(True)
        new_state = case((ti.state.in_(RUNNING_LIKE), literal("failed")), else_=literal("skipped"))
        self.conn.execute(
            insert(cancel_task_table).from_select(
                [
                    "cancel_id",
                    "dag_run_id",
                    "task_id",
                    "map_index",
                    "try_number",
                    "dag_id",
                    "run_id",
                    "prior_state",
                    "new_state",
                ],
                select(
                    literal(self.cancel_id),
                    dr.id,
                    ti.task_id,
                    ti.map_index,
                    ti.try_number,
                    ti.dag_id,
                    ti.run_id,
                    ti.state,
                    new_state,
                )
                .select_from(
                    self.task_instance.join(
                        self.dag_run, and_(dr.dag_id == ti.dag_id, dr.run_id == ti.run_id)
                    )
                )
                .where(of_chunk, unfinished, not_teardown),
            )
        )
        ended = {
            "start_date": func.coalesce(ti.start_date, self.now),
            "end_date": func.coalesce(ti.end_date, self.now),
            "duration": self._seconds_since(ti.start_date),
            "updated_at": self.now,  # the ORM sets it, set-based updates must say it
        }
        self.conn.execute(
            update(self.task_instance)
            .where(of_chunk, ti.state.in_(RUNNING_LIKE), not_teardown)
            .values(state="failed", **ended)
        )
        self.conn.execute(
            update(self.task_instance)
            .where(of_chunk, or_(ti.state.is_(None), ti.state.not_in(FINISHED + RUNNING_LIKE)))
            .where(not_teardown)
            .values(state="skipped", **ended)
        )
        if not teardowns:
            return set()
        waiting = (
            select(ti.run_id).distinct().where(of_chunk, unfinished, ti.task_id.in_(teardowns))
        )
        left = set(self.conn.scalars(waiting))
        return {t.id for t in part if t.run_id in left}

    def _seconds_since(self, start: Any) -> Any:
        """SQL for (now - start) in seconds, 0 when the task never started."""
        from airflow.utils.sqlalchemy import UtcDateTime

        bound = literal(self.now, UtcDateTime)
        if self.is_sqlite:
            elapsed = (func.julianday(bound) - func.julianday(start)) * 86400.0
        else:
            elapsed = extract("epoch", bound - start)
        return case((start.is_(None), 0.0), else_=elapsed)

    def note(self, run_ids: list[int]) -> None:
        """Append one line to each run's note; what was there stays (cut only past 1,000 chars)."""
        note, dr = self.note_table, self.dag_run.c
        request = self.request
        at = f"{self.now:%Y-%m-%d %H:%M:%S} UTC"
        line = f"[bkci] canceled by {request.user} at {at}: {request.reason}"[:900]
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert  # type: ignore[assignment]
        stmt = upsert(note).from_select(
            ["dag_run_id", "user_id", "content", "created_at", "updated_at"],
            select(
                dr.id,
                literal(request.user[:128]),
                literal(line),
                literal(self.now, note.c.created_at.type),
                literal(self.now, note.c.updated_at.type),
            ).where(dr.id.in_(run_ids)),
        )
        old = note.c.content
        appended = case(
            (or_(old.is_(None), old == ""), stmt.excluded.content),
            else_=func.substr(old, 1, MAX_NOTE - len(line) - 1)
            + literal("\n")
            + stmt.excluded.content,
        )
        self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[note.c.dag_run_id],
                set_={"content": appended, "updated_at": stmt.excluded.updated_at},
            )
        )

    def audit(self, run_ids: list[int]) -> None:
        """One row per run in Airflow's own audit log."""
        dr, log = self.dag_run.c, self.log_table
        extra = json.dumps(
            {
                "cancel_id": self.cancel_id,
                "reason": self.request.reason,
                "source": self.request.source,
                "tool": "airflow-bkci",
            }
        )
        columns = [
            "dttm",
            "dag_id",
            "run_id",
            "event",
            "logical_date",
            "owner",
            "owner_display_name",
            "extra",
        ]
        self.conn.execute(
            insert(log).from_select(
                columns,
                select(
                    literal(self.now, log.c.dttm.type),
                    dr.dag_id,
                    dr.run_id,
                    literal(AUDIT_EVENT),
                    dr.logical_date,
                    literal(self.request.user),
                    literal(self.request.user),
                    literal(extra),
                ).where(dr.id.in_(run_ids)),
            )
        )

    def mark(self, run_ids: list[int]) -> None:
        """The durable run markers, with the state each run had."""
        dr = self.dag_run.c
        self.conn.execute(
            insert(cancel_table).from_select(
                [
                    "dag_run_id",
                    "clear_number",
                    "dag_id",
                    "run_id",
                    "cancel_id",
                    "reason",
                    "canceled_by",
                    "canceled_at",
                    "prior_state",
                ],
                select(
                    dr.id,
                    func.coalesce(dr.clear_number, 0),
                    dr.dag_id,
                    dr.run_id,
                    literal(self.cancel_id),
                    literal(self.request.reason),
                    literal(self.request.user),
                    literal(self.now, cancel_table.c.canceled_at.type),
                    dr.state,
                ).where(dr.id.in_(run_ids)),
            )
        )

    def end_runs(self, run_ids: list[int]) -> None:
        """Runs with no teardown left end failed now (with teardowns, Airflow ends them later)."""
        dr = self.dag_run.c
        self.conn.execute(
            update(self.dag_run)
            .where(dr.id.in_(run_ids))
            .values(state="failed", end_date=self.now, updated_at=self.now)
        )

    def fill_tasks(self, results: dict[int, BuildResult], live: list[Target]) -> None:
        """Each result's lists: tasks failed, skipped, and teardowns left to run."""
        c, ti = cancel_task_table.c, self.task_instance.c
        stmt = select(c.dag_run_id, c.task_id, c.map_index, c.new_state).where(
            c.cancel_id == self.cancel_id
        )
        for run_id, task_id, map_index, new_state in self.conn.execute(stmt):
            result = results.get(run_id)
            if result is not None:
                target = result.failed if new_state == "failed" else result.skipped
                target.append(task_key(task_id, map_index))
        for dag_id, part in by_dag(live, self.chunk):
            ids = sorted(self.plan.teardowns.get(dag_id, frozenset()))
            if not ids:
                continue
            by_run = {t.run_id: t.id for t in part}
            pending = select(ti.run_id, ti.task_id, ti.map_index).where(
                ti.dag_id == dag_id,
                ti.run_id.in_(list(by_run)),
                ti.task_id.in_(ids),
                or_(ti.state.is_(None), ti.state.not_in(FINISHED)),
            )
            for run_id, task_id, map_index in self.conn.execute(pending):
                results[by_run[run_id]].teardowns.append(task_key(task_id, map_index))
        for result in results.values():
            result.failed.sort()
            result.skipped.sort()
            result.teardowns.sort()
