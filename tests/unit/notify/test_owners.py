"""The owners rules file: every rule of the format, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_bkci.exceptions import BkciError, OwnersFileError
from airflow_bkci.notify.owners import OWNERS_FILE_OPTION, load_owners, parse_owners
from airflow_bkci.notify.recipient import (
    AirflowUser,
    ChannelAddress,
    EmailAddress,
    InvalidRecipient,
    parse_recipient,
)

PLATFORM = EmailAddress("platform@example.com")
DATA = EmailAddress("data@example.com")
ALICE = AirflowUser("alice")

RULES = parse_owners(
    """\
# general rules first, exceptions below: the last matching line wins
*                       platform@example.com
etl_*                   data@example.com   # the data team owns every ETL pipeline
etl_daily/load.*        @alice
etl_daily/**_sensor     conn:slack_alerts:#etl-sensors
etl_daily/flaky_probe
""",
    "owners",
)


def names(*recipients: object) -> list[str]:
    return [str(r) for r in recipients]


def test_last_matching_line_wins_not_the_union() -> None:
    assert RULES.recipients_for("etl_daily", "load.copy") == (ALICE,)
    assert RULES.recipients_for("etl_daily", "extract") == (DATA,)
    assert RULES.recipients_for("reports", "render") == (PLATFORM,)
    rule = RULES.rule_for("etl_daily", "load.copy")
    assert rule is not None and rule.line_number == 4


def test_a_rule_with_no_recipients_assigns_nobody() -> None:
    assert RULES.rule_for("etl_daily", "flaky_probe") is not None
    assert RULES.recipients_for("etl_daily", "flaky_probe") == ()


def test_no_matching_line_means_no_recipients() -> None:
    rules = parse_owners("etl_* data@example.com\n")
    assert rules.rule_for("reports", "render") is None
    assert rules.recipients_for("reports", "render") == ()


def test_a_pipeline_rule_covers_the_pipeline_itself_a_task_rule_does_not() -> None:
    # a RECOVERED or CANCELED message has no task: only pipeline rules speak for it
    assert RULES.recipients_for("etl_daily") == (DATA,)
    rules = parse_owners("etl/** @alice\n")
    assert rules.recipients_for("etl", "load") == (ALICE,)
    assert rules.recipients_for("etl") == ()


@pytest.mark.parametrize(
    ("task_glob", "task_id", "matches"),
    [
        ("load.*", "load.copy", True),
        ("load.*", "load.sub.copy", False),  # * stays inside one task group level
        ("load.**", "load.sub.copy", True),  # ** crosses levels
        ("load.**", "load", False),
        ("*", "extract", True),
        ("*", "load.copy", False),
        ("**", "load.copy", True),
        ("**_sensor", "wait.s3_sensor", True),
        ("*_sensor", "wait.s3_sensor", False),
        ("load.cop?", "load.copy", True),
        ("load?copy", "load.copy", False),  # ? is one character of one level
        ("[ab]_task", "a_task", True),
        ("[ab]_task", "c_task", False),
        ("[!ab]_task", "c_task", True),
        ("[!ab]_task", "a_task", False),
        ("t[0-9]", "t7", True),
        ("t[0-9]", "tx", False),
        ("Load", "load", False),  # ids are case-sensitive, as in Airflow
    ],
)
def test_task_globs(task_glob: str, task_id: str, matches: bool) -> None:
    rules = parse_owners(f"etl/{task_glob} @alice\n")
    assert (rules.rule_for("etl", task_id) is not None) is matches


@pytest.mark.parametrize(
    ("pipeline_glob", "dag_id", "matches"),
    [
        ("etl_*", "etl_daily", True),
        ("etl_*", "team.etl_daily", False),
        ("*etl*", "team.etl.daily", True),  # dots in a dag_id are plain characters
        ("etl_?aily", "etl_daily", True),
        ("etl", "etl_daily", False),  # a glob matches the whole id
    ],
)
def test_pipeline_globs(pipeline_glob: str, dag_id: str, matches: bool) -> None:
    rules = parse_owners(f"{pipeline_glob} @alice\n")
    assert (rules.rule_for(dag_id, "any") is not None) is matches


def test_comments_blank_lines_and_channel_targets_with_hash() -> None:
    rules = parse_owners(
        "\ufeff# a BOM and a comment\n\n   \n"
        "etl conn:slack:#etl conn:apprise_ops data@example.com  # tail comment\n"
        "   # an indented comment\n"
    )
    assert len(rules.rules) == 1
    assert names(*rules.recipients_for("etl")) == [
        "data@example.com",
        "conn:apprise_ops",
        "conn:slack:#etl",
    ]


def test_recipient_forms() -> None:
    assert parse_recipient("ops@example.com") == EmailAddress("ops@example.com")
    assert parse_recipient("@alice") == AirflowUser("alice")
    assert parse_recipient("conn:apprise_ops") == ChannelAddress("apprise_ops")
    # the target is the notifier's own addressee and may contain colons
    assert parse_recipient("conn:apprise_ops:tgram://bot/chat") == ChannelAddress(
        "apprise_ops", "tgram://bot/chat"
    )
    assert (
        str(ChannelAddress("smtp_ops", "oncall@example.com")) == "conn:smtp_ops:oncall@example.com"
    )


def test_duplicate_recipients_on_a_line_count_once() -> None:
    rules = parse_owners("etl @alice @alice data@example.com data@example.com\n")
    assert rules.recipients_for("etl") == (DATA, ALICE)


@pytest.mark.parametrize(
    ("line", "problem", "fix"),
    [
        ("etl/load/copy @alice", "more than one '/'", "separated by '.'"),
        ("/load @alice", "empty pipeline or task part", "'*/extract'"),
        ("etl/ @alice", "empty pipeline or task part", "without a trailing '/'"),
        ("etl:daily @alice", "characters no Airflow id has: ':'", "Globs use"),
        ("etl_[ab @alice", "unclosed or empty '['", "[abc]"),
        ("etl_[] @alice", "unclosed or empty '['", "[abc]"),
        ("etl_[z-a] @alice", "is not valid", "Globs use"),
        ("etl! @alice", "'!' outside a [...] class", "[!abc]"),
        ("etl alice", "'alice' is not a recipient", "Airflow user (@alice)"),
        ("etl conn: @bob", "'conn:' does not name a connection", "conn:<conn_id>"),
        ("etl @al:ice", "'@al:ice' is not a user name", "Write @<name>"),
        ("etl team@", "'team@' is not a recipient", "email address"),
    ],
)
def test_syntax_errors_name_file_line_and_fix(line: str, problem: str, fix: str) -> None:
    text = f"# owners\n* platform@example.com\n{line}\netl_* data@example.com\n"
    with pytest.raises(OwnersFileError) as caught:
        parse_owners(text, "/opt/airflow/owners")
    error = caught.value
    assert isinstance(error, BkciError)
    assert (error.source, error.line_number, error.line) == ("/opt/airflow/owners", 3, line)
    message = str(error)
    assert message.startswith(f"/opt/airflow/owners, line 3 ({line!r}): ")
    assert problem in message
    assert fix in message


def test_load_owners_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "owners"
    path.write_text("etl_* data@example.com\n", encoding="utf-8")
    rules = load_owners(path)
    assert rules.source == str(path)
    assert rules.recipients_for("etl_daily", "load") == (DATA,)


def test_a_missing_owners_file_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(OwnersFileError) as caught:
        load_owners(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(caught.value)
    assert f"[bkci] {OWNERS_FILE_OPTION}" in str(caught.value)
    assert caught.value.line_number is None


def test_an_owners_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "owners"
    path.write_bytes(b"etl \xff\xfe@alice\n")
    with pytest.raises(OwnersFileError, match="UTF-8"):
        load_owners(path)


def test_invalid_recipient_carries_problem_and_fix() -> None:
    with pytest.raises(InvalidRecipient) as caught:
        parse_recipient("data team")
    assert caught.value.problem == "'data team' is not a recipient"
    assert "email address" in caught.value.fix


_segment = st.text("abcxyz_0189", min_size=1, max_size=6)


@given(segments=st.lists(_segment, min_size=1, max_size=4))
def test_star_matches_exactly_the_top_level_tasks(segments: list[str]) -> None:
    task_id = ".".join(segments)
    one_level = parse_owners("etl/* @alice\n")
    every_level = parse_owners("etl/** @alice\n")
    literal = parse_owners(f"etl/{task_id} @alice\n")
    assert (one_level.rule_for("etl", task_id) is not None) is (len(segments) == 1)
    assert every_level.rule_for("etl", task_id) is not None
    # a glob with no wildcard is the id itself, dots and all
    assert literal.rule_for("etl", task_id) is not None
    assert literal.rule_for("etl", task_id + "x") is None


def test_a_connection_that_does_not_exist_is_found_at_load_naming_the_line() -> None:
    rules = parse_owners(
        "* conn:apprise_ops\netl conn:slack_alerts:#etl\nreports conn:slak_alerts:#reports\n",
        "owners",
    )
    asked: list[str] = []

    def exists(conn_id: str) -> bool:
        asked.append(conn_id)
        return conn_id in {"apprise_ops", "slack_alerts"}

    with pytest.raises(OwnersFileError) as caught:
        rules.check_connections(exists)
    assert str(caught.value) == (
        "owners, line 3 ('reports conn:slak_alerts:#reports'): connection 'slak_alerts' "
        "does not exist. Create it (airflow connections add slak_alerts ...) or fix the id "
        "in conn:slak_alerts:#reports"
    )
    assert asked == ["apprise_ops", "slack_alerts", "slak_alerts"]  # each id asked once
    rules.check_connections(lambda conn_id: True)  # all defined: no error
