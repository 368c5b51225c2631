"""The owners file is read again when it changes; a broken edit keeps the last good rules."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from airflow_bkci.exceptions import OwnersFileError
from airflow_bkci.notify import EmailAddress, OwnersRules
from airflow_bkci.notify.owners_file import OwnersFile


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str, bump: int) -> None:
    path.write_text(text)
    stamp = path.stat().st_mtime_ns + bump * 1_000_000_000  # a later edit, whatever the clock
    os.utime(path, ns=(stamp, stamp))


def test_an_edit_is_picked_up_after_the_interval(tmp_path: Path) -> None:
    path, clock = tmp_path / "owners", Clock()
    write(path, "etl a@example.com\n", 0)
    owners = OwnersFile(path, every=10, clock=clock)
    write(path, "etl b@example.com\n", 1)

    assert owners.rules().recipients_for("etl") == (EmailAddress("a@example.com"),)
    clock.now += 10
    assert owners.rules().recipients_for("etl") == (EmailAddress("b@example.com"),)


def test_a_broken_edit_keeps_the_last_good_rules_and_names_the_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, clock = tmp_path / "owners", Clock()
    write(path, "etl a@example.com\n", 0)
    owners = OwnersFile(path, every=0, clock=clock)
    write(path, "etl a@example.com\netl/[z-a] b@example.com\n", 1)

    with caplog.at_level(logging.ERROR, logger="airflow_bkci"):
        rules = owners.rules()
        owners.rules()  # the same broken edit is reported once

    assert rules.recipients_for("etl") == (EmailAddress("a@example.com"),)
    assert caplog.text.count(f"{path}, line 2 ('etl/[z-a] b@example.com')") == 1
    assert "rules loaded before this edit" in caplog.text


def test_a_first_load_that_does_not_parse_raises(tmp_path: Path) -> None:
    path = tmp_path / "owners"
    path.write_text("# owners\n\netl alice\n")
    with pytest.raises(OwnersFileError) as info:
        OwnersFile(path)
    assert info.value.line_number == 3
    assert str(info.value).startswith(f"{path}, line 3 ('etl alice'): 'alice' is not a recipient")


def test_a_failed_check_is_logged_and_the_rules_still_apply(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "owners"
    path.write_text("etl a@example.com\n")

    def check(rules: OwnersRules) -> None:
        raise OwnersFileError(rules.source, 1, "etl a@example.com", "a problem", "The fix")

    with caplog.at_level(logging.ERROR, logger="airflow_bkci"):
        owners = OwnersFile(path, check)
    assert owners.rules().recipients_for("etl") == (EmailAddress("a@example.com"),)
    assert "line 1 ('etl a@example.com'): a problem. The fix" in caplog.text
