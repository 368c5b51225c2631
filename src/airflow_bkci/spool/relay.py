"""``airflow-bkci relay``: drain a host's spool when no task runner is left to do it."""

from __future__ import annotations

import time
from collections.abc import Callable

from airflow_bkci.spool.forwarder import BatchResult, Forwarder
from airflow_bkci.spool.spool import Spool

__all__ = ["relay"]


def _line(result: BatchResult, pending: int) -> str:
    text = f"sent {result.sent}, quarantined {result.quarantined}, pending {pending}"
    if result.error:
        text += f"; send failed: {result.error}"
    for reason in result.rejected_reasons[:5]:
        text += f"\n  quarantined: {reason}"
    return text


def relay(
    once: bool,
    *,
    forwarder: Forwarder | None = None,
    interval: float = 2.0,
    echo: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Forward spooled records; return a process exit code.

    ``once``: drain until nothing is claimable and return 0, or 1 when a send
    failed (the rows stay spooled). Otherwise run until interrupted, backing
    off after failures and polling every ``interval`` seconds when idle.
    """
    if forwarder is None:
        from airflow_bkci import conf

        forwarder = Forwarder.from_conf(Spool(conf.spool_path()))
    spool = forwarder.spool
    echo(f"relaying {spool.path} -> {forwarder.url} ({spool.pending_count()} pending)")
    try:
        while True:
            result = forwarder.drain()
            if result.claimed or result.error:
                echo(_line(result, spool.pending_count()))
            # Shared with the task runners here: while we fail, they skip the
            # receiver at exit; once we get through, they send again.
            delay = forwarder.record_outcome(result)
            if once:
                return 0 if result.ok else 1
            if delay is None:
                sleep(interval)
                continue
            echo(f"next try in {delay:.1f}s")
            sleep(delay)
    except KeyboardInterrupt:
        echo(f"stopped; {spool.pending_count()} pending")
        return 0
