"""Who a notice goes to: an email address, an Airflow user, or a notifier connection.

Three kinds, each with one written form (the owners file uses the same forms):

``alice@example.com``
    An email address, sent through the default email connection
    (:data:`DEFAULT_EMAIL_CONNECTION_OPTION`).
``@alice``
    An Airflow user or task owner by name. It has no address of its own: the
    resolver in :mod:`airflow_bkci.notify.routing` turns it into email
    addresses through the DAG's ``owner_links`` (``mailto:`` links) or a
    directory of user addresses; a name it cannot resolve is reported, not sent.
``conn:<conn_id>`` or ``conn:<conn_id>:<target>``
    A notifier addressed by an Airflow Connection (an apprise, Slack or SMTP
    connection, ...). ``target`` is handed to that notifier as its addressee
    (an apprise tag, a Slack channel, a mail address) and may itself contain
    colons; without it the connection's own default applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_EMAIL_CONNECTION_OPTION",
    "AirflowUser",
    "ChannelAddress",
    "EmailAddress",
    "InvalidRecipient",
    "Recipient",
    "parse_recipient",
    "sort_recipients",
]

DEFAULT_EMAIL_CONNECTION_OPTION = "notify_email_conn_id"
"""``[bkci]`` option naming the connection plain email addresses go through
(default: Airflow's ``[email] email_conn_id``, itself ``smtp_default``)."""

CHANNEL_PREFIX = "conn:"

# Airflow ids (dag_id, task_id, connection id) are letters, digits, "_", "." and "-".
_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")
# Deliberately loose: the mail server is the judge; this only catches typos
# that would otherwise pass as an address (a missing domain, a space).
_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_USER = re.compile(r"^@[^@\s,;<>:]+$")


class InvalidRecipient(ValueError):
    """Text that names no recipient; ``problem`` and ``fix`` say why and what to write."""

    def __init__(self, text: str, problem: str, fix: str) -> None:
        self.text = text
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}. {fix}")


@dataclass(frozen=True, slots=True)
class EmailAddress:
    """A mail address, delivered through the default email connection."""

    address: str

    def __str__(self) -> str:
        return self.address


@dataclass(frozen=True, slots=True)
class AirflowUser:
    """An Airflow user or task owner by name; resolved to addresses before sending."""

    name: str

    def __str__(self) -> str:
        return f"@{self.name}"


@dataclass(frozen=True, slots=True)
class ChannelAddress:
    """A notifier connection, optionally with the addressee that notifier understands."""

    conn_id: str
    target: str | None = None

    def __str__(self) -> str:
        suffix = f":{self.target}" if self.target else ""
        return f"{CHANNEL_PREFIX}{self.conn_id}{suffix}"


Recipient = EmailAddress | AirflowUser | ChannelAddress

_KIND_ORDER = {EmailAddress: 0, AirflowUser: 1, ChannelAddress: 2}


def sort_recipients(recipients: set[Recipient] | list[Recipient]) -> tuple[Recipient, ...]:
    """Distinct recipients in a stable order (emails, users, channels; then by text)."""
    return tuple(sorted(set(recipients), key=lambda r: (_KIND_ORDER[type(r)], str(r))))


def parse_recipient(text: str) -> Recipient:
    """The recipient ``text`` names; raises :class:`InvalidRecipient` saying the fix."""
    if text.startswith(CHANNEL_PREFIX):
        conn_id, _, target = text[len(CHANNEL_PREFIX) :].partition(":")
        if not _ID.match(conn_id):
            raise InvalidRecipient(
                text,
                f"{text!r} does not name a connection",
                "Write conn:<conn_id> or conn:<conn_id>:<target>, where conn_id is an "
                "Airflow Connection id (letters, digits, '_', '.', '-')",
            )
        return ChannelAddress(conn_id, target or None)
    if text.startswith("@"):
        if not _USER.match(text):
            raise InvalidRecipient(
                text,
                f"{text!r} is not a user name",
                "Write @<name> with no spaces, commas, colons or second '@'",
            )
        return AirflowUser(text[1:])
    if _EMAIL.match(text):
        return EmailAddress(text)
    raise InvalidRecipient(
        text,
        f"{text!r} is not a recipient",
        "Write an email address (alice@example.com), an Airflow user "
        f"(@{text.partition('@')[0] or 'alice'}) or a notifier connection "
        "(conn:<conn_id>[:<target>])",
    )
