"""Delivery of finished messages through Airflow's notifier providers: SMTP and apprise.

A message goes out one way per connection (a :class:`Route`):

- plain email addresses: one mail to all of them through the email
  connection (``[bkci] notify_email_conn_id``, else Airflow's
  ``[email] email_conn_id``, itself ``smtp_default``);
- ``conn:<id>:<address>`` where ``<id>`` is an ``smtp`` connection: a mail to
  that address through that server (merged with the plain addresses when it
  is the email connection itself);
- ``conn:<id>[:<tag>]`` where ``<id>`` is an ``apprise`` connection: apprise
  notifies the connection's services with that tag, or all of them.

Messages are handed over as finished text, never through
``BaseNotifier.__call__``, which renders its fields as Jinja templates (an
error summary may well contain ``{{``): mail goes through
``SmtpHook.send_email_smtp`` and apprise through ``AppriseHook``'s
configuration and apprise's own ``notify``, whose answer (the hook drops it)
says whether every service took the message.

A connection that does not exist, has another type or lacks what the route
needs raises :class:`~airflow_bkci.exceptions.NotifierError` naming it and
the fix, with ``permanent=True``; a server that refuses or cannot be reached
raises it with ``permanent=False``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_bkci.exceptions import NotifierError, OwnersFileError
from airflow_bkci.notify.message import Message
from airflow_bkci.notify.owners import OwnersRules
from airflow_bkci.notify.recipient import ChannelAddress, EmailAddress
from airflow_bkci.notify.routing import Recipients

__all__ = [
    "APPRISE",
    "NOTICE_HEADER",
    "SMTP",
    "AirflowNotifiers",
    "ConnectionType",
    "Notifiers",
    "Route",
    "RoutePlan",
    "check_owners_routes",
    "plan_routes",
]

log = logging.getLogger(__name__)

SMTP = "smtp"
APPRISE = "apprise"
SUPPORTED_TYPES = (SMTP, APPRISE)
NOTICE_HEADER = "X-BKCI-Notice"
"""Mail header carrying the message's dedupe key, so a mailbox rule can drop a copy too."""

ConnectionType = Callable[[str], "str | None"]
"""The type of the connection with this id, or None when it does not exist."""


@dataclass(frozen=True, slots=True)
class Route:
    """One way a message goes: a connection and whom it addresses there.

    ``targets`` are mail addresses for SMTP, tags for apprise (none: every
    service of the connection).
    """

    kind: str
    conn_id: str
    targets: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Stable within a message: one route per connection."""
        return f"{self.kind}:{self.conn_id}"


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The routes of a message, and the recipients that have none (each with its fix)."""

    routes: tuple[Route, ...] = ()
    problems: tuple[NotifierError, ...] = ()


class Notifiers(Protocol):
    """What the notification channel needs to deliver: plan the routes, send one."""

    def plan(self, recipients: Recipients) -> RoutePlan: ...

    def send(self, route: Route, message: Message) -> None:
        """Deliver ``message`` one way; raises :class:`NotifierError` when it did not go."""
        ...


def plan_routes(
    recipients: Recipients, email_conn_id: str, connection_type: ConnectionType
) -> RoutePlan:
    """Group ``recipients`` into one route per connection; unusable ones become problems."""
    known: dict[str, str | None] = {}

    def looked_up(conn_id: str) -> str | None:  # each connection is read once per message
        if conn_id not in known:
            known[conn_id] = connection_type(conn_id)
        return known[conn_id]

    mail: dict[str, list[str]] = {}
    tags: dict[str, list[str]] = {}
    everyone: set[str] = set()  # apprise connections addressed without a tag
    problems: dict[str, NotifierError] = {}
    for recipient in recipients.to:
        if isinstance(recipient, EmailAddress):
            conn_id, kind = email_conn_id, _kind(email_conn_id, looked_up, email=True)
            target: str | None = recipient.address
        elif isinstance(recipient, ChannelAddress):
            conn_id, target = recipient.conn_id, recipient.target
            kind = _kind(conn_id, looked_up, email=False)
        else:  # an unresolved user never reaches delivery
            continue
        if isinstance(kind, NotifierError):
            problems.setdefault(conn_id, kind)
        elif kind == SMTP and not target:
            problems.setdefault(str(recipient), _no_address(conn_id))
        elif kind == SMTP:
            mail.setdefault(conn_id, []).append(str(target))
        elif target is None:
            everyone.add(conn_id)
        else:
            tags.setdefault(conn_id, []).append(target)
    routes = [Route(SMTP, c, tuple(sorted(set(a)))) for c, a in sorted(mail.items())]
    for conn_id in sorted(everyone | set(tags)):
        chosen = () if conn_id in everyone else tuple(sorted(set(tags[conn_id])))
        routes.append(Route(APPRISE, conn_id, chosen))
    return RoutePlan(tuple(routes), tuple(problems.values()))


def check_owners_routes(rules: OwnersRules, connection_type: ConnectionType) -> None:
    """Raise :class:`OwnersFileError` at the first rule whose ``conn:`` cannot be delivered.

    Checks what :meth:`OwnersRules.check_connections` checks (the connection
    exists) and more: its type is one bkci sends through, and an SMTP
    connection comes with an address.
    """
    types: dict[str, str | None] = {}
    rules.check_connections(lambda c: types.setdefault(c, connection_type(c)) is not None)
    for rule in rules.rules:
        for recipient in rule.recipients:
            if not isinstance(recipient, ChannelAddress):
                continue
            kind = _kind(recipient.conn_id, lambda c: types[c], email=False)
            problem = kind if isinstance(kind, NotifierError) else None
            if kind == SMTP and not recipient.target:
                problem = _no_address(recipient.conn_id)
            if problem is not None:
                raise OwnersFileError(
                    rules.source, rule.line_number, rule.line or None, problem.problem, problem.fix
                )


def _kind(conn_id: str, connection_type: ConnectionType, *, email: bool) -> str | NotifierError:
    conn_type = connection_type(conn_id)
    if conn_type is None:
        return _missing(conn_id, email=email)
    if conn_type == "email":  # Airflow 2's name for the same SMTP settings
        conn_type = SMTP
    if conn_type not in SUPPORTED_TYPES or (email and conn_type != SMTP):
        wanted = "an smtp connection" if email else "an smtp or apprise connection"
        return NotifierError(
            conn_id,
            f"connection {conn_id!r} has type {conn_type!r}; bkci sends only through {wanted}",
            "Point the recipient at such a connection (apprise reaches Slack, Teams, "
            "Discord, webhooks and more), or change the connection's type",
            permanent=True,
        )
    return conn_type


def _missing(conn_id: str, *, email: bool) -> NotifierError:
    if email:
        fix = (
            f"Create it (airflow connections add {conn_id} --conn-type smtp --conn-host "
            'mail.example.com --conn-port 587 --conn-extra \'{"from_email": '
            '"airflow@example.com"}\') or set [bkci] notify_email_conn_id to the SMTP '
            "connection to send mail through"
        )
        return NotifierError(
            conn_id, f"email connection {conn_id!r} does not exist", fix, permanent=True
        )
    return NotifierError(
        conn_id,
        f"notifier connection {conn_id!r} does not exist",
        f"Create it (airflow connections add {conn_id} --conn-type apprise --conn-extra "
        '\'{"config": {"path": "slack://..."}}\') or fix the id in the owners file',
        permanent=True,
    )


def _no_address(conn_id: str) -> NotifierError:
    return NotifierError(
        conn_id,
        f"conn:{conn_id} names an SMTP connection but no address",
        f"Write conn:{conn_id}:<address>, or a plain address to send through "
        "[bkci] notify_email_conn_id",
        permanent=True,
    )


class AirflowNotifiers:
    """:class:`Notifiers` over Airflow connections, through the SMTP and apprise providers.

    ``guard`` is held around each connection lookup, which may read Airflow's
    database (on SQLite, the scheduler's fork guard); never around the
    network I/O of a send.
    """

    def __init__(
        self,
        email_conn_id: str,
        *,
        from_email: str | None = None,
        guard: AbstractContextManager[object] | None = None,
    ) -> None:
        self.email_conn_id = email_conn_id
        self.from_email = from_email
        self._guard = guard or contextlib.nullcontext()

    def connection(self, conn_id: str) -> Any | None:
        """The Airflow connection ``conn_id``, or None when no secrets backend has it."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        with self._guard:
            try:
                return BaseHook.get_connection(conn_id)
            except AirflowNotFoundException:
                return None

    def connection_type(self, conn_id: str) -> str | None:
        conn = self.connection(conn_id)
        return None if conn is None else str(conn.conn_type or "")

    def plan(self, recipients: Recipients) -> RoutePlan:
        return plan_routes(recipients, self.email_conn_id, self.connection_type)

    def send(self, route: Route, message: Message) -> None:
        conn = self.connection(route.conn_id)
        if conn is None:
            raise _missing(route.conn_id, email=route.kind == SMTP)
        if route.kind == SMTP:
            self._mail(route, conn, message)
        else:
            self._apprise(route, conn, message)

    def _mail(self, route: Route, conn: Any, message: Message) -> None:
        hook = _smtp_hook(route.conn_id, conn)
        sender = (conn.extra_dejson or {}).get("from_email") or self.from_email
        if not sender:
            raise NotifierError(
                route.conn_id,
                "no sender address for the mail",
                f'Set extra {{"from_email": "airflow@example.com"}} on connection '
                f"{route.conn_id!r}, or Airflow's [email] from_email",
                permanent=True,
            )
        try:
            with hook:  # connects (and logs in); closes the client on the way out
                hook.send_email_smtp(
                    to=list(route.targets),
                    subject=message.subject,
                    html_content=message.html,
                    from_email=sender,
                    custom_headers={NOTICE_HEADER: message.dedupe_key},
                )
        except Exception as exc:
            where = f"{conn.host or '?'}:{conn.port or 'default port'}"
            raise NotifierError(
                route.conn_id,
                f"the mail server {where} did not take the mail to "
                f"{', '.join(route.targets)} ({type(exc).__name__}: {exc})",
                "Check the server and the connection; the dispatcher retries with backoff",
            ) from exc
        log.info(
            "bkci notify: mailed %r to %s through %s",
            message.subject,
            ", ".join(route.targets),
            route.conn_id,
        )

    def _apprise(self, route: Route, conn: Any, message: Message) -> None:
        import apprise
        from airflow.providers.apprise.hooks.apprise import AppriseHook

        services = apprise.Apprise()
        try:
            AppriseHook(apprise_conn_id=route.conn_id).set_config_from_conn(
                conn=conn, apprise_obj=services
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise NotifierError(
                route.conn_id,
                f"apprise connection {route.conn_id!r} has no usable 'config' in its extra "
                f"({type(exc).__name__}: {exc})",
                'Set its extra to {"config": {"path": "<apprise URL>", "tag": "<tag>"}} '
                "or a list of such objects",
                permanent=True,
            ) from exc
        tags = list(route.targets) or apprise.common.MATCH_ALL_TAG
        answer = services.notify(
            body=message.text,
            title=message.subject,
            notify_type=apprise.NotifyType(message.notify_type),
            body_format=apprise.NotifyFormat.TEXT,
            tag=tags,
        )
        if _matched_nothing(answer):
            raise NotifierError(
                route.conn_id,
                f"no service of apprise connection {route.conn_id!r} has tag "
                f"{', '.join(route.targets) or 'all'}",
                "Add the tag to a service in the connection's config, or fix the tag after "
                f"conn:{route.conn_id}: in the owners file",
                permanent=True,
            )
        if not answer:
            failed = [str(getattr(r, "name", "?")) for r in _results(answer) if not r]
            which = f" ({', '.join(failed)})" if failed else ""
            raise NotifierError(
                route.conn_id,
                f"apprise could not deliver to at least one service of the connection{which}; "
                "the apprise log lines before this say why",
                "Check the service URLs in the connection's config; the dispatcher retries "
                "with backoff",
            )
        log.info("bkci notify: sent %r through apprise %s", message.subject, route.conn_id)


def _matched_nothing(answer: Any) -> bool:
    """Apprise found no service to notify: None before apprise 2, a NOMATCH status since."""
    if answer is None:
        return True
    status = getattr(answer, "status", None)
    return status is not None and getattr(status, "name", "") == "NOMATCH"


def _results(answer: Any) -> list[Any]:
    """Per-service results (apprise 2 and later); none for a plain bool."""
    try:
        return list(answer)
    except TypeError:
        return []


def _smtp_hook(conn_id: str, conn: Any) -> Any:
    """An SmtpHook over a connection already looked up (under the guard)."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    class _Looked(SmtpHook):  # type: ignore[misc]
        @classmethod
        def get_connection(cls, conn_id: str) -> Any:
            return conn

    return _Looked(smtp_conn_id=conn_id)
