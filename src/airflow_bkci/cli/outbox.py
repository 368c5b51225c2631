"""``airflow-bkci outbox``: look after delivery (status, dead letters, replay, resume, resync)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from airflow_bkci.channels.replay import ReplayChannel

__all__ = ["add_outbox_parser"]

# Tests give channels directly; the command builds them from Airflow connections.
ChannelFactory = Callable[[list[str]], Mapping[str, ReplayChannel]]


def _configured_channels(names: list[str]) -> Mapping[str, ReplayChannel]:
    """A channel per endpoint name (a connection id), by the connection's type."""
    from airflow.sdk import BaseHook

    from airflow_bkci.hooks.mq import BkciMqHook, configured_mq_channels
    from airflow_bkci.hooks.webhook import configured_channels

    queues = []
    for name in names:
        try:
            if BaseHook.get_connection(name).conn_type == BkciMqHook.conn_type:
                queues.append(name)
        except Exception:  # a missing connection is reported by configured_channels
            continue
    webhooks = [n for n in names if n not in queues]
    channels: list[ReplayChannel] = [
        *configured_channels(webhooks),
        *configured_mq_channels(queues),
    ]
    return {c.name: c for c in channels}


def _open(args: argparse.Namespace) -> Any:
    from airflow_bkci.store import Store
    from airflow_bkci.store.outbox import Outbox

    store = Store(args.store) if args.store else Store.from_conf()
    return Outbox(store, owner="airflow-bkci outbox")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _status(args: argparse.Namespace) -> int:
    outbox = _open(args)
    try:
        health = outbox.health()
    finally:
        outbox.store.dispose()
    if args.json:
        print(json.dumps(health, indent=2))
        return 0
    if not health:
        print("nothing pending, no dead letters: every endpoint has every change set")
        return 0
    print(f"{'endpoint':<28} {'pending':>7} {'oldest':>7} {'retrying':>8} {'dead':>5}  state")
    for h in health:
        state = f"GONE: {h['gone']}" if h["gone"] else (h["last_error"] or "ok")
        print(
            f"{h['endpoint']:<28} {h['pending_lanes']:>7} {_age(h['oldest_pending_s']):>7} "
            f"{h['retrying_lanes']:>8} {h['dead_letters']:>5}  {state[:100]}"
        )
    if any(h["gone"] for h in health):
        print("\nA GONE endpoint gets nothing until `airflow-bkci outbox resume ENDPOINT`.")
    return 0


def _letters(args: argparse.Namespace, outbox: Any, include_replayed: bool) -> list[Any]:
    return list(
        outbox.dead_letters(
            args.endpoint,
            build_id=args.build,
            ids=args.id or None,
            include_replayed=include_replayed,
        )
    )


def _dead_letters(args: argparse.Namespace) -> int:
    outbox = _open(args)
    try:
        letters = _letters(args, outbox, include_replayed=args.all)
    finally:
        outbox.store.dispose()
    if args.json:
        print(json.dumps(letters, indent=2, default=str))
        return 0
    if not letters:
        print("no dead letters" + ("" if args.all else " waiting for a replay"))
        return 0
    for d in letters:
        replayed = f"  replayed {d['replayed_at']:%Y-%m-%d %H:%M}" if d["replayed_at"] else ""
        print(
            f"#{d['id']:<6} {d['created_at']:%Y-%m-%d %H:%M:%S}  {d['endpoint']}  {d['build_id']}"
            f"  seq {d['first_seq']}..{d['last_seq']}  {len(d['events'])} events{replayed}"
        )
        print(f"        {d['reason'][:200]}")
    return 0


def _replay(args: argparse.Namespace, channels: ChannelFactory) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from airflow_bkci.channels.replay import replay_dead_letters

    outbox = _open(args)
    try:
        letters = _letters(args, outbox, include_replayed=args.again)
        total = sum(len(d["events"]) for d in letters)
        if not letters:
            print("no dead letters to replay")
            return 0
        if args.dry_run:
            endpoints = sorted({d["endpoint"] for d in letters})
            print(
                f"would replay {len(letters)} dead letters ({total} events) "
                f"to {', '.join(endpoints)}"
            )
            return 0
        by_name = channels(sorted({d["endpoint"] for d in letters}))
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            disable=not sys.stderr.isatty(),
            console=None,
        ) as bar:
            task = bar.add_task("replaying events", total=total)
            report = replay_dead_letters(
                outbox,
                by_name,
                letters,
                batch_size=args.batch_size,
                progress=lambda n: bar.advance(task, n),
            )
    finally:
        outbox.store.dispose()
    print(
        f"replayed {len(report.replayed)} of {len(letters)} dead letters ({report.events} events)"
    )
    if not report.ok:
        print(
            f"stopped at dead letter #{report.failed_id}: {report.error}\n"
            "Nothing after it was sent; run the replay again once the endpoint takes it.",
            file=sys.stderr,
        )
        return 1
    return 0


def _resume(args: argparse.Namespace) -> int:
    outbox = _open(args)
    try:
        reason = outbox.gone(args.endpoint)
        outbox.set_gone(args.endpoint, None)
    finally:
        outbox.store.dispose()
    if reason is None:
        print(f"{args.endpoint} was not stopped; nothing to resume")
    else:
        print(
            f"{args.endpoint} resumed (it was stopped: {reason}); its lanes go on from their place"
        )
    return 0


def _resync(args: argparse.Namespace) -> int:
    outbox = _open(args)
    try:
        changed = outbox.request_snapshot(args.endpoint, args.build or None)
    finally:
        outbox.store.dispose()
    if not changed:
        print(f"{args.endpoint} has no lanes" + (" for those builds" if args.build else ""))
        return 1
    print(f"{changed} builds get a fresh snapshot at {args.endpoint} on the next dispatch")
    return 0


def _clean(args: argparse.Namespace) -> int:
    from airflow_bkci import conf

    days = args.retention_days if args.retention_days is not None else conf.outbox_retention_days()
    outbox = _open(args)
    try:
        deleted = outbox.clean(timedelta(days=days))
    finally:
        outbox.store.dispose()
    print(f"deleted {deleted} change sets older than {days:g} days that every endpoint has")
    return 0


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", help="only this endpoint (its connection id)")
    parser.add_argument("--build", help="only this build id")
    parser.add_argument("--id", type=int, action="append", help="only this dead letter (repeat)")


def add_outbox_parser(
    sub: Any, channels: ChannelFactory = _configured_channels
) -> argparse.ArgumentParser:
    """Add ``outbox`` and its subcommands to the top-level subparsers ``sub``."""
    outbox: argparse.ArgumentParser = sub.add_parser(
        "outbox", help="delivery to endpoints: status, dead letters, replay"
    )
    outbox.add_argument("--store", help="store URL (default: [bkci] store_url)")
    verbs = outbox.add_subparsers(dest="verb", required=True)

    status = verbs.add_parser("status", help="per endpoint: pending, retrying, dead, gone")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    dead = verbs.add_parser("dead-letters", help="list change sets set aside for good")
    _filters(dead)
    dead.add_argument("--all", action="store_true", help="replayed ones too")
    dead.add_argument("--json", action="store_true", help="whole rows, events included")
    dead.set_defaults(func=_dead_letters)

    replay = verbs.add_parser("replay", help="send dead letters to their endpoint again")
    _filters(replay)
    replay.add_argument("--dry-run", action="store_true", help="say what would be sent")
    replay.add_argument("--again", action="store_true", help="include already replayed ones")
    replay.add_argument("--batch-size", type=int, default=100, help="events per request")
    replay.set_defaults(func=lambda args: _replay(args, channels))

    resume = verbs.add_parser("resume", help="deliver again to an endpoint that answered 410")
    resume.add_argument("endpoint")
    resume.set_defaults(func=_resume)

    resync = verbs.add_parser("resync", help="send an endpoint fresh snapshots next")
    resync.add_argument("endpoint")
    resync.add_argument("--build", action="append", help="only this build (repeat)")
    resync.set_defaults(func=_resync)

    clean = verbs.add_parser("clean", help="delete delivered change sets past retention now")
    clean.add_argument("--retention-days", type=float, help="default: [bkci] outbox_retention_days")
    clean.set_defaults(func=_clean)
    return outbox
