"""A loopback SMTP server for tests (aiosmtpd), run as its own process.

    python smtp_server.py --out mails.jsonl [--reject-first N]

Prints ``listening on <port>`` once it accepts connections, then appends one
JSON line per message it takes (``mail_from``, ``rcpt_tos``, ``data``). The
first ``N`` messages are refused with a temporary 451, as a busy server would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class Mailbox:
    def __init__(self, out: Path, reject_first: int) -> None:
        self.out = out
        self.reject_left = reject_first

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.reject_left > 0:
            self.reject_left -= 1
            return "451 4.3.0 busy, try again later"
        content = envelope.content
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
        record: dict[str, Any] = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": text,
        }
        with self.out.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        return "250 OK"


async def serve(out: Path, reject_first: int) -> None:
    mailbox = Mailbox(out, reject_first)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(mailbox), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on {port}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reject-first", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.out, args.reject_first))


if __name__ == "__main__":
    main()
