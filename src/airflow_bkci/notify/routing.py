"""Who gets a notice: owners of the failed tasks, the rules file, the triggering user.

Sources, all plain data (:mod:`airflow_bkci.notify.dag_owners` reads them from Airflow):

- each root-cause task's Airflow ``owner`` (a name, or several separated by
  commas; an owner that is itself an email address is used as one);
- the DAG's ``owner_links`` (owner name -> link): a ``mailto:`` link gives
  that owner's addresses, any other link (a profile page) gives none;
- the owners rules file (:mod:`airflow_bkci.notify.owners`);
- optionally, the user who triggered the build (a name, or an address used
  as one).

Names become addresses through ``owner_links`` first, then a directory of
user addresses (for example from the auth manager). Airflow's default owner
(``airflow``, ``[operators] default_owner``) is on every task nobody gave an
owner, so it is no recipient unless ``owner_links`` maps it. A name with no
address is listed in :attr:`Recipients.unresolved`, never guessed.

Which tasks count: FAILED notices go to the owners of the root causes (the
pipeline's own rule only when no task failed by itself); CANCELED and
RECOVERED notices are about the whole build, so the pipeline's rule applies
and, for RECOVERED, the owners of the tasks whose failures it ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from airflow_bkci.notify.decide import Notice, NoticeKind
from airflow_bkci.notify.owners import OwnersRules
from airflow_bkci.notify.recipient import (
    AirflowUser,
    EmailAddress,
    Recipient,
    parse_recipient,
    sort_recipients,
)

__all__ = [
    "AIRFLOW_DEFAULT_OWNER",
    "NOTIFY_TRIGGERING_USER_OPTION",
    "OwnerSources",
    "Recipients",
    "recipients_for",
    "resolve_recipients",
]

AIRFLOW_DEFAULT_OWNER = "airflow"
"""Airflow's ``[operators] default_owner``: the owner of tasks nobody gave one."""

NOTIFY_TRIGGERING_USER_OPTION = "notify_triggering_user"
"""``[bkci]`` option (boolean, default False): also notify who triggered the build."""


@dataclass(frozen=True, slots=True)
class OwnerSources:
    """What the DAG and the deployment say about owners, as plain data."""

    task_owners: Mapping[str, str] = field(default_factory=dict)  # task_id -> task.owner
    owner_links: Mapping[str, str] = field(default_factory=dict)  # the DAG's owner_links
    user_emails: Mapping[str, str] = field(default_factory=dict)  # user name -> address
    default_owner: str = AIRFLOW_DEFAULT_OWNER


@dataclass(frozen=True, slots=True)
class Recipients:
    """Where a message goes: addresses and notifier channels, plus names left unresolved."""

    to: tuple[Recipient, ...] = ()  # EmailAddress and ChannelAddress only
    unresolved: tuple[str, ...] = ()  # user or owner names with no address

    def __bool__(self) -> bool:
        return bool(self.to)

    def merge(self, *others: Recipients) -> Recipients:
        """All recipients of this and ``others`` once each (a digest's recipients)."""
        every = [self, *others]
        return Recipients(
            sort_recipients([r for each in every for r in each.to]),
            tuple(sorted({n for each in every for n in each.unresolved})),
        )

    @property
    def emails(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.to if isinstance(r, EmailAddress))


def recipients_for(
    notice: Notice,
    rules: OwnersRules | None,
    sources: OwnerSources,
    *,
    include_triggering_user: bool = False,
) -> Recipients:
    """The recipients of ``notice`` (see the module docstring for which tasks count)."""
    if notice.kind is NoticeKind.RECOVERED:
        task_ids = [t for failure in notice.previous_failures for t in failure.failed_tasks]
    else:
        task_ids = [task.task_id for task in notice.root_causes]
    return resolve_recipients(
        notice.pipeline_id,
        task_ids,
        rules,
        sources,
        whole_pipeline=notice.kind is not NoticeKind.FAILED or not task_ids,
        triggering_user=notice.build.triggering_user if include_triggering_user else None,
    )


def resolve_recipients(
    pipeline_id: str,
    task_ids: Sequence[str],
    rules: OwnersRules | None,
    sources: OwnerSources,
    *,
    whole_pipeline: bool = False,
    triggering_user: str | None = None,
) -> Recipients:
    """Recipients for ``task_ids`` of a pipeline; ``whole_pipeline`` adds its own rule."""
    wanted: list[Recipient] = []
    distinct = list(dict.fromkeys(task_ids))
    if rules is not None:
        targets: list[str | None] = [*distinct, None] if whole_pipeline else list(distinct)
        for task_id in targets:
            wanted.extend(rules.recipients_for(pipeline_id, task_id))
    for task_id in distinct:
        for owner in _owner_names(sources.task_owners.get(task_id)):
            if owner != sources.default_owner or owner in sources.owner_links:
                wanted.append(_as_recipient(owner))
    if triggering_user:
        # with an SSO auth manager the user name often is the address
        wanted.append(_as_recipient(triggering_user))
    return _resolve(wanted, sources)


def _owner_names(owner: str | None) -> Iterable[str]:
    return (name.strip() for name in (owner or "").split(",") if name.strip())


def _as_recipient(owner: str) -> Recipient:
    try:
        recipient = parse_recipient(owner)
    except ValueError:
        return AirflowUser(owner)
    # an owner is a name or an address; "@x" and "conn:" forms are rules-file syntax
    return recipient if isinstance(recipient, EmailAddress) else AirflowUser(owner)


def _resolve(wanted: Iterable[Recipient], sources: OwnerSources) -> Recipients:
    to: list[Recipient] = []
    unresolved: set[str] = set()
    for recipient in wanted:
        if not isinstance(recipient, AirflowUser):
            to.append(recipient)
            continue
        addresses = _addresses(recipient.name, sources)
        if addresses:
            to.extend(addresses)
        else:
            unresolved.add(recipient.name)
    return Recipients(sort_recipients(to), tuple(sorted(unresolved)))


def _addresses(name: str, sources: OwnerSources) -> list[EmailAddress]:
    link = sources.owner_links.get(name, "")
    if link.lower().startswith("mailto:"):
        # mailto:a@x.org,b@x.org?subject=... (RFC 6068): addresses before the "?"
        listed = unquote(link[len("mailto:") :].split("?", 1)[0])
        found = [EmailAddress(a.strip()) for a in listed.split(",") if a.strip()]
        if found:
            return found
    address = sources.user_emails.get(name)
    return [EmailAddress(address)] if address else []
