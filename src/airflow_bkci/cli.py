"""The ``airflow-bkci`` command: demo, relay and status."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from airflow_bkci.demo import run_demo

    return run_demo(Path(args.home) if args.home else None, keep=args.keep)


def _relay(args: argparse.Namespace) -> int:
    from airflow_bkci.spool.relay import relay

    return relay(once=args.once)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="airflow-bkci", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the example builds on a local Airflow and watch them")
    demo.add_argument("--home", help="AIRFLOW_HOME to use (default: a new folder under .demo/)")
    demo.add_argument("--keep", action="store_true", help="keep the home folder afterwards")
    demo.set_defaults(func=_demo)
    relay = sub.add_parser("relay", help="send spooled worker records to the ingest route")
    relay.add_argument("--once", action="store_true", help="drain the spool once and exit")
    relay.set_defaults(func=_relay)
    status = sub.add_parser("status", help="show builds or one build tree from the status store")
    status.add_argument("dag_id", nargs="?", help="only builds of this pipeline")
    status.add_argument("--build", help="print this build's tree as JSON")
    status.add_argument("--store", help="store URL (default: [bkci] store_url)")
    status.add_argument("--limit", type=int, default=20)
    status.set_defaults(func=_status)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
