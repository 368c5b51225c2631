"""Cancel-previous concurrency groups: which runs a newer run of the same group supersedes.

A DAG opts in with a tag (``bkci:cancel-previous`` for one group per DAG, or
``bkci:group=<template>``) or through ``[bkci] cancel_previous``
(``<dag id glob>=<template>`` entries, one per line or ``;``-separated). The
template renders a run's group key from its context (``dag_id``, ``run_id``,
``conf``, ``run_type``, ``triggering_user``, ``logical_date``, ``run_after``)
in Jinja's sandbox, with bounds on time, loop length and output size: a DAG
author's template runs in the scheduler.

Everything here is plain data and pure functions; the scheduler-side thread
that reads runs and cancels lives in ``listeners/cancel_previous.py``.
"""

from __future__ import annotations

import fnmatch
import operator
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment

from airflow_bkci.exceptions import BkciError

TAG_ONE_GROUP = "bkci:cancel-previous"
TAG_GROUP_PREFIX = "bkci:group="
DAG_GROUP = "{{ dag_id }}"
MAX_KEY = 250
MAX_OUTPUT = 4096
MAX_LOOP = 10_000
RENDER_SECONDS = 0.5


class GroupTemplateError(BkciError):
    """A group template that cannot be used: it does not parse, raises, loops or is too big."""


@dataclass(frozen=True, slots=True)
class ActiveRun:
    """A queued or running run, as the group logic needs it."""

    id: int
    dag_id: str
    run_id: str
    state: str
    run_after: datetime
    run_type: str
    conf: Mapping[str, Any] = field(default_factory=dict)
    triggering_user: str | None = None
    logical_date: datetime | None = None

    @property
    def order(self) -> tuple[datetime, int]:
        """Earlier by run_after, then by id (creation order)."""
        return (self.run_after, self.id)


def parse_config(raw: str) -> list[tuple[str, str]]:
    """``[bkci] cancel_previous`` -> [(dag id glob, template)]; raises on a malformed entry."""
    entries = []
    for raw_part in raw.replace("\n", ";").split(";"):
        part = raw_part.strip()
        if not part:
            continue
        glob, sep, template = part.partition("=")
        if not sep or not glob.strip():
            raise GroupTemplateError(
                f"[bkci] cancel_previous entry {part!r} is not <dag id glob>=<template>, "
                "e.g. deploy_*={{ conf.get('branch', 'main') }}"
            )
        entries.append((glob.strip(), template.strip() or DAG_GROUP))
    return entries


def template_for(dag_id: str, tags: Iterable[str], config: Sequence[tuple[str, str]]) -> str | None:
    """The group template of a DAG, or None if it did not opt in (a tag wins over config)."""
    for tag in tags:
        if tag.startswith(TAG_GROUP_PREFIX):
            return tag[len(TAG_GROUP_PREFIX) :].strip() or DAG_GROUP
    if TAG_ONE_GROUP in tags:
        return DAG_GROUP
    for glob, template in config:
        if fnmatch.fnmatchcase(dag_id, glob):
            return template
    return None


class _Budget:
    """Bounds one render: wall time, loop items and output size."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.items = 0

    def tick(self, n: int = 1) -> None:
        self.items += n
        if self.items > MAX_LOOP:
            raise GroupTemplateError(f"the template iterates more than {MAX_LOOP} times")
        if time.monotonic() > self.deadline:
            raise GroupTemplateError("the template took too long to render")


class _BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox, plus: every call and every big operand is charged to the render's budget."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        super().__init__(autoescape=False, finalize=lambda v: "" if v is None else v)
        self.local = threading.local()
        self.globals["range"] = self._range

    def _budget(self) -> _Budget:
        budget: _Budget | None = getattr(self.local, "budget", None)
        if budget is None:
            raise GroupTemplateError("render outside a budget")
        return budget

    def _range(self, *args: int) -> Iterator[int]:
        for value in range(*args):
            self._budget().tick()
            yield value

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self._budget().tick()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**" and isinstance(right, int) and abs(right) > 64:
            raise GroupTemplateError("the template raises to a power over 64")
        if operator_ == "*":
            for text, count in ((left, right), (right, left)):
                sized = isinstance(text, str | list | tuple) and isinstance(count, int)
                if sized and len(text) * count > MAX_OUTPUT:
                    raise GroupTemplateError(
                        f"the template builds a value over {MAX_OUTPUT} characters"
                    )
        return {"*": operator.mul, "**": operator.pow}[operator_](left, right)


class GroupKeys:
    """Renders group keys; a template that failed once is not run again."""

    def __init__(self, seconds: float = RENDER_SECONDS) -> None:
        self.env = _BoundedSandbox()
        self.seconds = seconds
        self._compiled: dict[str, Any] = {}
        self.broken: dict[str, str] = {}

    def key(self, template: str, run: ActiveRun) -> str:
        """The run's group key; raises :class:`GroupTemplateError`."""
        if template in self.broken:
            raise GroupTemplateError(self.broken[template])
        try:
            compiled = self._compiled.get(template)
            if compiled is None:
                compiled = self._compiled[template] = self.env.from_string(template)
            rendered = self._render(compiled, run)
        except GroupTemplateError as exc:
            self.broken[template] = f"group template {template!r}: {exc}"
            raise GroupTemplateError(self.broken[template]) from None
        except (TemplateError, Exception) as exc:  # a DAG author's code: contain everything
            # A run-specific failure (e.g. a missing conf key) is not cached.
            raise GroupTemplateError(
                f"group template {template!r} failed for {run.dag_id}/{run.run_id}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        key = rendered.strip()
        if not key:
            raise GroupTemplateError(
                f"group template {template!r} gave an empty key for {run.run_id}"
            )
        return key[:MAX_KEY]

    def _render(self, compiled: Any, run: ActiveRun) -> str:
        budget = _Budget(self.seconds)
        self.env.local.budget = budget
        try:
            out: list[str] = []
            size = 0
            for chunk in compiled.generate(
                dag_id=run.dag_id,
                run_id=run.run_id,
                conf=dict(run.conf or {}),
                run_type=run.run_type,
                triggering_user=run.triggering_user,
                logical_date=run.logical_date,
                run_after=run.run_after,
            ):
                budget.tick(0)
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise GroupTemplateError(f"the template renders over {MAX_OUTPUT} characters")
                out.append(chunk)
            return "".join(out)
        finally:
            self.env.local.budget = None


def superseded(
    groups: Mapping[str, Sequence[ActiveRun]],
) -> dict[str, tuple[ActiveRun, list[ActiveRun]]]:
    """Per group: its newest run and the earlier ones it supersedes (lone runs drop out)."""
    found = {}
    for key, runs in groups.items():
        ordered = sorted(runs, key=lambda r: r.order)
        if len(ordered) > 1:
            found[key] = (ordered[-1], ordered[:-1])
    return found
