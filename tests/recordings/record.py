"""Record the status events a real Airflow run gives the store, for replay in fault tests.

    .venv/bin/python -m tests.recordings.record      # about two minutes

Starts a local Airflow 3.3 stack (SQLite, LocalExecutor) with ``[bkci]
record_events_to`` set, runs every example DAG, clears the failed run once so
the stream holds a second attempt, stops the stack (the collectors flush) and
writes ``tests/recordings/examples.jsonl.gz``. Commit the file with the change
that needed it; the tests replay it through the store and the dispatcher.
"""

from __future__ import annotations

import gzip
import shutil
import sys
import tempfile
from pathlib import Path

from airflow_bkci.devstack import AirflowStack
from airflow_bkci.example_dags import EXPECTED_STATES, FOLDER

OUT = Path(__file__).resolve().parent / "examples.jsonl.gz"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bkci-record-") as tmp:
        home = Path(tmp)
        dags = home / "dags"
        dags.mkdir()
        for source in FOLDER.glob("bkci_*.py"):
            shutil.copy(source, dags / source.name)
        recording = home / "events.jsonl"
        stack = AirflowStack(home=home / "airflow", dags_folder=dags, backend="sqlite")
        stack.configure("bkci", "record_events_to", str(recording))
        with stack:
            runs = {dag_id: stack.trigger(dag_id) for dag_id in EXPECTED_STATES}
            states = {d: stack.wait_run(d, r, timeout=300) for d, r in runs.items()}
            if states != EXPECTED_STATES:
                print(f"runs ended {states}, expected {EXPECTED_STATES}", file=sys.stderr)
                return 1
            stack.clear_run("bkci_failure", runs["bkci_failure"], only_failed=True)
            stack.wait_run("bkci_failure", runs["bkci_failure"], timeout=300)
        with recording.open("rb") as raw, gzip.open(OUT, "wb", compresslevel=9) as out:
            shutil.copyfileobj(raw, out)
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
