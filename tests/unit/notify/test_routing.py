"""Who gets a notice: task owners, owner_links, the rules file, the triggering user."""

from __future__ import annotations

from airflow_bkci.notify.decide import Notice, NotifyPolicy, PipelineWatch, decide
from airflow_bkci.notify.owners import parse_owners
from airflow_bkci.notify.recipient import ChannelAddress, EmailAddress
from airflow_bkci.notify.routing import OwnerSources, Recipients, recipients_for, resolve_recipients
from tests.unit.notify.builds import document, failed_build, good_build, task

RULES = parse_owners(
    """\
etl_daily                  data@example.com
etl_daily/load             conn:slack_alerts:#etl-load
etl_daily/report           @carol
"""
)


def notice_of(doc: dict[str, object], **policy: bool) -> Notice:
    verdict = decide(doc, policy=NotifyPolicy(**policy))
    assert isinstance(verdict, Notice), verdict
    return verdict


def to(recipients: Recipients) -> list[str]:
    return [str(r) for r in recipients.to]


def test_failed_goes_to_the_root_cause_owners_and_their_rules() -> None:
    doc = document(
        task("extract", "success", order=0),
        task("load", "failed", order=1),
        task("report", "upstream_failed", order=2),
    )
    sources = OwnerSources(
        task_owners={"extract": "erin", "load": "alice", "report": "carol"},
        owner_links={"alice": "mailto:alice@example.com", "carol": "mailto:carol@example.com"},
    )
    got = recipients_for(notice_of(doc), RULES, sources)
    # not erin (her task succeeded), not carol (her task only missed its input),
    # not the pipeline's rule (the task rule for load wins, as in CODEOWNERS)
    assert to(got) == ["alice@example.com", "conn:slack_alerts:#etl-load"]
    assert got.unresolved == ()


def test_the_default_owner_is_no_recipient_unless_mapped() -> None:
    doc = document(task("load", "failed"))
    unmapped = recipients_for(notice_of(doc), None, OwnerSources(task_owners={"load": "airflow"}))
    assert not unmapped and unmapped.unresolved == ()
    mapped = OwnerSources(
        task_owners={"load": "airflow"}, owner_links={"airflow": "mailto:platform@example.com"}
    )
    assert to(recipients_for(notice_of(doc), None, mapped)) == ["platform@example.com"]


def test_owner_strings_links_and_directories() -> None:
    sources = OwnerSources(
        task_owners={"load": "alice, bob@example.com,dave,  erin"},
        owner_links={
            "alice": "mailto:alice@example.com,alice.oncall@example.com?subject=etl",
            "dave": "https://wiki.example.com/dave",  # a profile page is no address
        },
        user_emails={"erin": "erin@example.com"},
    )
    got = resolve_recipients("etl_daily", ["load"], None, sources)
    assert to(got) == [
        "alice.oncall@example.com",
        "alice@example.com",
        "bob@example.com",
        "erin@example.com",
    ]
    assert got.unresolved == ("dave",)
    assert got.emails == tuple(to(got))


def test_rules_file_users_resolve_like_owners() -> None:
    doc = document(task("report", "failed"))
    sources = OwnerSources(owner_links={"carol": "mailto:carol%40example.com"})
    assert to(recipients_for(notice_of(doc), RULES, sources)) == ["carol@example.com"]
    alone = recipients_for(notice_of(doc), RULES, OwnerSources())
    assert alone.to == () and alone.unresolved == ("carol",)


def test_mapped_instances_route_by_task_id() -> None:
    doc = document(task("load", "failed", map_index=3), task("load", "failed", map_index=7))
    got = recipients_for(notice_of(doc), RULES, OwnerSources())
    assert got.to == (ChannelAddress("slack_alerts", "#etl-load"),)


def test_a_failure_no_task_explains_goes_to_the_pipeline_rule() -> None:
    doc = document(task("load", "skipped"))  # e.g. dagrun_timeout
    assert to(recipients_for(notice_of(doc), RULES, OwnerSources())) == ["data@example.com"]


def test_recovered_goes_to_the_pipeline_and_whoever_got_the_failure() -> None:
    watch = PipelineWatch()
    watch.observe(failed_build(1, minute=10))
    recovered = watch.observe(good_build(2, minute=20))
    assert isinstance(recovered, Notice)
    sources = OwnerSources(
        task_owners={"load": "alice"}, owner_links={"alice": "mailto:alice@example.com"}
    )
    assert to(recipients_for(recovered, RULES, sources)) == [
        "alice@example.com",
        "data@example.com",
        "conn:slack_alerts:#etl-load",
    ]


def test_canceled_goes_to_the_pipeline_rule() -> None:
    doc = document(task("load", "skipped"), state="canceled", canceled_by="bob")
    got = recipients_for(notice_of(doc, canceled=True), RULES, OwnerSources())
    assert got.to == (EmailAddress("data@example.com"),)


def test_the_triggering_user_only_when_enabled() -> None:
    doc = document(task("load", "failed"), triggering_user="zoe", trigger_type="ui")
    sources = OwnerSources(user_emails={"zoe": "zoe@example.com"})
    notice = notice_of(doc)
    assert to(recipients_for(notice, None, sources)) == []
    with_user = recipients_for(notice, None, sources, include_triggering_user=True)
    assert to(with_user) == ["zoe@example.com"]


def test_a_triggering_user_named_by_address_is_that_address() -> None:
    doc = document(task("load", "failed"), triggering_user="zoe@example.com")
    got = recipients_for(notice_of(doc), None, OwnerSources(), include_triggering_user=True)
    assert to(got) == ["zoe@example.com"] and got.unresolved == ()


def test_a_digest_merges_recipients_once() -> None:
    a = Recipients((EmailAddress("a@example.com"),), ("dave",))
    b = Recipients((EmailAddress("a@example.com"), ChannelAddress("ops")), ("dave", "erin"))
    merged = a.merge(b)
    assert to(merged) == ["a@example.com", "conn:ops"]
    assert merged.unresolved == ("dave", "erin")
