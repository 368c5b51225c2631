"""The owners rules file as a long-running process sees it: read again when it changes.

Owners files are edited far more often than schedulers are restarted. The
file is looked at (one ``stat``) at most every ``every`` seconds; a changed
file is parsed and checked again, and an edit that breaks it keeps the rules
loaded before, with an error in the log naming the line and the fix, once
per edit.

``check`` looks at rules the file parsed into (for example: do the
connections they name exist?). What it raises is logged and the rules are
used all the same: the messages of the rule it names fail, saying so, and
every other rule still works.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from airflow_bkci.exceptions import OwnersFileError
from airflow_bkci.notify.owners import OwnersRules, load_owners

__all__ = ["OwnersFile"]

log = logging.getLogger(__name__)

Check = Callable[[OwnersRules], None]


def _no_check(rules: OwnersRules) -> None:
    return None


class OwnersFile:
    """Rules of the file at ``path``; a first load that does not parse raises OwnersFileError."""

    def __init__(
        self,
        path: str | Path,
        check: Check = _no_check,
        *,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.check = check
        self.every = every
        self._clock = clock
        self._seen = self._stamp()
        self._rules = self._load()
        self._looked = clock()

    def rules(self) -> OwnersRules:
        """The current rules: the file's, or the last good ones while the file is broken."""
        now = self._clock()
        if now - self._looked < self.every:
            return self._rules
        self._looked = now
        stamp = self._stamp()
        if stamp == self._seen:
            return self._rules
        self._seen = stamp
        try:
            self._rules = self._load()
        except OwnersFileError as exc:
            log.error(
                "bkci notify: %s. Notifications go on with the rules loaded before this edit.",
                exc,
            )
        else:
            count = len(self._rules.rules)
            log.info("bkci notify: owners file %s reloaded (%d rules)", self.path, count)
        return self._rules

    def _load(self) -> OwnersRules:
        rules = load_owners(self.path)
        try:
            self.check(rules)
        except OwnersFileError as exc:
            # One bad connection must not silence every other rule: its
            # messages fail, naming it, until it is fixed.
            log.error("bkci notify: %s. The other rules apply.", exc)
        return rules

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size
