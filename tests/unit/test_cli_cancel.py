"""``airflow-bkci cancel``: arguments into a request, results into a table."""

from __future__ import annotations

import argparse
import io
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_bkci.cancel.request import BuildResult, CancelRejected, CancelResult, Outcome
from airflow_bkci.cli import main
from airflow_bkci.cli.cancel import (
    add_cancel_parser,
    build_request,
    parse_age,
    parse_run,
    print_table,
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_cancel_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["cancel", *argv])


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1.5d", 129600)]
)
def test_ages(text: str, seconds: float) -> None:
    assert parse_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2w", "-1h", "h"])
def test_bad_ages_say_what_is_expected(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"use e\.g\. 90s, 15m, 2h or 1d"):
        parse_age(text)


def test_a_run_id_may_hold_slashes_a_dag_id_may_not() -> None:
    assert parse_run("etl/manual__2026-12-01T10:00:00+00:00") == (
        "etl",
        "manual__2026-12-01T10:00:00+00:00",
    )
    assert parse_run("etl/a/b") == ("etl", "a/b")
    for bad in ("etl", "/run", "etl/"):
        with pytest.raises(argparse.ArgumentTypeError, match="DAG_ID/RUN_ID"):
            parse_run(bad)


def test_named_builds_and_a_file_make_one_request(tmp_path: Path) -> None:
    listing = tmp_path / "runs.txt"
    listing.write_text("# stale\netl/r2\n\netl/r3\n")
    request = build_request(
        parse("etl/r1", "--from-file", str(listing), "--reason", "stale", "--user", "ops")
    )
    assert request.runs == [("etl", "r1"), ("etl", "r2"), ("etl", "r3")]
    assert (request.reason, request.user, request.source, request.filter) == (
        "stale",
        "ops",
        "cli",
        None,
    )
    assert request.problems() == []


def test_a_json_file_of_builds(tmp_path: Path) -> None:
    listing = tmp_path / "runs.json"
    listing.write_text('[{"dag_id": "etl", "run_id": "r1"}]')
    assert build_request(parse("--from-file", str(listing), "--reason", "x")).runs == [
        ("etl", "r1")
    ]
    listing.write_text('[{"dag": "etl"}]')
    with pytest.raises(CancelRejected, match="not a JSON list"):
        build_request(parse("--from-file", str(listing), "--reason", "x"))


def test_filters_make_a_run_filter() -> None:
    request = build_request(
        parse(
            "--dag-id",
            "a",
            "--dag-id",
            "b",
            "--state",
            "running",
            "--older-than",
            "2h",
            "--conf",
            "branch=main",
            "--conf",
            "n=3",
            "--reason",
            "x",
            "--dry-run",
        )
    )
    assert request.filter is not None
    assert request.filter.dag_ids == ("a", "b")
    assert request.filter.states == ("running",)
    assert request.filter.older_than == timedelta(hours=2)
    assert request.filter.conf == {"branch": "main", "n": 3}
    assert request.dry_run and request.user.startswith("cli:")


def test_the_table_says_what_happened_to_each_build() -> None:
    result = CancelResult(
        "c-1",
        True,
        [
            BuildResult("etl", "r1", Outcome.CANCELED, "running", "failed", ["a", "b"], ["c"]),
            BuildResult("etl", "r2", Outcome.ALREADY_FINISHED, "success", "success"),
        ],
        duplicates=[("etl", "r1")],
    )
    out = io.StringIO()
    print_table(result, out)
    lines = out.getvalue().splitlines()
    assert "canceled" in lines[1] and lines[1].split()[4:7] == ["2", "1", "0"]
    assert "already_finished" in lines[2]
    assert lines[-1].startswith("2 builds: 1 canceled, 1 already_finished (would change in")
    assert lines[-1].endswith("; 1 duplicates ignored")


def test_the_command_refuses_a_request_without_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["cancel", "etl/r1"])
    assert exited.value.code == 2
    assert "--reason" in capsys.readouterr().err
