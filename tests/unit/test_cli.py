"""The airflow-bkci command shows what the status store holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_bkci.cli import main
from airflow_bkci.model.event import build_id_for
from airflow_bkci.model.status import BuildStatus
from airflow_bkci.store import Store
from tests.unit.store.builders import DAG, event


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    store = Store(url)
    store.migrate()
    store.apply([event(BuildStatus.RUNNING, None), event(BuildStatus.SUCCEED, "extract", at=1)])
    store.dispose()
    return url


def test_status_lists_builds(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--store", store_url]) == 0
    out = capsys.readouterr().out
    assert build_id_for(DAG, "run-1") in out and "RUNNING" in out and "#1" in out


def test_status_prints_one_build_tree(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--store", store_url, "--build", build_id_for(DAG, "run-1")]) == 0
    tree = json.loads(capsys.readouterr().out)
    tasks = {t for stage in tree["stages"].values() for t in stage["tasks"]}
    assert tree["status"] == "RUNNING" and tasks == {"extract"}


def test_status_of_an_unknown_build_says_so(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--store", store_url, "--build", "b-nope"]) == 1
    assert "no build 'b-nope'" in capsys.readouterr().err
