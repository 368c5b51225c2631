"""Reads the truth from Airflow's own database and waits for the store to agree."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import create_engine, text

from airflow_bkci.model.event import build_id_for
from airflow_bkci.model.mapping import map_run_state, map_task_state
from airflow_bkci.store import Store


@dataclass(frozen=True)
class TaskTruth:
    node_id: str
    state: str | None
    try_number: int
    start_date: datetime | None
    end_date: datetime | None

    @property
    def expected_status(self) -> str:
        mapped = map_task_state(self.state)
        assert mapped.status is not None
        return mapped.status.value


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        from datetime import timezone

        value = value.replace(tzinfo=timezone.utc)
    return value


def airflow_truth(db_url: str, dag_id: str, run_id: str) -> tuple[str, list[TaskTruth]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            run_state = conn.execute(
                text("SELECT state FROM dag_run WHERE dag_id=:d AND run_id=:r"),
                {"d": dag_id, "r": run_id},
            ).scalar_one()
            rows = conn.execute(
                text(
                    "SELECT task_id, map_index, state, try_number, start_date, end_date "
                    "FROM task_instance WHERE dag_id=:d AND run_id=:r AND "
                    "(state IS NULL OR state <> 'removed')"
                ),
                {"d": dag_id, "r": run_id},
            ).all()
    finally:
        engine.dispose()
    tasks = [
        TaskTruth(
            node_id=r[0] if r[1] < 0 else f"{r[0]}[{r[1]}]",
            state=r[2],
            try_number=max(r[3] or 0, 1),
            start_date=_aware(r[4]),
            end_date=_aware(r[5]),
        )
        for r in rows
    ]
    return run_state, tasks


def tasks_of(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {tid: t for stage in tree["stages"].values() for tid, t in stage["tasks"].items()}


def mismatches(tree: dict[str, Any] | None, run_state: str, truth: list[TaskTruth]) -> list[str]:
    """Everything in which the stored tree disagrees with Airflow's database."""
    if tree is None:
        return ["build missing from the store"]
    problems = []
    expected = map_run_state(run_state).status
    if expected is not None and tree["status"] != expected.value:
        problems.append(f"build status {tree['status']} != {expected.value}")
    stored = tasks_of(tree)
    if set(stored) != {t.node_id for t in truth}:
        problems.append(f"task set {sorted(stored)} != {sorted(t.node_id for t in truth)}")
    for t in truth:
        node = stored.get(t.node_id)
        if node is None:
            continue
        if node["status"] != t.expected_status:
            problems.append(f"{t.node_id}: {node['status']} != {t.expected_status} ({t.state})")
        if node["try_number"] != t.try_number:
            problems.append(f"{t.node_id}: try {node['try_number']} != {t.try_number}")
        for name, value in (("started_at", t.start_date), ("ended_at", t.end_date)):
            if _aware(node[name]) != value:
                problems.append(f"{t.node_id}: {name} {node[name]} != {value}")
    return problems


def wait_agreement(
    store: Store, db_url: str, dag_id: str, run_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    """The stored tree once it matches Airflow's database; fails with the differences."""
    deadline = time.monotonic() + timeout
    while True:
        run_state, truth = airflow_truth(db_url, dag_id, run_id)
        tree = store.build_tree(build_id_for(dag_id, run_id))
        problems = mismatches(tree, run_state, truth)
        if not problems:
            assert tree is not None
            return tree
        if time.monotonic() > deadline:
            raise AssertionError(f"{dag_id}/{run_id}: store disagrees with Airflow: {problems}")
        time.sleep(0.5)


RETRY_STEPS = [
    (1, "QUEUE"),
    (1, "PREPARE_ENV"),
    (1, "RUNNING"),
    (1, "RETRY"),
    (2, "QUEUE"),
    (2, "PREPARE_ENV"),
    (2, "RUNNING"),
    (2, "SUCCEED"),
]
"""The history of bkci_retry's ``flaky`` task: one failed try, then success."""


def steps(store: Store, build_id: str, node_id: str) -> list[tuple[int, str]]:
    """(try, status) of a node's history, without the 'pending' wait before a try."""
    return [
        (t.try_number, t.to_status.value)
        for t in store.history(build_id, node_id)
        if t.detail != "pending"
    ]


def tried_times(
    db_url: str, dag_id: str, run_id: str, task_id: str, try_number: int
) -> tuple[datetime | None, datetime | None]:
    """(start, end) of an earlier try, from Airflow's task_instance_history."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT start_date, end_date FROM task_instance_history WHERE dag_id=:d "
                    "AND run_id=:r AND task_id=:t AND try_number=:n"
                ),
                {"d": dag_id, "r": run_id, "t": task_id, "n": try_number},
            ).one()
    finally:
        engine.dispose()
    return _aware(row[0]), _aware(row[1])
