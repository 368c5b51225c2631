"""The owners rules file: which recipients own which pipelines and tasks.

One rule per line, CODEOWNERS-style; ``#`` starts a comment (at the start of a
line or of a word, so ``conn:slack:#alerts`` keeps its channel), blank lines
are ignored::

    # <pipeline glob>[/<task glob>]   recipient recipient ...
    *                        platform@example.com
    etl_*                    data-team@example.com conn:slack_alerts:#etl
    etl_daily/load.*         @alice
    etl_daily/**_sensor      conn:apprise_ops:oncall
    etl_daily/flaky_probe

- The last matching line wins, as in CODEOWNERS: put general rules first and
  exceptions below them. Recipients of earlier matching lines are not added.
- A rule with no recipients (the last line above) wins too and assigns nobody
  from this file; the task's own ``owner`` and the DAG's ``owner_links``
  still apply.
- A rule without a task part covers the pipeline itself (messages about the
  whole build: recovered, canceled, a failure no task explains) and every
  task of it. A rule with a task part covers only the tasks it matches.
- Globs are fnmatch-style and case-sensitive: ``*``, ``?``, ``[abc]``,
  ``[!abc]``, ``[a-z]``. In a pipeline glob they match any characters of the
  dag_id (dots in a dag_id mean nothing). In a task glob the dots are task
  group boundaries (``group.subgroup.task``), so ``*`` and ``?`` stay inside
  one level, like ``*`` inside one folder of a path, and ``**`` crosses
  levels: ``load.*`` is the direct tasks of group ``load``, ``load.**`` every
  task under it, ``**_sensor`` any task named ``..._sensor`` at any depth.
  Mapped tasks match by their task_id (the map index plays no part).
- A recipient is ``name@example.com``, ``@airflow_user`` or
  ``conn:<conn_id>[:<target>]``; see :mod:`airflow_bkci.notify.recipient`.

A line that is not a rule raises :class:`OwnersFileError` naming the file,
the line number, the line and the fix; nothing is half-loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from airflow_bkci.exceptions import OwnersFileError
from airflow_bkci.notify.recipient import (
    ChannelAddress,
    InvalidRecipient,
    Recipient,
    parse_recipient,
    sort_recipients,
)

__all__ = ["OWNERS_FILE_OPTION", "OwnersRule", "OwnersRules", "load_owners", "parse_owners"]

OWNERS_FILE_OPTION = "notify_owners_file"
"""``[bkci]`` option: path of the owners rules file (empty: no rules)."""

_GLOB_CHARS = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]+$")


@dataclass(frozen=True, slots=True)
class OwnersRule:
    """One line of the owners file."""

    line_number: int
    pipeline_glob: str
    task_glob: str | None
    recipients: tuple[Recipient, ...]
    line: str = field(default="", compare=False)  # the text of the line, for errors
    _pipeline: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _task: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # ValueError on a bad glob; the parser turns it into OwnersFileError
        object.__setattr__(self, "_pipeline", _compile(self.pipeline_glob, dotted=False))
        task = None if self.task_glob is None else _compile(self.task_glob, dotted=True)
        object.__setattr__(self, "_task", task)

    def matches(self, dag_id: str, task_id: str | None = None) -> bool:
        """True when this rule covers the task (or, with no task, the pipeline itself)."""
        if not self._pipeline.fullmatch(dag_id):
            return False
        if self._task is None:
            return True
        return task_id is not None and self._task.fullmatch(task_id) is not None


@dataclass(frozen=True, slots=True)
class OwnersRules:
    """A parsed owners file; ``source`` names it in logs and errors."""

    source: str
    rules: tuple[OwnersRule, ...] = ()

    def rule_for(self, dag_id: str, task_id: str | None = None) -> OwnersRule | None:
        """The rule that decides, or None when no line matches: the last match wins."""
        for rule in reversed(self.rules):
            if rule.matches(dag_id, task_id):
                return rule
        return None

    def recipients_for(self, dag_id: str, task_id: str | None = None) -> tuple[Recipient, ...]:
        rule = self.rule_for(dag_id, task_id)
        return () if rule is None else rule.recipients

    def check_connections(self, exists: Callable[[str], bool]) -> None:
        """Raise :class:`OwnersFileError` at the first rule naming a missing connection.

        ``exists`` says whether a connection id is defined (for example
        ``BaseHook.get_connection`` not raising), so a typo in a ``conn:`` id
        is found when the file loads, not when a build fails.
        """
        checked: dict[str, bool] = {}
        for rule in self.rules:
            for recipient in rule.recipients:
                if not isinstance(recipient, ChannelAddress):
                    continue
                conn_id = recipient.conn_id
                if conn_id not in checked:
                    checked[conn_id] = exists(conn_id)
                if not checked[conn_id]:
                    raise OwnersFileError(
                        self.source,
                        rule.line_number,
                        rule.line or None,
                        f"connection {conn_id!r} does not exist",
                        f"Create it (airflow connections add {conn_id} ...) or fix the id "
                        f"in {recipient}",
                    )


def load_owners(path: str | Path) -> OwnersRules:
    """Read and parse the owners file at ``path``."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OwnersFileError(
            source,
            None,
            None,
            "the owners file does not exist",
            f"Create it, or set [bkci] {OWNERS_FILE_OPTION} to the right path "
            "(empty for no rules file)",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OwnersFileError(
            source,
            None,
            None,
            f"the owners file cannot be read ({exc})",
            "Make it a UTF-8 text file readable by the scheduler's user",
        ) from exc
    return parse_owners(text, source)


def parse_owners(text: str, source: str = "<owners>") -> OwnersRules:
    """Parse the owners file ``text``; the first bad line raises :class:`OwnersFileError`."""
    rules: list[OwnersRule] = []
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        words = _strip_comment(line.split())
        if words:
            rules.append(_rule(source, number, line, words))
    return OwnersRules(source, tuple(rules))


def _strip_comment(words: list[str]) -> list[str]:
    for i, word in enumerate(words):
        if word.startswith("#"):
            return words[:i]
    return words


def _rule(source: str, number: int, line: str, words: list[str]) -> OwnersRule:
    def fail(problem: str, fix: str) -> OwnersFileError:
        return OwnersFileError(source, number, line, problem, fix)

    pattern, *names = words
    if pattern.count("/") > 1:
        raise fail(
            f"{pattern!r} has more than one '/'",
            "Write <pipeline glob>/<task glob>; task groups inside a task id are "
            "separated by '.', as in etl/load.copy",
        )
    pipeline, slash, task = pattern.partition("/")
    if not pipeline or (slash and not task):
        raise fail(
            f"{pattern!r} has an empty pipeline or task part",
            "Write <pipeline glob> or <pipeline glob>/<task glob>, for example "
            "'*/extract' or 'etl' (without a trailing '/') for the whole pipeline",
        )
    recipients: list[Recipient] = []
    for name in names:
        try:
            recipients.append(parse_recipient(name))
        except InvalidRecipient as exc:
            raise fail(exc.problem, exc.fix) from None
    try:
        return OwnersRule(
            number, pipeline, task if slash else None, sort_recipients(recipients), line
        )
    except ValueError as exc:
        raise fail(str(exc), _GLOB_FIX) from None


_GLOB_FIX = (
    "Globs use letters, digits, '_', '.', '-' (the characters of Airflow ids) "
    "and *, **, ?, [abc], [!abc]"
)


def _compile(glob: str, *, dotted: bool) -> re.Pattern[str]:
    """A regex for ``glob``; with ``dotted``, ``*`` and ``?`` do not cross dots."""
    if not _GLOB_CHARS.match(glob):
        bad = sorted({c for c in glob if not _GLOB_CHARS.match(c)})
        raise ValueError(f"glob {glob!r} has characters no Airflow id has: {''.join(bad)!r}")
    one = "[^.]" if dotted else "."
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "[":
            regex, i = _char_class(glob, i, dotted=dotted)
            out.append(regex)
        elif glob[i] in "]!":
            raise ValueError(f"glob {glob!r} has a {glob[i]!r} outside a [...] class")
        else:
            out.append({"*": one + "*", "?": one}.get(glob[i]) or re.escape(glob[i]))
            i += 1
    try:
        return re.compile("".join(out))
    except re.error as exc:  # a reversed range such as [z-a]
        raise ValueError(f"glob {glob!r} is not valid: {exc}") from None


def _char_class(glob: str, start: int, *, dotted: bool) -> tuple[str, int]:
    """The regex of the ``[...]`` class at ``start`` and the index after it."""
    negate = glob.startswith("[!", start)
    first = start + 1 + negate
    end = glob.find("]", first)
    if end <= first:
        raise ValueError(f"glob {glob!r} has an unclosed or empty '[' at position {start + 1}")
    body = "".join(c if c == "-" else re.escape(c) for c in glob[first:end])
    if not negate:
        return f"[{body}]", end + 1
    # a negated class is one character of one level, like "?"
    return f"[^{body}{'.' if dotted else ''}]", end + 1
