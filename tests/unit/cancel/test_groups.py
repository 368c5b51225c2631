"""Cancel-previous groups: opting in, rendering keys safely, what a newer run supersedes."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_bkci.cancel.groups import (
    DAG_GROUP,
    ActiveRun,
    GroupKeys,
    GroupTemplateError,
    parse_config,
    superseded,
    template_for,
)

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


def run(n: int, *, dag_id: str = "deploy", after: int | None = None, **conf: Any) -> ActiveRun:
    return ActiveRun(
        id=n,
        dag_id=dag_id,
        run_id=f"manual__{n}",
        state="queued",
        run_after=T0 + timedelta(seconds=n if after is None else after),
        run_type="manual",
        conf=conf,
    )


def test_config_entries_map_dag_globs_to_templates() -> None:
    raw = "deploy_*={{ conf.branch }}\n etl = ; other={{ x == 1 }}"
    assert parse_config(raw) == [
        ("deploy_*", "{{ conf.branch }}"),
        ("etl", DAG_GROUP),
        ("other", "{{ x == 1 }}"),
    ]
    assert parse_config("") == []
    with pytest.raises(GroupTemplateError, match="not <dag id glob>=<template>"):
        parse_config("deploy_*")


def test_a_tag_opts_a_dag_in_and_wins_over_config() -> None:
    config = [("deploy_*", "{{ conf.branch }}")]
    assert template_for("deploy_web", [], config) == "{{ conf.branch }}"
    assert template_for("etl", [], config) is None
    assert template_for("etl", ["bkci:cancel-previous"], config) == DAG_GROUP
    assert (
        template_for("deploy_web", ["team:a", "bkci:group={{ conf.env }}"], config)
        == "{{ conf.env }}"
    )


def test_keys_come_from_the_runs_context() -> None:
    keys = GroupKeys()
    assert keys.key("{{ conf.branch }}", run(1, branch="main")) == "main"
    assert keys.key(DAG_GROUP, run(1)) == "deploy"
    assert keys.key("{{ dag_id }}:{{ conf.get('branch', 'main') }}", run(2)) == "deploy:main"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ conf.branch.upper() }}", "UndefinedError"),  # conf has no branch
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ ''.__class__.__mro__ }}", "SecurityError|unsafe|empty key"),
        ("{% for i in range(10**7) %}{% endfor %}x", "iterates more than"),
        (
            "{% for i in range(5000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}",
            "iterates",
        ),
        ("{{ 'x' * 10**9 }}", "over 4096 characters"),
        ("{{ 2 ** 100000 }}", "power over 64"),
        ("{% for i in range(9000) %}xxxxxxxxxx{% endfor %}", "renders over 4096"),
        ("{{ conf.branch", "TemplateSyntaxError"),
        ("   ", "empty key"),
    ],
)
def test_a_bad_template_is_a_contained_error_and_quick(template: str, message: str) -> None:
    keys = GroupKeys()
    started = time.monotonic()
    with pytest.raises(GroupTemplateError, match=message):
        keys.key(template, run(1))
    assert time.monotonic() - started < 5


def test_a_template_that_ran_away_is_not_run_again_but_a_missing_key_is_retried() -> None:
    keys = GroupKeys()
    looping = "{% for i in range(10**7) %}{% endfor %}x"
    with pytest.raises(GroupTemplateError):
        keys.key(looping, run(1))
    assert looping in keys.broken
    with pytest.raises(GroupTemplateError):
        keys.key("{{ conf.branch.upper() }}", run(1))
    assert keys.key("{{ conf.branch.upper() }}", run(2, branch="dev")) == "DEV"


def test_the_newest_run_of_a_group_supersedes_the_earlier_ones() -> None:
    a1, a2, a3 = run(1), run(2), run(3)
    late_but_first = run(9, after=0)  # due first, created last
    lone = run(4, dag_id="other")
    found = superseded({"main": [a3, a1, late_but_first, a2], "solo": [lone]})
    assert list(found) == ["main"]
    newest, earlier = found["main"]
    assert newest == a3
    assert earlier == [late_but_first, a1, a2]
