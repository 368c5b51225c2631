"""``airflow-bkci cancel``: cancel builds in Airflow's database, all or nothing.

Runs the cancel service in this process on the database of the Airflow
configuration it finds (``AIRFLOW_HOME``), like Airflow's own CLI.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from airflow_bkci.cancel.request import (
    CANCELABLE_RUN_STATES,
    CancelIncomplete,
    CancelRejected,
    CancelRequest,
    CancelResult,
    RunFilter,
    RunKey,
)

__all__ = ["add_cancel_parser", "parse_age", "parse_run"]

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``2h``, ``1.5d`` -> a timedelta."""
    match = _AGE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age; use e.g. 90s, 15m, 2h or 1d")
    return timedelta(seconds=float(match[1]) * _UNIT[match[2]])


def parse_run(text: str) -> RunKey:
    """``dag_id/run_id`` (a DAG id never holds ``/``; a run id may)."""
    dag_id, sep, run_id = text.strip().partition("/")
    if not sep or not dag_id or not run_id:
        raise argparse.ArgumentTypeError(f"{text!r} is not DAG_ID/RUN_ID")
    return (dag_id, run_id)


def _parse_conf(items: Sequence[str]) -> dict[str, Any] | None:
    if not items:
        return None
    found: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CancelRejected([f"--conf {item!r} is not KEY=VALUE"])
        try:
            found[key] = json.loads(raw)
        except json.JSONDecodeError:
            found[key] = raw  # a bare word is a string
    return found


def _runs_from_file(path: str) -> list[RunKey]:
    """One DAG_ID/RUN_ID per line, or a JSON list of {"dag_id", "run_id"} objects."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
            return [(str(i["dag_id"]), str(i["run_id"])) for i in items]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CancelRejected(
                [f"{path}: not a JSON list of {{dag_id, run_id}}: {exc}"]
            ) from None
    runs = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                runs.append(parse_run(line))
            except argparse.ArgumentTypeError as exc:
                raise CancelRejected([f"{path}:{number}: {exc}"]) from None
    return runs


def build_request(args: argparse.Namespace) -> CancelRequest:
    runs = list(args.runs or [])
    if args.from_file:
        runs += _runs_from_file(args.from_file)
    flt = None
    if args.dag_id or args.state or args.older_than or args.conf:
        flt = RunFilter(
            dag_ids=tuple(args.dag_id or ()),
            states=tuple(args.state or CANCELABLE_RUN_STATES),
            older_than=args.older_than,
            conf=_parse_conf(args.conf or ()),
        )
    return CancelRequest(
        reason=args.reason,
        user=args.user or f"cli:{getpass.getuser()}",
        runs=runs,
        filter=flt,
        dry_run=args.dry_run,
        chunked=args.chunked,
        source="cli",
    )


def print_table(result: CancelResult, out: TextIO) -> None:
    header = (
        f"{'build':<22} {'dag_id':<28} {'was':<8} {'outcome':<26} failed skipped teardown  run_id"
    )
    print(header, file=out)
    for b in result.builds:
        print(
            f"{b.build_id:<22} {b.dag_id[:28]:<28} {b.prior_state:<8} {b.outcome.value:<26} "
            f"{len(b.failed):>6} {len(b.skipped):>7} {len(b.teardowns):>8}  {b.run_id}",
            file=out,
        )
    counts = ", ".join(f"{n} {o}" for o, n in result.to_json()["summary"].items() if n)
    verb = "would change" if result.dry_run else "changed"
    tail = f"; {len(result.duplicates)} duplicates ignored" if result.duplicates else ""
    print(
        f"{len(result.builds)} builds: {counts or 'nothing'} ({verb} in {result.seconds:.3f} s, "
        f"{result.batches} transaction(s), {result.attempts} attempt(s)){tail}",
        file=out,
    )


def _progress(err: TextIO) -> Callable[[str, int, int], None]:
    def report(phase: str, done: int, total: int) -> None:
        if total >= 500:  # small cancels finish before anyone could read it
            print(f"  {phase}: {done}/{total}", file=err, flush=True)

    return report


def _logs_to_stderr() -> None:
    """Airflow logs to stdout; the table and the JSON are what stdout is for."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def _cancel(args: argparse.Namespace) -> int:
    from airflow_bkci.cancel.service import CancelService

    _logs_to_stderr()
    request = build_request(args)
    service = CancelService.from_airflow()
    try:
        result = service.cancel(request, progress=_progress(sys.stderr))
    except CancelRejected as exc:
        for problem in exc.problems:
            print(f"airflow-bkci cancel: {problem}", file=sys.stderr)
        return 2
    except CancelIncomplete as exc:
        print_table(exc.result, sys.stdout)
        print(f"airflow-bkci cancel: {exc}", file=sys.stderr)
        return 1
    finally:
        service.wait_for_notifications(timeout=30.0)
        service.engine.dispose()
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_table(result, sys.stdout)
    return 0


def add_cancel_parser(sub: Any) -> None:
    cancel = sub.add_parser(
        "cancel",
        help="cancel running or queued builds, all or nothing (see --dry-run)",
        description=(
            "Cancel builds in one transaction: running tasks fail (their processes stop at the "
            "next heartbeat), other unfinished tasks are skipped, teardown tasks still run. "
            "Name builds as DAG_ID/RUN_ID or select them with a filter."
        ),
    )
    cancel.add_argument("runs", nargs="*", type=parse_run, metavar="DAG_ID/RUN_ID")
    cancel.add_argument(
        "--from-file", help="builds, one DAG_ID/RUN_ID per line or JSON (- = stdin)"
    )
    cancel.add_argument("--dag-id", action="append", help="filter: runs of this DAG (repeatable)")
    cancel.add_argument(
        "--state", action="append", choices=CANCELABLE_RUN_STATES, help="filter: run state"
    )
    cancel.add_argument(
        "--older-than", type=parse_age, help="filter: due (run_after) longer ago than, e.g. 2h"
    )
    cancel.add_argument(
        "--conf", action="append", metavar="KEY=VALUE", help="filter: the run's conf holds this"
    )
    cancel.add_argument("--reason", required=True, help="why; goes into notes, audit log, events")
    cancel.add_argument("--user", help="who cancels (default: cli:<login name>)")
    cancel.add_argument(
        "--dry-run", action="store_true", help="show what would change; change nothing"
    )
    cancel.add_argument(
        "--chunked",
        action="store_true",
        help="above [bkci] cancel_atomic_limit: cancel in atomic batches of the limit",
    )
    cancel.add_argument("--json", action="store_true", help="print the result as JSON")
    cancel.set_defaults(func=_cancel)
