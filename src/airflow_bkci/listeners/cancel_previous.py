"""Scheduler-side thread: a newer run of a concurrency group cancels the earlier ones.

Every ``[bkci] cancel_previous_interval`` seconds it reads the queued and
running runs of the DAGs that opted in (a queued run is read too: with
``max_active_runs=1`` a new run stays queued and no hook says it exists),
groups them by their rendered group key, and cancels, through the cancel
service, every run of a group but the newest (by run_after, then id).
Backfills are never touched.

The check is a function of what is in the database, not of events seen, so a
pass that failed (lock timeout, database away, a template that raised) is
simply done again by the next one. It runs on a thread and an engine of its
own, never in the scheduler's transaction, and does bounded work per pass.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, select

from airflow_bkci.cancel.groups import (
    TAG_GROUP_PREFIX,
    TAG_ONE_GROUP,
    ActiveRun,
    GroupKeys,
    GroupTemplateError,
    superseded,
    template_for,
)
from airflow_bkci.cancel.request import CancelRejected, CancelRequest
from airflow_bkci.forksafe import sqlite_section
from airflow_bkci.listeners.background import BackgroundLoop

log = logging.getLogger(__name__)

ACTING_USER = "bkci:cancel-previous"
MAX_RUNS_PER_PASS = 2000


class CancelPrevious(BackgroundLoop):
    """Finds superseded runs and cancels them; ``poll_once`` is one pass."""

    thread_name = "bkci-cancel-previous"

    def __init__(
        self,
        engine: Engine,
        cancel: Callable[[CancelRequest], Any],
        config: list[tuple[str, str]],
        *,
        interval: float = 1.0,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.cancel = cancel
        self.config = config
        self.interval = interval
        self.keys = GroupKeys()
        self._warned: set[str] = set()
        self.canceled = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll_once()
            except Exception:
                log.warning("bkci: cancel-previous pass failed; trying again", exc_info=True)
            self._stop.wait(max(0.1, self.interval - (time.monotonic() - started)))

    def poll_once(self) -> int:
        """One pass; returns how many runs it canceled."""
        with sqlite_section(self.engine.url):
            runs = self._active_runs()
        groups: dict[str, list[ActiveRun]] = defaultdict(list)
        for run, template in runs:
            try:
                groups[self.keys.key(template, run)].append(run)
            except GroupTemplateError as exc:
                self._warn_once(str(exc))
        canceled = 0
        for key, (newest, earlier) in sorted(superseded(groups).items()):
            request = CancelRequest(
                reason=f"superseded by {newest.dag_id}/{newest.run_id} (group {key!r})",
                user=ACTING_USER,
                runs=[(r.dag_id, r.run_id) for r in earlier],
                source="cancel-previous",
            )
            try:
                with sqlite_section(self.engine.url):
                    result = self.cancel(request)
            except CancelRejected as exc:  # e.g. a run deleted meanwhile: next pass sees
                log.info("bkci: cancel-previous for group %r refused: %s", key, exc)
                continue
            changed = len(result.changed)
            canceled += changed
            if changed:
                log.info(
                    "bkci: canceled %d earlier run(s) of group %r, superseded by %s/%s",
                    changed,
                    key,
                    newest.dag_id,
                    newest.run_id,
                )
        self.canceled += canceled
        return canceled

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.error("bkci: cancel-previous: %s; those runs are left alone", message)

    def _active_runs(self) -> list[tuple[ActiveRun, str]]:
        from airflow.models.dag import DagTag
        from airflow.models.dagrun import DagRun

        from airflow_bkci.cancel.marks import cancel_table

        with self.engine.connect() as conn:
            tags: dict[str, list[str]] = defaultdict(list)
            tagged = select(DagTag.dag_id, DagTag.name).where(
                (DagTag.name == TAG_ONE_GROUP) | DagTag.name.startswith(TAG_GROUP_PREFIX)
            )
            for dag_id, name in conn.execute(tagged):
                tags[dag_id].append(name)
            dr = DagRun.__table__.c
            stmt = (
                select(
                    dr.id,
                    dr.dag_id,
                    dr.run_id,
                    dr.state,
                    dr.run_after,
                    dr.run_type,
                    dr.conf,
                    dr.triggering_user_name,
                    dr.logical_date,
                )
                .where(dr.state.in_(("queued", "running")), dr.run_type != "backfill")
                # a run canceled with teardowns left stays running: not a candidate again
                .where(~dr.id.in_(select(cancel_table.c.dag_run_id)))
                .order_by(dr.id.desc())
                .limit(MAX_RUNS_PER_PASS)
            )
            if not self.config:
                if not tags:
                    return []
                stmt = stmt.where(dr.dag_id.in_(sorted(tags)))
            found = []
            for row in conn.execute(stmt):
                template = template_for(row[1], tags.get(row[1], ()), self.config)
                if template is None:
                    continue
                conf = row[6] if isinstance(row[6], dict) else {}
                found.append(
                    (
                        ActiveRun(
                            row[0],
                            row[1],
                            row[2],
                            str(row[3]),
                            row[4],
                            str(row[5]),
                            conf,
                            row[7],
                            row[8],
                        ),
                        template,
                    )
                )
            return found
