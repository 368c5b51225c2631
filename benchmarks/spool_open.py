"""What a task runner's first spool access costs in a freshly forked process.

A task runner is forked from a process that has imported Airflow and this
plugin; its ``on_starting`` hook opens the SQLite spool. This forks that
situation N times (the parent imports ``airflow.sdk`` and our worker listener,
and has made the spool file once) and measures, in each child, CPU time of the
calling thread (``time.thread_time_ns``) and minor page faults
(``getrusage(RUSAGE_THREAD)``) of:

- ``spool open``: ``Spool(path, autocheckpoint=False)``, what ``on_starting`` does;
- ``spool append``: the first record appended after that open;
- ``sqlite :memory:``: ``sqlite3.connect(":memory:")`` alone, no file at all;
- ``file open`` and ``file append``: ``os.open(O_APPEND)`` and one JSON line written,
  the cheapest durable local append there is: the baseline of this run.

Each case runs in its own fresh child, alternated, so drift of the machine
touches all of them alike. Then, in this process, the CPU of a task runner's exit
that finds the receiver down (``Forwarder.send_now``: the probe, the backoff
write and the warning with the backlog's size) with 10, 10,000 and 100,000 rows
spooled. Run: ``.venv/bin/python benchmarks/spool_open.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

RECORD = {
    "dag_id": "bkci_chains",
    "run_id": "manual__2026-12-02T00:00:00+00:00",
    "task_id": "chain_1.step_01",
    "map_index": -1,
    "try_number": 1,
    "state": "running",
    "hostname": "worker-1",
}


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def measured(action: Callable[[], object]) -> tuple[float, int]:
    """(CPU ms, minor faults) of ``action()`` on this thread."""
    faults0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    cpu0 = time.thread_time_ns()
    action()
    cpu = (time.thread_time_ns() - cpu0) / 1e6
    return cpu, resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults0


def case_spool(path: Path) -> list[tuple[str, float, int]]:
    from airflow_bkci.spool.spool import Spool

    holder: list[Spool] = []
    opened = measured(lambda: holder.append(Spool(path, autocheckpoint=False)))
    appended = measured(lambda: holder[0].append(RECORD))
    return [("spool open", *opened), ("spool append", *appended)]


def case_memory(_: Path) -> list[tuple[str, float, int]]:
    return [("sqlite :memory:", *measured(lambda: sqlite3.connect(":memory:")))]


def case_file(path: Path) -> list[tuple[str, float, int]]:
    fds: list[int] = []
    journal = path.with_suffix(".jsonl")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    opened = measured(lambda: fds.append(os.open(journal, flags, 0o600)))
    line = lambda: os.write(fds[0], (json.dumps(RECORD, separators=(",", ":")) + "\n").encode())  # noqa: E731
    return [("file open", *opened), ("file append", *measured(line))]


CASES = (case_spool, case_memory, case_file)


def in_child(case: Callable[[Path], list[tuple[str, float, int]]], path: Path) -> list[str]:
    """``case`` run in a freshly forked child; its result lines."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            text = "\n".join(f"{name}\t{cpu}\t{faults}" for name, cpu, faults in case(path))
            os.write(write, text.encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode().splitlines()


HOLDER = """
import sys, time
from airflow_bkci.spool.spool import Spool
spool = Spool(sys.argv[1])
spool.has_claimable()
print("open", flush=True)
time.sleep(3600)
"""


def run_phase(path: Path, forks: int) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    cpu: dict[str, list[float]] = {}
    faults: dict[str, list[int]] = {}
    for _ in range(forks):
        for case in CASES:
            for line in in_child(case, path):
                name, ms, n = line.split("\t")
                cpu.setdefault(name, []).append(float(ms))
                faults.setdefault(name, []).append(int(n))
    return cpu, faults


def report(title: str, cpu: dict[str, list[float]], faults: dict[str, list[int]]) -> None:
    print(f"\n{title}")
    print(f"{'case':<16} {'cpu p50':>8} {'cpu p99':>8} {'faults':>7}")
    for name, values in cpu.items():
        print(
            f"{name:<16} {pct(values, 50):8.3f} {pct(values, 99):8.3f} {pct(faults[name], 50):7d}"
        )
    base = pct(cpu["file open"], 50) + pct(cpu["file append"], 50)
    spool = pct(cpu["spool open"], 50) + pct(cpu["spool append"], 50)
    print(
        f"ratio p50 (spool open + first append) / (file open + first line): {spool / base:.1f}"
        f"  ({spool:.3f} / {base:.3f} ms)"
    )


def failed_exit_cpu(backlog: int, calls: int) -> list[float]:
    """CPU ms of ``Forwarder.send_now`` (a task runner's exit) against a refused port,
    with ``backlog`` rows spooled on the host; the backoff is cleared before each call,
    so every call is the one runner that probes the receiver and logs the warning."""
    import logging

    from airflow_bkci.spool.forwarder import Forwarder
    from airflow_bkci.spool.spool import Spool

    logging.getLogger("airflow_bkci").setLevel(logging.ERROR)  # the warning is still built
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/bkci/ingest"
    text = json.dumps(RECORD, separators=(",", ":"))
    out = []
    with tempfile.TemporaryDirectory(prefix="bkci-spool-backlog-") as tmp:
        spool = Spool(Path(tmp) / "spool.db", autocheckpoint=False)
        with spool._lock:  # one transaction: 100,000 appends one by one take minutes
            db = spool._db()
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO spool (record, created_at) VALUES (?, ?)",
                ((text, time.time()) for _ in range(backlog)),
            )
            db.execute("COMMIT")
        for _ in range(calls):
            with spool._lock:
                spool._db().execute("DELETE FROM receiver_backoff")
            forwarder = Forwarder(spool, url, "secret", connect_timeout=0.5)
            cpu0 = time.thread_time_ns()
            forwarder.send_now(1.0)
            out.append((time.thread_time_ns() - cpu0) / 1e6)
        spool.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forks", type=int, default=200, help="children per case (200)")
    args = parser.parse_args(argv)

    # What the process a task runner is forked from has loaded.
    import airflow.sdk  # noqa: F401

    import airflow_bkci.listeners.worker  # noqa: F401
    from airflow_bkci.spool.spool import Spool

    print(
        f"FRESH FORK, {args.forks} children per case, CPU of the calling thread in ms, minor "
        f"page faults (p50); Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}"
    )
    with tempfile.TemporaryDirectory(prefix="bkci-spool-open-") as tmp:
        path = Path(tmp) / "spool.db"
        Spool(path).close()  # made once, as on a host that ran a task before
        # No other connection: SQLite removed the WAL and its index at the last close, so
        # the open makes them again (a worker host without a scheduler, between tasks).
        idle = run_phase(path, args.forks)
        # Another process keeps the spool open (the scheduler's spool reader on its host).
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
            held = run_phase(path, args.forks)
        finally:
            holder.kill()
            holder.wait()
    report("spool file not open elsewhere (no scheduler on the host)", *idle)
    report("spool file held open by another process (the scheduler's spool reader)", *held)

    print("\nFAILED EXIT: send_now against a refused port, 30 calls each, CPU ms (warm process)")
    print(f"{'rows spooled':>12} {'cpu p50':>8} {'cpu p99':>8}")
    for backlog in (10, 10_000, 100_000):
        cpu = failed_exit_cpu(backlog, 30)
        print(f"{backlog:>12,} {pct(cpu, 50):8.3f} {pct(cpu, 99):8.3f}")
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
