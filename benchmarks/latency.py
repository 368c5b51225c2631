"""Part 3: how long a state takes from Airflow's database to the status store, and to a receiver.

Everything reachable (SQLite store, ingest route), default [bkci] options, plus a
webhook endpoint: examples/webhook_receiver.py in a process of its own, fed by
the scheduler's dispatcher.

(1) For every history row reported by the scheduler-side reconciler (source
``db@``), ``recorded_at - at``: from the moment Airflow recorded the state (its
own scheduled_dttm, queued_dttm, start_date, end_date) until the store committed
it. It includes the reconcile interval (1 s), the sink's batching and the store
transaction; backfilled short states count like any other.

(2) End to end: for every task status a received change set carries, the
receiver's clock when the event first arrived minus Airflow's own time of that
state (the history row's ``at``). Grouped by who put it in the store first:
a task runner's hook (``worker@``, sent at the task's exit through the ingest
route) or the reconciler (``db@``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, text

from airflow_bkci.devstack import AirflowStack
from airflow_bkci.example_dags import EXPECTED_STATES, FOLDER

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.webhook
from tests.webhook import ReceiverProcess

DAGS = ("bkci_stages", "bkci_retry", "bkci_mapped", "bkci_chains")


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def part_latency(
    keep: bool,
    say: Callable[[str], None],
    burst: bool = False,
    settings: dict[str, str] | None = None,
) -> None:
    home = Path(tempfile.mkdtemp(prefix="bkci-bench-latency-"))
    receiver = ReceiverProcess(home / "receiver")
    hook = {"conn_type": "bkci_webhook", "host": receiver.url, "password": receiver.secret}
    st = AirflowStack(
        home=home / "airflow",
        dags_folder=FOLDER,
        keep=keep,
        progress=lambda msg: say(f"latency: {msg}"),
        env={"AIRFLOW_CONN_BKCI_BENCH": json.dumps(hook)},
    )
    st.configure("bkci", "webhook_conn_ids", "bkci_bench")
    for option, value in (settings or {}).items():
        st.configure("bkci", option, value)
    try:
        st.start(expect_dags=set(EXPECTED_STATES), timeout=300.0)
        # One DAG at a time: four at once start up to eight cold task runners on
        # two cores, and then Airflow's own scheduler stalls for seconds (its log
        # goes quiet); --burst measures that case too.
        if burst:
            runs = {d: st.trigger(d) for d in DAGS}
            for dag_id, run_id in runs.items():
                say(f"latency: {dag_id} {st.wait_run(dag_id, run_id, timeout=300)}")
        else:
            for dag_id in DAGS:
                run_id = st.trigger(dag_id)
                say(f"latency: {dag_id} {st.wait_run(dag_id, run_id, timeout=300)}")
        engine = create_engine(st.store_url)
        _wait_delivered(engine, receiver)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT to_status, recorded_at, at FROM bkci_transition "
                    "WHERE source LIKE 'db@%'"
                )
            ).all()
            end_to_end = _end_to_end(conn, receiver.state()["received_at"])
        engine.dispose()
    finally:
        st.stop()
        receiver.stop()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    lags = [(_ts(r[1]) - _ts(r[2])) for r in rows]
    seconds = [lag.total_seconds() for lag in lags]
    print()
    print("STATUS LATENCY: Airflow's own time of a state -> committed in the status store, s")
    print(
        f"transitions {len(seconds)}  p50 {_pct(seconds, 0.5):.2f}  p95 "
        f"{_pct(seconds, 0.95):.2f}  max {max(seconds):.2f}  (target: about 2 s)"
    )
    print()
    print("END TO END: Airflow's own time of a task status -> the receiver has the change set, ms")
    for group, target in (("worker hook", 300.0), ("reconciler", 1000.0)):
        for status in sorted({s for g, s, _ in end_to_end if g == group}):
            lags = [ms for g, st_, ms in end_to_end if g == group and st_ == status]
            _line(f"{group} {status}", lags, target)
        every = [ms for g, _, ms in end_to_end if g == group]
        if every:
            _line(f"{group} (all)", every, target)


def _line(label: str, lags: list[float], target: float) -> None:
    p95 = _pct(lags, 0.95)
    verdict = "PASS" if p95 <= target else "FAIL"
    print(
        f"  {label:<28} n {len(lags):>4}  p50 {_pct(lags, 0.5):7.0f}  p95 {p95:7.0f}  "
        f"max {max(lags):7.0f}  (target p95 <= {target:.0f}) {verdict}"
    )


def _wait_delivered(engine: Engine, receiver: ReceiverProcess, timeout: float = 60.0) -> None:
    """Until the receiver has every build at the store's sequence."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            heads = dict(conn.execute(text("SELECT build_id, sequence FROM bkci_build")).all())
        if receiver.sequences() == heads or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def _end_to_end(conn: Connection, received_at: dict[str, float]) -> list[tuple[str, str, float]]:
    """(group, status, ms) for each task status carried by a received change set."""
    history: dict[tuple[str, str, str], list[tuple[datetime, str]]] = {}
    for build, node, status, at, source in conn.execute(
        text("SELECT build_id, node_id, to_status, at, source FROM bkci_transition")
    ):
        history.setdefault((build, node, status), []).append((_ts(at), source))
    out: list[tuple[str, str, float]] = []
    for build, sequence, patch in conn.execute(
        text("SELECT build_id, sequence, patch FROM bkci_change")
    ):
        arrived = received_at.get(f"{build}:{sequence}:changed")
        if arrived is None:
            continue  # sent inside a snapshot instead
        for op in json.loads(patch) if isinstance(patch, str) else patch:
            parts = op["path"].split("/")
            if op["op"] == "remove" or len(parts) != 6 or parts[5] != "status":
                continue  # only /stages/<stage>/tasks/<node>/status
            entered = [
                (at, source)
                for at, source in history.get((build, parts[4], op["value"]), [])
                if at.timestamp() <= arrived
            ]
            if not entered:
                continue
            at, source = max(entered)
            group = "worker hook" if source.startswith(("worker@", "hook@")) else "reconciler"
            out.append((group, op["value"], (arrived - at.timestamp()) * 1000))
    return out


def _ts(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
