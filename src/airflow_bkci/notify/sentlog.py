"""Which notices already went out, by dedupe key: what makes resends and restarts send once.

This module fixes the contract and gives an in-memory log for tests and
single-process use; the persistent log, shared by every dispatcher, is
:class:`airflow_bkci.store.notices.NoticeLog`.

A message that goes several ways (mail through one connection, apprise
through another) is also claimed per way, under :func:`route_key`: when one
way fails and the lane is retried, the ways that worked are not sent again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, runtime_checkable

__all__ = ["ROUTE_SEPARATOR", "MemorySentLog", "SentLog", "route_key"]

ROUTE_SEPARATOR = "|"


def route_key(key: str, route: str) -> str:
    """The dedupe key of delivering the message of ``key`` one way (``route``)."""
    return f"{key}{ROUTE_SEPARATOR}{route}"


@runtime_checkable
class SentLog(Protocol):
    """Claim a dedupe key before sending; release it when the delivery failed.

    ``claim`` must be atomic (an INSERT that fails on a duplicate key): two
    processes deciding on the same document must not both get True. Claiming
    before sending and releasing on failure makes delivery at most once per
    key, and a crash between claim and send loses that one message rather
    than sending it twice to people.
    """

    def claim(self, key: str) -> bool:
        """Record ``key``; True when it was not recorded before (the caller sends)."""
        ...

    def release(self, key: str) -> None:
        """Forget ``key`` so that a later attempt may send it (the delivery failed)."""
        ...


class MemorySentLog:
    """A :class:`SentLog` in memory, forgetting the oldest keys beyond ``capacity``."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    def claim(self, key: str) -> bool:
        if key in self._keys:
            return False
        self._keys[key] = None
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return True

    def release(self, key: str) -> None:
        self._keys.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
