"""The text people read: subject, plain-text and HTML bodies of a notice or a digest.

Links point at the Airflow 3 UI. The task instance page is
``{base}/dags/{dag_id}/runs/{run_id}/tasks/{task_id}``, with
``/mapped/{map_index}`` for a mapped instance and ``?try_number=N`` to open
the log of that try: the log is that page's default tab. This is the form
Airflow 3.3's own ``TaskInstance.log_url`` builds and its UI router serves;
``base`` is Airflow's ``[api] base_url``.

Every value from the build (error summaries, notes, ids) is escaped in the
HTML body. Delivery must hand the bodies over as finished text: Airflow's
notifiers render their fields as Jinja templates when called as callbacks,
and an error summary may well contain ``{{``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from airflow_bkci.model.tree import UNGROUPED_STAGE
from airflow_bkci.notify.decide import BuildSummary, Notice, NoticeKind
from airflow_bkci.notify.ratelimit import Digest
from airflow_bkci.notify.root_cause import FailedTask
from airflow_bkci.notify.routing import Recipients
from airflow_bkci.ui_links import run_url as build_url
from airflow_bkci.ui_links import task_url as task_log_url

__all__ = [
    "MAX_ERROR_CHARS",
    "MAX_LISTED_TASKS",
    "Message",
    "build_url",
    "compose",
    "compose_digest",
    "task_log_url",
]

MAX_LISTED_TASKS = 20
"""Root causes listed one by one; a message about 500 failed mapped instances stays readable."""
MAX_ERROR_CHARS = 500
"""Characters of an error summary shown per task; the log link has the rest."""

_NOTIFY_TYPE = {
    NoticeKind.FAILED: "failure",
    NoticeKind.CANCELED: "warning",
    NoticeKind.RECOVERED: "success",
}


@dataclass(frozen=True, slots=True)
class Message:
    """One message, ready for a notifier.

    ``notify_type`` uses apprise's names (info, success, warning, failure).
    ``dedupe_key`` belongs in a header (for example ``X-BKCI-Notice``) so a
    receiver can drop a copy too.
    """

    subject: str
    text: str
    html: str
    notify_type: str
    dedupe_key: str
    recipients: Recipients


def compose(notice: Notice, recipients: Recipients, base_url: str) -> Message:
    """The message for one notice."""
    build = notice.build
    facts = _facts(notice)
    tasks = notice.root_causes[:MAX_LISTED_TASKS]
    more = len(notice.root_causes) - len(tasks)
    text = [*facts, f"Build: {build_url(base_url, build.pipeline_id, build.run_id)}"]
    page = [
        f"<p>{'<br>'.join(html.escape(f) for f in facts)}</p>",
        _html_build_link(build, base_url),
    ]
    if tasks:
        heading = "Failed tasks (the first to fail first; downstream tasks not counted):"
        text += ["", heading]
        text += [line for i, t in enumerate(tasks, 1) for line in _text_task(i, t, build, base_url)]
        page += [f"<p>{html.escape(heading)}</p>", _html_tasks(tasks, build, base_url)]
    if more:
        text.append(f"... and {more} more failed tasks: see the build.")
        page.append(f"<p>... and {more} more failed tasks: see the build.</p>")
    if notice.upstream_failed:
        skipped = _not_run(notice.upstream_failed)
        text += ["", skipped]
        page.append(f"<p>{html.escape(skipped)}</p>")
    if build.note:
        text += ["", f"Note: {build.note}"]
        page.append(f"<p>Note: {html.escape(build.note)}</p>")
    return Message(
        subject=_subject(notice),
        text="\n".join(text) + "\n",
        html="\n".join(page) + "\n",
        notify_type=_NOTIFY_TYPE[notice.kind],
        dedupe_key=notice.dedupe_key,
        recipients=recipients,
    )


def compose_digest(digest: Digest, recipients: Recipients, base_url: str) -> Message:
    """One message listing the notices a rate limit held back."""
    start, end = _when(digest.window_start), _when(digest.window_end)
    head = (
        f"Pipeline {digest.pipeline_id} kept failing: {digest.held} more notices "
        f"between {start} and {end} were held back by the rate limit."
    )
    text = [head, ""]
    items = []
    for notice in digest.notices:
        line, url = _digest_line(notice, base_url)
        text.append(f"- {line}\n  {url}")
        items.append(f'<li><a href="{html.escape(url)}">{html.escape(line)}</a></li>')
    if digest.omitted:
        text.append(f"... and {digest.omitted} more.")
        items.append(f"<li>... and {digest.omitted} more.</li>")
    return Message(
        subject=f"[bkci] {digest.pipeline_id}: {digest.held} more failures ({start} to {end})",
        text="\n".join(text) + "\n",
        html=f"<p>{html.escape(head)}</p>\n<ul>\n" + "\n".join(items) + "\n</ul>\n",
        notify_type="failure",
        dedupe_key=digest.dedupe_key,
        recipients=recipients,
    )


def _name(build: BuildSummary) -> str:
    number = f"#{build.build_num}" if build.build_num is not None else build.run_id
    return f"{build.pipeline_id} {number}"


def _subject(notice: Notice) -> str:
    build = notice.build
    head = f"[bkci] {notice.kind.value} {_name(build)}"
    if notice.kind is NoticeKind.RECOVERED:
        n = len(notice.previous_failures)
        return f"{head} after {n} failed build{'s' if n != 1 else ''}"
    if notice.kind is NoticeKind.CANCELED:
        return f"{head} by {build.canceled_by}" if build.canceled_by else head
    if not notice.root_causes:
        return f"{head}: no task failed by itself"
    first = notice.root_causes[0]
    others = len(notice.root_causes) - 1
    tail = f" and {others} more" if others else f" ({_tries(first)})"
    return f"{head}: {first.node_id}{tail} failed"


def _facts(notice: Notice) -> list[str]:
    build = notice.build
    number = f"#{build.build_num}" if build.build_num is not None else build.run_id
    facts = [f"Build {number} of pipeline {build.pipeline_id}: {notice.kind.value}"]
    run = f"Run {build.run_id}"
    if build.execute_count > 1:
        run += f" (execution {build.execute_count}, after {build.clear_number} clear(s))"
    facts.append(run)
    trigger = build.trigger_type or build.run_type
    if trigger or build.triggering_user:
        by = f" by {build.triggering_user}" if build.triggering_user else ""
        facts.append(f"Triggered: {trigger or 'unknown'}{by}")
    if build.started_at or build.ended_at:
        took = f", took {_duration(build.duration_ms)}" if build.duration_ms is not None else ""
        facts.append(f"Started {_when(build.started_at)}, ended {_when(build.ended_at)}{took}")
    if notice.kind is NoticeKind.CANCELED and build.cancel_reason:
        facts.append(f"Cancel reason: {build.cancel_reason}")
    if notice.kind is NoticeKind.RECOVERED:
        first = notice.previous_failures[0]
        facts.append(
            f"Recovered after {len(notice.previous_failures)} failed build(s), "
            f"failing since {_when(first.ended_at)}"
        )
    elif notice.failing_for > 1:
        facts.append(f"Failing for {notice.failing_for} builds in a row")
    return facts


def _text_task(number: int, task: FailedTask, build: BuildSummary, base_url: str) -> list[str]:
    lines = [f"{number}. {_task_title(task)}"]
    if task.error:
        lines.append(f"   error: {_clip(task.error)}")
    lines.append(f"   log: {_log(task, build, base_url)}")
    return lines


def _html_tasks(tasks: Iterable[FailedTask], build: BuildSummary, base_url: str) -> str:
    items = []
    for task in tasks:
        error = f"<br><code>{html.escape(_clip(task.error))}</code>" if task.error else ""
        url = html.escape(_log(task, build, base_url))
        items.append(f'<li>{html.escape(_task_title(task))}{error}<br><a href="{url}">log</a></li>')
    return "<ol>\n" + "\n".join(items) + "\n</ol>"


def _html_build_link(build: BuildSummary, base_url: str) -> str:
    url = html.escape(build_url(base_url, build.pipeline_id, build.run_id))
    return f'<p><a href="{url}">Open the build in Airflow</a></p>'


def _task_title(task: FailedTask) -> str:
    label = f" ({task.label})" if task.label else ""
    stage = "" if task.stage_id == UNGROUPED_STAGE else f" in stage {task.stage_name}"
    return f"{task.node_id}{label}{stage}, {_tries(task)}"


def _tries(task: FailedTask) -> str:
    allowed = task.tries_allowed
    return f"try {task.try_number} of {allowed}" if allowed else f"try {task.try_number}"


def _log(task: FailedTask, build: BuildSummary, base_url: str) -> str:
    return task_log_url(
        base_url, build.pipeline_id, build.run_id, task.task_id, task.map_index, task.try_number
    )


def _digest_line(notice: Notice, base_url: str) -> tuple[str, str]:
    build = notice.build
    line = f"{_name(build)} {notice.kind.value} at {_when(build.ended_at)}"
    if not notice.root_causes:
        return line, build_url(base_url, build.pipeline_id, build.run_id)
    first = notice.root_causes[0]
    error = f": {_clip(first.error, 120)}" if first.error else ""
    others = len(notice.root_causes) - 1
    line += f", {first.node_id}{f' and {others} more' if others else ''}{error}"
    return line, _log(first, build, base_url)


def _not_run(node_ids: tuple[str, ...]) -> str:
    shown = ", ".join(node_ids[:10])
    tail = f" and {len(node_ids) - 10} more" if len(node_ids) > 10 else ""
    return f"Not run because of these failures (upstream_failed): {shown}{tail}"


def _clip(text: str | None, limit: int = MAX_ERROR_CHARS) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "(unknown)"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(ms: int) -> str:
    seconds = ms // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h"] if hours else []
    if hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{seconds}s")
    return " ".join(parts)
