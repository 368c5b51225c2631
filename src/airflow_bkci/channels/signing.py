"""Standard Webhooks signatures for the requests the webhook channel sends."""

from __future__ import annotations

import base64
import binascii
import math
import secrets
from datetime import datetime, timezone
from typing import Final

from standardwebhooks import Webhook

from airflow_bkci.exceptions import ConfigError

SECRET_PREFIX: Final = "whsec_"
# Standard Webhooks asks for keys of 24 to 64 bytes; fewer make HMAC guessable.
MIN_KEY_BYTES: Final = 24
KEY_BYTES: Final = 32

_HOW_TO_FIX: Final = (
    f"a secret is '{SECRET_PREFIX}' followed by the base64 of at least {MIN_KEY_BYTES} "
    "random bytes; generate one with: python -c "
    '"from airflow_bkci.channels.signing import generate_secret; print(generate_secret())"'
)


def generate_secret() -> str:
    """A new random secret in the Standard Webhooks form ``whsec_<base64>``."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key inside ``secret``, or :class:`ConfigError` saying what is wrong.

    The messages never quote the secret: they end up in logs.
    """
    text = secret.strip() if isinstance(secret, str) else ""
    if not text:
        raise ConfigError(f"webhook secret is empty; {_HOW_TO_FIX}")
    if not text.startswith(SECRET_PREFIX):
        raise ConfigError(f"webhook secret does not start with {SECRET_PREFIX!r}; {_HOW_TO_FIX}")
    encoded = text[len(SECRET_PREFIX) :]
    try:
        # Strict: the library's own decoder skips stray characters, which
        # would turn a mangled secret into a different key without a word.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"webhook secret is not valid base64 after {SECRET_PREFIX!r}; {_HOW_TO_FIX}"
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"webhook secret holds {len(key)} bytes, fewer than {MIN_KEY_BYTES}; {_HOW_TO_FIX}"
        )
    return key


class WebhookSigner:
    """Signs request bodies with one Standard Webhooks secret.

    Accepts exactly ``whsec_`` followed by standard base64 (padding optional,
    surrounding whitespace ignored) of at least 24 bytes, the form
    :func:`generate_secret` makes and ``standardwebhooks.Webhook`` verifies.
    Nothing else: not bare base64, not a raw password. A malformed secret
    raises :class:`ConfigError` naming the problem and the fix.
    """

    def __init__(self, secret: str) -> None:
        # Hand the library the decoded key so it does no lenient decoding of its own.
        self._webhook = Webhook(decode_secret(secret))

    def __repr__(self) -> str:
        return "WebhookSigner(secret=<hidden>)"

    def headers(
        self, msg_id: str, body: bytes, timestamp: datetime | None = None
    ) -> dict[str, str]:
        """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` for ``body``.

        ``timestamp`` defaults to now and must be time-zone aware; receivers
        reject timestamps more than five minutes from their clock, so sign
        each attempt afresh rather than reusing the headers of a retry.
        """
        if not msg_id or any(c.isspace() for c in msg_id):
            raise ValueError(f"webhook id {msg_id!r} must be non-empty and without whitespace")
        when = datetime.now(timezone.utc) if timestamp is None else timestamp
        if when.tzinfo is None:
            raise ValueError("webhook timestamp has no time zone; pass an aware datetime")
        # The library replaces tzinfo rather than converting, so convert first.
        when = when.astimezone(timezone.utc)
        signature = self._webhook.sign(msg_id=msg_id, timestamp=when, data=body.decode("utf-8"))
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(math.floor(when.timestamp())),
            "webhook-signature": signature,
        }
