"""The example webhook receiver as a separate process, for tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_bkci.channels.envelope import CONTENT_TYPE_BATCH, batch_id, encode_batch
from airflow_bkci.channels.signing import WebhookSigner, generate_secret

RECEIVER = Path(__file__).parents[1] / "examples" / "webhook_receiver.py"


class ReceiverProcess:
    """``examples/webhook_receiver.py`` started with ``options``; ``stop()`` ends it."""

    def __init__(self, workdir: Path, *options: str, secret: str | None = None) -> None:
        self.secret = secret or generate_secret()
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout = workdir / "receiver.out"
        self.stderr = workdir / "receiver.err"
        command = [sys.executable, str(RECEIVER), "--port", "0", "--secret", self.secret]
        self.state_file = workdir / "receiver-state.json"
        command += ["--state-file", str(self.state_file), *options]
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            first, newline, _ = self.stdout.read_text().partition("\n")
            if newline:
                self.url = first.removeprefix("listening on ")
                self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited: {self.stderr.read_text()}")
            time.sleep(0.05)
        raise RuntimeError("receiver did not print its address within 30 s")

    def state(self) -> dict[str, Any]:
        """What the receiver holds, asked over HTTP (GET /)."""
        with urllib.request.urlopen(self.url, timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def file_state(self) -> dict[str, Any]:
        """What the receiver last wrote to its ``--state-file``."""
        return json.loads(self.state_file.read_text())  # type: ignore[no-any-return]

    def post(self, events: list[dict[str, Any]], *, secret: str | None = None) -> int:
        """Post a signed batch as a sender would; the HTTP status."""
        body = encode_batch(events)
        headers = WebhookSigner(secret or self.secret).headers(batch_id(events), body)
        headers["Content-Type"] = CONTENT_TYPE_BATCH
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    def documents(self) -> dict[str, dict[str, Any]]:
        return {b: v["document"] for b, v in self.state()["builds"].items()}

    def sequences(self) -> dict[str, int]:
        return {b: v["sequence"] for b, v in self.state()["builds"].items()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Callable[..., ReceiverProcess]]:
    """Starts receivers (``receivers(*options, secret=...)``); stops them all afterwards."""
    started: list[ReceiverProcess] = []

    def start(*options: str, secret: str | None = None) -> ReceiverProcess:
        r = ReceiverProcess(tmp_path / f"receiver-{len(started)}", *options, secret=secret)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
