"""Build numbers: 1, 2, 3… per pipeline, never duplicated, even with two writers."""

from __future__ import annotations

import threading

from sqlalchemy import select

from airflow_bkci.model import BuildStatus
from airflow_bkci.store import Store
from airflow_bkci.store.tables import BuildRow
from tests.unit.store.builders import build_event, event

S = BuildStatus


def numbers(store: Store) -> dict[tuple[str, str], int]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(BuildRow.dag_id, BuildRow.run_id, BuildRow.build_num))
        return {(dag, run): num for dag, run, num in rows}


def test_builds_are_numbered_per_pipeline_in_order_of_creation(store: Store) -> None:
    store.apply([build_event(S.QUEUE, run="a"), build_event(S.QUEUE, run="b")])
    store.apply([build_event(S.QUEUE, run="x", dag="other"), event(S.QUEUE, run="c")])
    store.apply([build_event(S.RUNNING, run="a", at=1)])  # known build: no new number

    assert numbers(store) == {
        ("etl", "a"): 1,
        ("etl", "b"): 2,
        ("etl", "c"): 3,
        ("other", "x"): 1,
    }


def test_two_writers_at_once_number_without_gaps_or_duplicates(
    store: Store, store_url: str
) -> None:
    """Like two HA schedulers: the same runs, seen by both, in different orders."""
    runs = [f"run-{i:02d}" for i in range(30)]
    writers = [Store(store_url), Store(store_url)]
    orders = [runs, list(reversed(runs))]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(store: Store, order: list[str], source: str) -> None:
        try:
            start.wait()
            for i in range(0, len(order), 3):
                batch = order[i : i + 3]
                store.apply(
                    [build_event(S.QUEUE, run=r, source=source) for r in batch]
                    + [event(S.QUEUE, run=r, source=source) for r in batch]
                    + [build_event(S.QUEUE, run=r, dag="other", source=source) for r in batch]
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(w, o, f"scheduler-{n}"))
        for n, (w, o) in enumerate(zip(writers, orders, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for writer in writers:
        writer.dispose()

    assert errors == []
    got = numbers(store)
    for dag in ("etl", "other"):
        nums = sorted(num for (d, _), num in got.items() if d == dag)
        assert nums == list(range(1, len(runs) + 1)), dag
    assert {run for _, run in got} == set(runs)
    assert len(store.history(build_event(None, run="run-07").node.build_id, "extract")) == 1
