"""An example receiver for airflow-bkci build-status webhooks.

It verifies each request's Standard Webhooks signature, parses the
CloudEvents body (one event or a batch), keeps a live copy of every build
with :class:`airflow_bkci.channels.consumer.BuildMirror`, and prints the
tree whenever it changes::

    python examples/webhook_receiver.py --port 8080 --secret whsec_...
    BKCI_WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py --port 0

``--port 0`` picks a free port; the first line printed says which. Answers:
200 when the events were taken (also when a gap was found: the gap is
logged, and with ``--store-api`` the build is resynced from the store),
401 on a bad signature, 400 on a body that is not our events, 415 on another
content type. ``docs/wire-format.md`` describes the protocol.

The options under "testing aids" make the receiver misbehave on purpose, so
tests can check how the sender copes; leave them off in real use.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from airflow_bkci.channels.consumer import BuildMirror, Outcome, Result, media_type, parse_body
from airflow_bkci.channels.envelope import CONTENT_TYPE, CONTENT_TYPE_BATCH, EVENT_CHANGED
from airflow_bkci.channels.signing import decode_secret
from airflow_bkci.exceptions import ConfigError, InvalidEvent

log = logging.getLogger("webhook_receiver")

MAX_BODY = 16 * 1024 * 1024


# --- the receiver proper -------------------------------------------------------------


def render(build_id: str, sequence: int, document: dict[str, Any]) -> str:
    """One line per build: id, sequence, status, then each stage's tasks and statuses."""
    parts = [f"{build_id} #{sequence} {document.get('status', '?')}"]
    stages = document.get("stages") or {}
    for stage in sorted(stages.values(), key=lambda s: (s.get("order", 0), s.get("id", ""))):
        tasks = " ".join(
            f"{task_id}={task.get('status', '?')}"
            for task_id, task in (stage.get("tasks") or {}).items()
        )
        parts.append(f"{stage.get('name') or stage.get('id')}: {tasks}")
    return " | ".join(parts)


@dataclass
class Faults:
    """Testing aids: ways to misbehave on purpose (see the module docstring)."""

    fail_rate: float = 0.0
    delay: float = 0.0
    reject: set[tuple[str, int]] = field(default_factory=set)
    gone: bool = False
    rng: random.Random = field(default_factory=random.Random)

    def rejects(self, events: list[dict[str, Any]]) -> bool:
        """True when one of ``events`` is a change set named by ``--reject``."""
        for event in events:
            data = event.get("data")
            if event.get("type") != EVENT_CHANGED or not isinstance(data, dict):
                continue
            if (data.get("build_id"), data.get("sequence")) in self.reject:
                return True
        return False


class Receiver:
    """Everything one request needs: verify, parse, apply, record. One request at a time."""

    def __init__(
        self,
        secret: str,
        *,
        store_api: str | None = None,
        state_file: Path | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.webhook = Webhook(secret)
        self.mirror = BuildMirror()
        self.store_api = store_api.rstrip("/") if store_api else None
        self.state_file = state_file
        self.faults = faults or Faults()
        self.lock = threading.Lock()
        self.events: list[str] = []
        # Unix time each event id first arrived: what a latency measurement needs.
        self.received_at: dict[str, float] = {}
        self.requests = 0
        self.bad_signatures = 0
        self.gaps: list[dict[str, Any]] = []
        self.responses: dict[str, int] = {}

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer for one POST."""
        with self.lock:
            status, answer = self._handle(headers, body)
            self.requests += 1
            self.responses[str(status)] = self.responses.get(str(status), 0) + 1
            self.write_state()
        if self.faults.delay:
            # After applying: a sender that times out meanwhile will resend
            # events this receiver already has, which is what a test wants.
            time.sleep(self.faults.delay)
        return status, answer

    def _handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        if self.faults.gone:
            return 410, {"error": "gone (--gone)"}
        try:
            self.webhook.verify(body, headers, json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            # ValueError covers malformed signature headers and non-UTF-8 bodies.
            self.bad_signatures += 1
            log.warning("bad signature on %s: %s", headers.get("webhook-id"), exc)
            return 401, {"error": f"signature: {exc}"}
        if self.faults.fail_rate and self.faults.rng.random() < self.faults.fail_rate:
            return 500, {"error": "failed on purpose (--fail-rate)"}
        content_type = headers.get("content-type")
        if media_type(content_type) not in (CONTENT_TYPE, CONTENT_TYPE_BATCH):
            return 415, {"error": f"expected {CONTENT_TYPE} or {CONTENT_TYPE_BATCH}"}
        try:
            events = parse_body(body, content_type)
            if self.faults.rejects(events):
                return 422, {"error": "rejected on purpose (--reject)"}
            outcomes = [self._receive(event) for event in events]
        except InvalidEvent as exc:
            log.warning("bad request %s: %s", headers.get("webhook-id"), exc.reason)
            return 400, {"error": exc.reason}
        return 200, {"results": [o.result.value for o in outcomes]}

    def _receive(self, event: dict[str, Any]) -> Outcome:
        self.events.append(str(event.get("id")))
        self.received_at.setdefault(str(event.get("id")), time.time())
        outcome = self.mirror.receive(event)
        if outcome.result is Result.GAP:
            self._gap(outcome.build_id, outcome.sequence, outcome.event_sequence)
        elif outcome.changed:
            self._show(outcome.build_id)
        return outcome

    def _gap(self, build_id: str, have: int, got: int) -> None:
        log.warning("gap at %s (have %d, got %d): resync needed", build_id, have, got)
        self.gaps.append({"build_id": build_id, "have": have, "got": got})
        if self.store_api is None:
            return
        url = f"{self.store_api}/builds/{build_id}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                snapshot = json.load(response)
            self.mirror.reset(build_id, snapshot["document"], int(snapshot["sequence"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("resync of %s from %s failed: %s", build_id, url, exc)
            return
        log.info("resynced %s from %s at %d", build_id, url, self.mirror.sequence(build_id))
        self._show(build_id)

    def _show(self, build_id: str) -> None:
        document = self.mirror.document(build_id) or {}
        print(render(build_id, self.mirror.sequence(build_id), document), flush=True)

    def state(self) -> dict[str, Any]:
        return {
            "builds": {
                build_id: {"sequence": self.mirror.sequence(build_id), "document": document}
                for build_id, document in self.mirror.documents.items()
            },
            "events": self.events,
            "received_at": self.received_at,
            "requests": self.requests,
            "bad_signatures": self.bad_signatures,
            "gaps": self.gaps,
            "pending": [vars(gap) for gap in self.mirror.gaps()],
            "responses": self.responses,
        }

    def write_state(self) -> None:
        """Replace the state file in one step, so a reader never sees half of it."""
        if self.state_file is None:
            return
        directory = self.state_file.parent
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(self.state(), out)
        os.replace(tmp, self.state_file)


def handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, {"error": f"body over {MAX_BODY} bytes"})
                return
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._answer(*receiver.handle(headers, body))

        def do_GET(self) -> None:
            with receiver.lock:
                state = receiver.state()
            self._answer(200, state)

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return Handler


# --- command line --------------------------------------------------------------------


def _reject(value: str) -> tuple[str, int]:
    build_id, _, sequence = value.rpartition(":")
    if not build_id or not sequence.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not BUILD:SEQ, e.g. b-1f2e:3")
    return build_id, int(sequence)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument(
        "--secret",
        default=os.environ.get("BKCI_WEBHOOK_SECRET"),
        help="whsec_... secret shared with the sender (default: $BKCI_WEBHOOK_SECRET)",
    )
    parser.add_argument(
        "--store-api", help="base URL; on a gap, GET URL/builds/<id> and resync from it"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    aids = parser.add_argument_group("testing aids")
    aids.add_argument("--state-file", type=Path, help="write the state as JSON after each request")
    aids.add_argument(
        "--fail-rate", type=float, default=0.0, help="answer 500 at this rate, before applying"
    )
    aids.add_argument(
        "--delay", type=float, default=0.0, help="seconds to wait after applying, before answering"
    )
    aids.add_argument(
        "--reject",
        type=_reject,
        action="append",
        default=[],
        metavar="BUILD:SEQ",
        help="answer 422 to a request holding this change set (repeatable)",
    )
    aids.add_argument("--gone", action="store_true", help="answer 410 to everything")
    aids.add_argument("--seed", type=int, help="seed for --fail-rate")
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("pass --secret whsec_... or set BKCI_WEBHOOK_SECRET")
    try:
        decode_secret(args.secret)
    except ConfigError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    faults = Faults(
        fail_rate=args.fail_rate,
        delay=args.delay,
        reject=set(args.reject),
        gone=args.gone,
        rng=random.Random(args.seed),
    )
    receiver = Receiver(
        args.secret, store_api=args.store_api, state_file=args.state_file, faults=faults
    )
    receiver.write_state()
    server = ThreadingHTTPServer((args.host, args.port), handler_for(receiver))
    host, port = server.server_address[:2]
    print(f"listening on http://{host!s}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
