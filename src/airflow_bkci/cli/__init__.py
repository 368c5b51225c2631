"""The ``airflow-bkci`` command: demo, relay, status, outbox and cancel."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from airflow_bkci.cli.cancel import add_cancel_parser
from airflow_bkci.cli.outbox import add_outbox_parser
from airflow_bkci.exceptions import BkciError


def _demo(args: argparse.Namespace) -> int:
    from airflow_bkci.demo import run_demo

    return run_demo(Path(args.home) if args.home else None, keep=args.keep, serve=args.serve)


def _relay(args: argparse.Namespace) -> int:
    from airflow_bkci.spool.relay import relay

    if not args.dispatch:
        return relay(once=args.once)
    from airflow_bkci.hooks.webhook import dispatcher_from_conf
    from airflow_bkci.store import Store

    store = Store(args.store) if args.store else Store.from_conf()
    dispatcher = dispatcher_from_conf(store)
    if dispatcher is None:
        print("airflow-bkci relay: no endpoint to dispatch to: set [bkci] webhook_conn_ids")
        return 2
    names = ", ".join(c.name for c in dispatcher.channels)
    try:
        if args.once:
            report = dispatcher.drain()
            print(
                f"dispatched to {names}: {report.sent_events} events, "
                f"{report.delivered_lanes} builds delivered, {report.failed_lanes} retrying, "
                f"{report.dead_lettered} dead-lettered"
            )
            code = 0 if not report.failed_lanes else 1
            return code if args.no_spool else max(code, relay(once=True))
        print(f"dispatching the outbox to {names}")
        dispatcher.start()
        if args.no_spool:
            threading.Event().wait()  # until interrupted; the dispatcher thread works
            return 0
        return relay(once=False)
    except KeyboardInterrupt:
        return 0
    finally:
        dispatcher.stop()
        store.dispose()


def _status(args: argparse.Namespace) -> int:
    from airflow_bkci.store import Store

    store = Store(args.store) if args.store else Store.from_conf()
    try:
        if args.build:
            tree = store.build_tree(args.build)
            if tree is None:
                print(f"no build {args.build!r} in the status store", file=sys.stderr)
                return 1
            print(json.dumps(tree, indent=2, default=str))
            return 0
        for build in store.builds(args.dag_id, limit=args.limit):
            print(
                f"{build['id']}  {build['pipeline_id']:<24} #{build['build_num']:<4} "
                f"{build['status']:<12} {build['run_id']}"
            )
        return 0
    finally:
        store.dispose()


def _replay_events(args: argparse.Namespace) -> int:
    from airflow_bkci import conf
    from airflow_bkci.store import Store
    from airflow_bkci.store.recording import read_recording

    # Never Store.from_conf(): with [bkci] record_events_to set, it would append the
    # replayed batches to the recording it reads.
    store = Store(args.store or conf.store_url())
    batches = events = rejected = 0
    builds: set[str] = set()
    try:
        store.migrate()
        for batch in read_recording(args.file):
            rejected += len(store.apply(batch).rejected)
            batches += 1
            events += len(batch)
            builds.update(e.node.build_id for e in batch)
    finally:
        store.dispose()
    print(
        f"applied {batches} batches ({events} events, {rejected} refused by the state machine) "
        f"to {store!r}: {len(builds)} builds"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="airflow-bkci", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the example builds on a local Airflow and watch them")
    demo.add_argument("--home", help="AIRFLOW_HOME to use (default: a new folder under .demo/)")
    demo.add_argument("--keep", action="store_true", help="keep the home folder afterwards")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="keep Airflow and the BK-CI dashboard up after the summary, until Ctrl-C",
    )
    demo.set_defaults(func=_demo)
    relay = sub.add_parser(
        "relay", help="send spooled worker records to the ingest route; --dispatch: the outbox"
    )
    relay.add_argument("--once", action="store_true", help="drain once and exit")
    relay.add_argument(
        "--dispatch", action="store_true", help="also deliver the outbox to [bkci] endpoints"
    )
    relay.add_argument("--no-spool", action="store_true", help="with --dispatch: only that")
    relay.add_argument("--store", help="store URL for --dispatch (default: [bkci] store_url)")
    relay.set_defaults(func=_relay)
    status = sub.add_parser("status", help="show builds or one build tree from the status store")
    status.add_argument("dag_id", nargs="?", help="only builds of this pipeline")
    status.add_argument("--build", help="print this build's tree as JSON")
    status.add_argument("--store", help="store URL (default: [bkci] store_url)")
    status.add_argument("--limit", type=int, default=20)
    status.set_defaults(func=_status)
    replay = sub.add_parser(
        "replay-events", help="apply a recording ([bkci] record_events_to) to a status store"
    )
    replay.add_argument("file", help="the recording (JSON Lines, .gz too)")
    replay.add_argument("--store", help="store URL (default: [bkci] store_url)")
    replay.set_defaults(func=_replay_events)
    add_outbox_parser(sub)
    add_cancel_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BkciError as exc:  # ours carry the fix in the message: no traceback
        print(f"airflow-bkci {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
