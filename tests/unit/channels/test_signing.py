"""Signed requests verify with the Standard Webhooks library; bad secrets say how to fix them."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from airflow_bkci.channels.signing import WebhookSigner, decode_secret, generate_secret
from airflow_bkci.exceptions import ConfigError

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
BODY = b'[{"specversion":"1.0","id":"b-1:1:changed"}]'


def test_headers_verify_with_the_standard_webhooks_library() -> None:
    headers = WebhookSigner(SECRET).headers("b-1:1:changed", BODY)

    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "b-1:1:changed"
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(BODY, headers) == [{"specversion": "1.0", "id": "b-1:1:changed"}]


def test_a_tampered_body_fails_verification() -> None:
    headers = WebhookSigner(SECRET).headers("b-1:1:changed", BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY.replace(b"1:changed", b"2:changed"), headers)


def test_another_secret_fails_verification() -> None:
    headers = WebhookSigner(SECRET).headers("b-1:1:changed", BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_the_timestamp_is_the_instant_given_in_any_zone() -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    shanghai = now.astimezone(timezone(timedelta(hours=8)))

    headers = WebhookSigner(SECRET).headers("m-1", BODY, timestamp=shanghai)

    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    Webhook(SECRET).verify(BODY, headers)


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        WebhookSigner(SECRET).headers("m-1", BODY, timestamp=datetime(2026, 1, 1))


@pytest.mark.parametrize("msg_id", ["", "two words", "line\nbreak"])
def test_an_id_that_cannot_be_a_header_is_refused(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook id"):
        WebhookSigner(SECRET).headers(msg_id, BODY)


def test_generated_secrets_are_fresh_and_accepted_by_both_sides() -> None:
    first, second = generate_secret(), generate_secret()

    assert first != second
    assert first.startswith("whsec_")
    assert len(decode_secret(first)) == 32
    headers = WebhookSigner(first).headers("m-1", BODY)
    Webhook(first).verify(BODY, headers)


def test_unpadded_base64_and_surrounding_whitespace_are_accepted() -> None:
    unpadded = "whsec_" + base64.b64encode(bytes(range(25))).decode().rstrip("=")

    headers = WebhookSigner(f"  {unpadded}\n").headers("m-1", BODY)

    Webhook(unpadded).verify(BODY, headers)


BARE = base64.b64encode(bytes(range(100, 132))).decode()


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        (BARE, "does not start with 'whsec_'"),
        ("whsec_" + BARE[:-4] + "*!" + BARE[-2:], "not valid base64"),
        ("whsec_" + BARE[:41], "not valid base64"),  # a length no base64 has
        ("whsec_", "holds 0 bytes"),
        ("whsec_" + base64.b64encode(b"short-key").decode(), "holds 9 bytes, fewer than 24"),
    ],
)
def test_a_malformed_secret_names_the_problem_and_the_fix_not_the_secret(
    secret: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        WebhookSigner(secret)

    message = str(caught.value)
    assert problem in message
    assert "generate_secret()" in message
    assert "'whsec_' followed by the base64" in message
    if key_text := secret.strip().removeprefix("whsec_"):
        assert key_text not in message
    assert caught.value.__cause__ is None


def test_the_signer_does_not_show_its_secret() -> None:
    signer = WebhookSigner(SECRET)

    assert SECRET.removeprefix("whsec_") not in repr(signer)
    assert SECRET.removeprefix("whsec_") not in str(vars(signer))
