"""``airflow-bkci outbox`` shows delivery, and replays, resumes and resyncs endpoints for real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_bkci.cli import main
from airflow_bkci.store import Store
from tests.recordings import example_builds, replay
from tests.unit.store.test_outbox import channel, deliver_all, dispatcher

pytestmark = pytest.mark.timeout(120)

BUILD = example_builds()[0]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """SQLite only: the outbox itself is tested on both backends in test_outbox."""
    return f"sqlite:///{tmp_path / 'status.db'}"


def use_endpoint(monkeypatch: pytest.MonkeyPatch, url: str, secret: str) -> None:
    """Configure the ``hook`` endpoint as a user would: an Airflow connection."""
    conn = {"conn_type": "bkci_webhook", "host": url, "password": secret}
    monkeypatch.setenv("AIRFLOW_CONN_HOOK", json.dumps(conn))


def outbox(store_url: str, *args: str) -> int:
    return main(["outbox", "--store", store_url, *args])


@pytest.fixture
def dead_letter(store: Store, receivers: Any) -> Any:
    """A recorded build delivered to a receiver that refused change set 3: one dead letter."""
    receiver = receivers("--reject", f"{BUILD}:3")
    d = dispatcher(store, channel(receiver.url, receiver.secret), batch_size=1)
    replay(store, [BUILD], after_each=lambda: deliver_all(d))
    return receiver


def test_status_and_dead_letters_show_what_the_endpoint_refused(
    store: Store, store_url: str, dead_letter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert outbox(store_url, "status", "--json") == 0
    (health,) = json.loads(capsys.readouterr().out)
    assert (health["endpoint"], health["dead_letters"], health["pending_lanes"]) == ("hook", 1, 0)
    assert outbox(store_url, "dead-letters") == 0
    out = capsys.readouterr().out
    assert f"{BUILD}  seq 3..3  1 events" in out and "HTTP 422" in out


def test_replay_sends_the_dead_letter_as_it_was_and_marks_it(
    store: Store,
    store_url: str,
    dead_letter: Any,
    receivers: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    back = receivers(secret=dead_letter.secret)
    use_endpoint(monkeypatch, back.url, back.secret)
    assert outbox(store_url, "replay", "--dry-run") == 0
    assert "would replay 1 dead letters (1 events) to hook" in capsys.readouterr().out
    assert back.state()["requests"] == 0  # a dry run sends nothing

    assert outbox(store_url, "replay") == 0
    assert "replayed 1 of 1 dead letters (1 events)" in capsys.readouterr().out
    assert back.state()["events"] == [f"{BUILD}:3:changed"]  # the same id: idempotent
    assert outbox(store_url, "replay") == 0
    assert "no dead letters to replay" in capsys.readouterr().out
    assert outbox(store_url, "dead-letters", "--all", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["replayed_at"] is not None


def test_replay_to_a_down_endpoint_fails_and_marks_nothing(
    store: Store,
    store_url: str,
    dead_letter: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_endpoint(monkeypatch, "http://127.0.0.1:9/", dead_letter.secret)
    assert outbox(store_url, "replay") == 1
    err = capsys.readouterr().err
    assert "stopped at dead letter #1: retry: no HTTP answer from http://127.0.0.1:9/" in err
    assert outbox(store_url, "status", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["dead_letters"] == 1


def test_replay_to_an_endpoint_no_longer_configured_says_so(
    store: Store, store_url: str, dead_letter: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert outbox(store_url, "replay", "--endpoint", "hook") == 1
    assert "endpoint 'hook' is not configured" in capsys.readouterr().err


def test_resume_reopens_a_gone_endpoint(
    store: Store, store_url: str, receivers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = receivers("--gone")
    replay(store, [BUILD])
    d = dispatcher(store, channel(gone.url, gone.secret))
    d.run_once()
    assert outbox(store_url, "status") == 0
    assert "GONE: HTTP 410" in capsys.readouterr().out
    assert outbox(store_url, "resume", "hook") == 0
    assert "hook resumed (it was stopped: HTTP 410" in capsys.readouterr().out
    back = receivers(secret=gone.secret)
    deliver_all(dispatcher(store, channel(back.url, back.secret)))
    assert back.sequences() == {BUILD: store.snapshot(BUILD)["sequence"]}  # type: ignore[index]
    assert outbox(store_url, "resume", "hook") == 0
    assert "hook was not stopped" in capsys.readouterr().out


def test_resync_sends_a_fresh_snapshot_to_a_consumer_that_lost_its_state(
    store: Store, store_url: str, receivers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    first = receivers()
    replay(store, [BUILD])
    deliver_all(dispatcher(store, channel(first.url, first.secret)))
    fresh = receivers(secret=first.secret)  # the consumer restarted with nothing
    d = dispatcher(store, channel(fresh.url, fresh.secret))
    assert outbox(store_url, "resync", "hook", "--build", BUILD) == 0
    assert "1 builds get a fresh snapshot" in capsys.readouterr().out
    deliver_all(d)
    snap = store.snapshot(BUILD)
    assert snap is not None
    assert fresh.state()["events"] == [f"{BUILD}:{snap['sequence']}:snapshot"]
    assert fresh.documents() == {BUILD: snap["document"]}
    assert outbox(store_url, "resync", "nobody") == 1


def test_bad_store_url_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert outbox("nope://x", "status") == 2
    assert "store URL 'nope://x' is not usable" in capsys.readouterr().err


def test_relay_dispatch_once_delivers_the_outbox_to_configured_endpoints(
    store: Store,
    store_url: str,
    receivers: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    receiver = receivers()
    use_endpoint(monkeypatch, receiver.url, receiver.secret)
    monkeypatch.setenv("AIRFLOW__BKCI__WEBHOOK_CONN_IDS", "hook")
    replay(store, [BUILD])
    assert main(["relay", "--dispatch", "--no-spool", "--once", "--store", store_url]) == 0
    assert "dispatched to hook:" in capsys.readouterr().out
    snap = store.snapshot(BUILD)
    assert snap is not None and receiver.documents() == {BUILD: snap["document"]}


def test_relay_dispatch_without_endpoints_says_what_to_set(
    store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIRFLOW__BKCI__WEBHOOK_CONN_IDS", "")
    assert main(["relay", "--dispatch", "--once", "--store", store_url]) == 2
    assert "set [bkci] webhook_conn_ids" in capsys.readouterr().out
