"""Real receivers for notification tests: an SMTP server process and an HTTP endpoint."""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

SMTP_SERVER = Path(__file__).with_name("smtp_server.py")


@dataclass(frozen=True)
class Mail:
    """One message as the SMTP server took it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def to(self) -> list[str]:
        return [a.strip() for a in str(self.message["To"]).split(",")]

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        part = self.message.get_body(("html", "plain"))
        return "" if part is None else str(part.get_content())  # type: ignore[attr-defined]


class SmtpReceiver:
    """``smtp_server.py`` in a process of its own, on a free loopback port; ``stop()`` ends it."""

    def __init__(self, workdir: Path, *, reject_first: int = 0) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.mailbox = workdir / "mails.jsonl"
        self.log = workdir / "smtp.out"
        command = [sys.executable, str(SMTP_SERVER), "--out", str(self.mailbox)]
        command += ["--reject-first", str(reject_first)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            first, newline, _ = self.log.read_text().partition("\n")
            if newline and first.startswith("listening on "):
                self.port = int(first.removeprefix("listening on "))
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"SMTP server exited: {self.log.read_text()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("SMTP server did not print its port within 30 s")

    def connection(self, **extra: Any) -> dict[str, Any]:
        """An Airflow ``smtp`` connection (JSON form) to this server: plain SMTP, no retries."""
        options = {
            "from_email": "airflow@example.test",
            "disable_ssl": True,
            "disable_tls": True,
            "retry_limit": 0,
            "timeout": 10,
            **extra,
        }
        return {"conn_type": "smtp", "host": "127.0.0.1", "port": self.port, "extra": options}

    def mails(self) -> list[Mail]:
        if not self.mailbox.exists():
            return []
        found = []
        for line in self.mailbox.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            message = email.message_from_string(record["data"], policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            found.append(Mail(record["mail_from"], record["rcpt_tos"], message))
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class HttpReceiver:
    """A loopback HTTP endpoint in a thread: records every POST body (apprise's ``json://``)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.posts.append({"path": self.path, "body": json.loads(body or b"null")})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.stop()
