"""Owner-routed notifications, decided from the status stream: the pure core.

For each build document the stream delivers (no Airflow, no I/O here)::

    watch = PipelineWatch(NotifyPolicy(canceled=False))
    limiter = RateLimiter(RateLimit(messages=3, window=timedelta(hours=1)))
    rules = load_owners("/opt/airflow/bkci-owners")     # OwnersFileError names the line

    verdict = watch.observe(document)                    # Notice or Skip(reason)
    if isinstance(verdict, Notice) and sent_log.claim(verdict.dedupe_key):
        admission = limiter.admit(verdict)
        if admission.digest:                             # a recovery flushed a digest
            ...compose_digest(admission.digest, recipients, base_url) and deliver
        if admission.send:
            to = recipients_for(verdict, rules, OwnerSources(task_owners, owner_links))
            message = compose(verdict, to, base_url)     # then deliver; on failure
                                                         # sent_log.release(key)
    for digest in limiter.due():                         # poll, e.g. every minute
        ...compose_digest(digest, recipients, base_url) and deliver

:class:`airflow_bkci.channels.notify.NotifyChannel` does exactly this for the
dispatcher, with the store's sent log (:mod:`airflow_bkci.store.notices`),
owners from Airflow (:mod:`.dag_owners`), a reloading owners file
(:mod:`.owners_file`) and delivery through the SMTP and apprise providers
(:mod:`.deliver`); those modules touch Airflow and I/O, the ones exported here
do not.
"""

from airflow_bkci.notify.decide import (
    BuildOutcome,
    BuildSummary,
    Notice,
    NoticeKind,
    NotifyPolicy,
    PipelineWatch,
    Skip,
    decide,
    dedupe_key,
)
from airflow_bkci.notify.message import Message, build_url, compose, compose_digest, task_log_url
from airflow_bkci.notify.owners import OwnersRule, OwnersRules, load_owners, parse_owners
from airflow_bkci.notify.ratelimit import Admission, Digest, RateLimit, RateLimiter
from airflow_bkci.notify.recipient import (
    AirflowUser,
    ChannelAddress,
    EmailAddress,
    InvalidRecipient,
    Recipient,
    parse_recipient,
)
from airflow_bkci.notify.root_cause import FailedTask, root_causes, upstream_failed
from airflow_bkci.notify.routing import OwnerSources, Recipients, recipients_for, resolve_recipients
from airflow_bkci.notify.sentlog import MemorySentLog, SentLog

__all__ = [
    "Admission",
    "AirflowUser",
    "BuildOutcome",
    "BuildSummary",
    "ChannelAddress",
    "Digest",
    "EmailAddress",
    "FailedTask",
    "InvalidRecipient",
    "MemorySentLog",
    "Message",
    "Notice",
    "NoticeKind",
    "NotifyPolicy",
    "OwnerSources",
    "OwnersRule",
    "OwnersRules",
    "PipelineWatch",
    "RateLimit",
    "RateLimiter",
    "Recipient",
    "Recipients",
    "SentLog",
    "Skip",
    "build_url",
    "compose",
    "compose_digest",
    "decide",
    "dedupe_key",
    "load_owners",
    "parse_owners",
    "parse_recipient",
    "recipients_for",
    "resolve_recipients",
    "root_causes",
    "task_log_url",
    "upstream_failed",
]
