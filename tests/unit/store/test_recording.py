"""A store can record what it applies; the recording replays to the same builds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_bkci.cli import main
from airflow_bkci.exceptions import InvalidEvent
from airflow_bkci.model.codec import dump_event, load_event
from airflow_bkci.store import Store
from airflow_bkci.store.recording import read_recording
from tests.recordings import EXAMPLES, example_batches, example_builds


def test_every_recorded_event_survives_a_round_trip() -> None:
    events = [e for batch in example_batches() for e in batch]
    assert len(events) > 100
    assert [load_event(json.loads(json.dumps(dump_event(e)))) for e in events] == events


def test_a_store_records_each_applied_batch_and_the_recording_rebuilds_it(tmp_path: Path) -> None:
    recording = tmp_path / "events.jsonl"
    first = Store(f"sqlite:///{tmp_path / 'a.db'}", record_to=recording)
    first.migrate()
    batches = [list(b) for b in example_batches()[:40]]
    for batch in batches:
        first.apply(batch)
    assert list(read_recording(recording)) == batches
    second = Store(f"sqlite:///{tmp_path / 'b.db'}")
    second.migrate()
    for batch in read_recording(recording):
        second.apply(batch)
    for build in {e.node.build_id for b in batches for e in b}:
        assert second.snapshot(build) == first.snapshot(build)
    first.dispose()
    second.dispose()


def test_a_recording_that_cannot_be_written_never_stops_the_store(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    store = Store(f"sqlite:///{tmp_path / 's.db'}", record_to=blocker / "events.jsonl")
    store.migrate()
    assert store.apply(list(example_batches()[0])).rejected == []
    assert store.recorder is None  # turned off after the first failure, with a warning
    store.dispose()


def test_a_damaged_recording_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "events.jsonl"
    good = json.dumps({"events": [dump_event(example_batches()[0][0])]})
    bad.write_text(good + "\n" + '{"events": [{"dag_id": "x"}]}\n')
    with pytest.raises(InvalidEvent, match=r"events.jsonl:2: not a recorded batch"):
        list(read_recording(bad))


def test_replay_events_rebuilds_the_example_run_in_a_fresh_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'replayed.db'}"
    assert main(["replay-events", str(EXAMPLES), "--store", url]) == 0
    out = capsys.readouterr().out
    assert "0 refused by the state machine" in out and "7 builds" in out
    store = Store(url)
    statuses = {
        store.snapshot(b)["document"]["pipeline_id"]: store.snapshot(b)["document"]["status"]  # type: ignore[index]
        for b in example_builds()
    }
    store.dispose()
    assert statuses == {
        "bkci_stages": "SUCCEED",
        "bkci_retry": "SUCCEED",
        "bkci_failure": "FAILED",
        "bkci_branch": "SUCCEED",
        "bkci_mapped": "SUCCEED",
        "bkci_deferrable": "SUCCEED",
        "bkci_chains": "SUCCEED",
    }


def test_replaying_with_recording_on_does_not_record_the_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "events.jsonl"
    recording.write_text(
        "".join(
            json.dumps({"events": [dump_event(e) for e in batch]}) + "\n"
            for batch in example_batches()[:10]
        )
    )
    monkeypatch.setenv("AIRFLOW__BKCI__RECORD_EVENTS_TO", str(recording))
    monkeypatch.setenv("AIRFLOW__BKCI__STORE_URL", f"sqlite:///{tmp_path / 's.db'}")
    assert main(["replay-events", str(recording)]) == 0
    assert "applied 10 batches" in capsys.readouterr().out
    assert len(recording.read_text().splitlines()) == 10  # nothing appended while reading
