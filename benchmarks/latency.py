"""Part 3: how long a state takes from Airflow's database to the status store, and to a receiver.

Everything reachable (SQLite store, ingest route), default [bkci] options, plus a
webhook endpoint: examples/webhook_receiver.py in a process of its own, fed by
the scheduler's dispatcher. Run twice: as configured by default (the scheduler
reads its host's spool every 0.1 s), then with ``spool_poll_interval = 0``
(task runners send their records only at exit), the same-run baseline.

(1) For every history row reported by the scheduler-side reconciler (source
``db@``), ``recorded_at - at``: from the moment Airflow recorded the state (its
own scheduled_dttm, queued_dttm, start_date, end_date) until the store committed
it. It includes the reconcile interval (0.5 s), the sink's batching and the store
transaction; backfilled short states count like any other.

(2) End to end: for every task status a received change set carries, the
receiver's clock when the event first arrived minus Airflow's own time of that
state (the history row's ``at``). Grouped by status: those a worker hook
reports (RUNNING, SUCCEED, FAILED) and those only the reconciler sees (the
rest). Whoever reported first, the reconciler or a task runner's record, the
first arrival counts.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Connection, Engine, create_engine, text

from airflow_bkci.devstack import AirflowStack
from airflow_bkci.example_dags import EXPECTED_STATES, FOLDER

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.webhook
from tests.webhook import ReceiverProcess

DAGS = ("bkci_stages", "bkci_retry", "bkci_mapped", "bkci_chains")


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


HOOK_STATUSES = frozenset({"RUNNING", "SUCCEED", "FAILED"})


def part_latency(keep: bool, say: Callable[[str], None], burst: bool = False) -> None:
    """Both configurations, default first; each prints its own figures."""
    for label, settings in (
        ("default: the scheduler reads its host's spool every 0.1 s", {}),
        ("baseline: spool_poll_interval = 0, records sent at exit", {"spool_poll_interval": "0"}),
    ):
        print(f"\n== part 3, {label}")
        _one_configuration(keep, say, burst, settings)


def _one_configuration(
    keep: bool,
    say: Callable[[str], None],
    burst: bool,
    settings: dict[str, str],
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
    for option, value in settings.items():
        st.configure("bkci", option, value)
    for item in filter(None, os.environ.get("BKCI_BENCH_SET", "").split(",")):
        option, value = item.split("=", 1)
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
    print("  (store: of that, until the status store had committed it, p50 and p95)")
    for group, target in (("hook-reported", 300.0), ("reconciler-only", 1000.0)):
        mine = [lag for lag in end_to_end if lag.group == group]
        for status in sorted({lag.status for lag in mine}):
            _line(f"{group} {status}", [lag for lag in mine if lag.status == status], target)
        if mine:
            _line(f"{group} (all)", mine, target)


class _Lag(NamedTuple):
    group: str
    status: str
    total_ms: float
    to_store_ms: float


def _line(label: str, lags: list[_Lag], target: float) -> None:
    totals = [lag.total_ms for lag in lags]
    stored = [lag.to_store_ms for lag in lags]
    p95 = _pct(totals, 0.95)
    verdict = "PASS" if p95 <= target else "FAIL"
    print(
        f"  {label:<28} n {len(lags):>4}  p50 {_pct(totals, 0.5):5.0f}  p95 {p95:5.0f}  "
        f"max {max(totals):5.0f}  store {_pct(stored, 0.5):4.0f}/{_pct(stored, 0.95):4.0f}  "
        f"(target p95 <= {target:.0f}) {verdict}"
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


def _end_to_end(conn: Connection, received_at: dict[str, float]) -> list[_Lag]:
    """One lag for each task status carried by a received change set."""
    history: dict[tuple[str, str, str], list[tuple[datetime, datetime]]] = {}
    for build, node, status, at, recorded_at in conn.execute(
        text("SELECT build_id, node_id, to_status, at, recorded_at FROM bkci_transition")
    ):
        history.setdefault((build, node, status), []).append((_ts(at), _ts(recorded_at)))
    out: list[_Lag] = []
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
                (at, recorded)
                for at, recorded in history.get((build, parts[4], op["value"]), [])
                if at.timestamp() <= arrived
            ]
            if not entered:
                continue
            at, recorded = max(entered)
            group = "hook-reported" if op["value"] in HOOK_STATUSES else "reconciler-only"
            total = (arrived - at.timestamp()) * 1000
            stored = (recorded - at).total_seconds() * 1000
            out.append(_Lag(group, op["value"], total, stored))
    return out


def _ts(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
