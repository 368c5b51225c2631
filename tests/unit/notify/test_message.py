"""The composed message: what the owners read, and links that open the right log."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow_bkci.notify.decide import Notice, NotifyPolicy, PipelineWatch, decide
from airflow_bkci.notify.message import (
    MAX_LISTED_TASKS,
    build_url,
    compose,
    compose_digest,
    task_log_url,
)
from airflow_bkci.notify.ratelimit import Digest
from airflow_bkci.notify.recipient import EmailAddress
from airflow_bkci.notify.routing import Recipients
from tests.unit.notify.builds import BASE_URL, T0, document, failed_build, good_build, task

TO = Recipients((EmailAddress("alice@example.com"),))
RUN = "scheduled__2025-03-01T10:00:00+00:00"
RUN_URL = f"{BASE_URL}/dags/etl_daily/runs/scheduled__2025-03-01T10%3A00%3A00%2B00%3A00"


def notice_of(doc: dict[str, Any], **policy: bool) -> Notice:
    verdict = decide(doc, policy=NotifyPolicy(**policy))
    assert isinstance(verdict, Notice), verdict
    return verdict


def failing_build() -> dict[str, Any]:
    return document(
        task("extract", "success", stage="ingest", stage_name="Ingest", order=0, ended=2),
        task(
            "load.copy",
            "failed",
            try_number=3,
            max_tries=2,
            error="ValueError: bad row 17\nTraceback (most recent call last): ...",
            stage="load",
            stage_name="Load",
            order=1,
            ended=6,
        ),
        task("shard", "failed", map_index=2, order=2, ended=4, label="eu-west"),
        task("report", "upstream_failed", order=3, ended=6),
        triggering_user="zoe",
        trigger_type="ui",
    )


def test_log_links_have_the_airflow_3_form() -> None:
    # the form Airflow 3.3's TaskInstance.log_url builds and its UI router serves
    assert task_log_url(BASE_URL + "/", "etl_daily", RUN, "load.copy", -1, 3) == (
        f"{RUN_URL}/tasks/load.copy?try_number=3"
    )
    assert task_log_url(BASE_URL, "etl_daily", RUN, "shard", 2, 1) == (
        f"{RUN_URL}/tasks/shard/mapped/2?try_number=1"
    )
    assert task_log_url(BASE_URL, "etl_daily", RUN, "t", 0, None) == f"{RUN_URL}/tasks/t/mapped/0"
    assert build_url(BASE_URL, "etl_daily", "manual/odd") == (
        f"{BASE_URL}/dags/etl_daily/runs/manual%2Fodd"
    )


def test_failed_message_names_tasks_errors_tries_stages_and_logs() -> None:
    message = compose(notice_of(failing_build()), TO, BASE_URL)
    assert message.subject == "[bkci] FAILED etl_daily #42: shard[2] and 1 more failed"
    lines = message.text.splitlines()
    assert lines[:6] == [
        "Build #42 of pipeline etl_daily: FAILED",
        f"Run {RUN}",
        "Triggered: ui by zoe",
        "Started 2025-03-01 10:00:00 UTC, ended 2025-03-01 10:10:00 UTC, took 10m 0s",
        f"Build: {RUN_URL}",
        "",
    ]
    assert lines[6:12] == [
        "Failed tasks (the first to fail first; downstream tasks not counted):",
        "1. shard[2] (eu-west), try 1 of 1",
        f"   log: {RUN_URL}/tasks/shard/mapped/2?try_number=1",
        "2. load.copy in stage Load, try 3 of 3",
        "   error: ValueError: bad row 17 Traceback (most recent call last): ...",
        f"   log: {RUN_URL}/tasks/load.copy?try_number=3",
    ]
    assert "Not run because of these failures (upstream_failed): report" in lines
    assert "extract" not in message.text
    assert message.notify_type == "failure"
    assert message.recipients == TO


def test_the_message_carries_the_notice_dedupe_key() -> None:
    notice = notice_of(failing_build())
    assert compose(notice, TO, BASE_URL).dedupe_key == notice.dedupe_key


def test_html_escapes_what_the_build_says() -> None:
    doc = document(
        task("load", "failed", error="<script>alert(1)</script> & {{ secrets }}"),
        note="<b>deploy</b>",
    )
    message = compose(notice_of(doc), TO, BASE_URL)
    assert "<script>" not in message.html and "<b>deploy" not in message.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; {{ secrets }}" in message.html
    assert f'<a href="{RUN_URL}/tasks/load?try_number=1">log</a>' in message.html
    assert "<script>alert(1)</script> & {{ secrets }}" in message.text  # plain text stays plain
    assert "Note: <b>deploy</b>" in message.text


def test_a_huge_fan_out_lists_the_first_failures_and_counts_the_rest() -> None:
    shards = [task("shard", "failed", map_index=i, ended=i, order=i) for i in range(25)]
    message = compose(notice_of(document(*shards)), TO, BASE_URL)
    assert message.subject == "[bkci] FAILED etl_daily #42: shard[0] and 24 more failed"
    listed = [line for line in message.text.splitlines() if line[:1].isdigit()]
    assert len(listed) == MAX_LISTED_TASKS
    assert "... and 5 more failed tasks: see the build." in message.text


def test_long_errors_are_clipped_the_log_has_the_rest() -> None:
    doc = document(task("load", "failed", error="E" * 2000))
    message = compose(notice_of(doc), TO, BASE_URL)
    [error] = [line for line in message.text.splitlines() if "error:" in line]
    assert len(error) < 520 and error.endswith("...")


def test_a_single_failure_says_its_try_in_the_subject() -> None:
    doc = document(task("load", "failed", try_number=2, max_tries=1))
    assert compose(notice_of(doc), TO, BASE_URL).subject == (
        "[bkci] FAILED etl_daily #42: load (try 2 of 2) failed"
    )


def test_a_streak_and_a_clear_are_mentioned() -> None:
    watch = PipelineWatch()
    watch.observe(failed_build(40, minute=-30))
    watch.observe(failed_build(41, minute=-20))
    notice = watch.observe(document(task("load", "failed"), clear_number=1))
    assert isinstance(notice, Notice)
    text = compose(notice, TO, BASE_URL).text
    assert f"Run {RUN} (execution 2, after 1 clear(s))" in text
    assert "Failing for 3 builds in a row" in text


def test_recovered_message() -> None:
    watch = PipelineWatch()
    watch.observe(failed_build(40, minute=-30))
    watch.observe(failed_build(41, minute=-20))
    notice = watch.observe(good_build(42, minute=0))
    assert isinstance(notice, Notice)
    message = compose(notice, TO, BASE_URL)
    assert message.subject == "[bkci] RECOVERED etl_daily #42 after 2 failed builds"
    assert "Recovered after 2 failed build(s), failing since 2025-03-01 09:30:06 UTC" in (
        message.text
    )
    assert message.notify_type == "success"


def test_canceled_message_says_who_and_why() -> None:
    doc = document(
        task("load", "skipped"),
        state="canceled",
        canceled_by="bob",
        cancel_reason="superseded by build #43",
    )
    message = compose(notice_of(doc, canceled=True), TO, BASE_URL)
    assert message.subject == "[bkci] CANCELED etl_daily #42 by bob"
    assert "Cancel reason: superseded by build #43" in message.text
    assert message.notify_type == "warning"


def test_a_failure_no_task_explains_says_so() -> None:
    message = compose(notice_of(document(task("load", "skipped"))), TO, BASE_URL)
    assert message.subject == "[bkci] FAILED etl_daily #42: no task failed by itself"


def test_digest_message_lists_every_held_failure_with_its_log() -> None:
    watch = PipelineWatch()
    held = []
    for n in range(50):
        verdict = watch.observe(failed_build(n + 1, minute=n, error=f"ValueError: row {n}"))
        assert isinstance(verdict, Notice)
        held.append(verdict)
    # three went out; the rate limit held the other 47 for the window's digest
    digest = Digest("etl_daily", T0, T0 + timedelta(hours=1), tuple(held[3:]), 47)
    message = compose_digest(digest, TO, BASE_URL)
    assert message.subject == (
        "[bkci] etl_daily: 47 more failures (2025-03-01 10:00:00 UTC to 2025-03-01 11:00:00 UTC)"
    )
    items = [line for line in message.text.splitlines() if line.startswith("- ")]
    assert len(items) == 47
    assert items[0] == "- etl_daily #4 FAILED at 2025-03-01 10:03:06 UTC, load: ValueError: row 3"
    assert message.text.count("/tasks/load?try_number=1") == 47
    assert message.html.count("<li>") == 47
    assert message.dedupe_key == digest.dedupe_key
