"""The decision over the status stream: which builds notify, once, and of what."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from airflow_bkci.model.status import BuildStatus
from airflow_bkci.notify.decide import (
    BuildOutcome,
    Notice,
    NoticeKind,
    NotifyPolicy,
    PipelineWatch,
    Skip,
    decide,
    dedupe_key,
)
from airflow_bkci.notify.sentlog import MemorySentLog, SentLog
from tests.unit.notify.builds import at, document, failed_build, good_build, task

S = BuildStatus
K = NoticeKind


def kinds(watch: PipelineWatch, *docs: dict[str, Any]) -> list[str]:
    out = []
    for doc in docs:
        verdict = watch.observe(doc)
        out.append(verdict.kind.value if isinstance(verdict, Notice) else "-")
    return out


def notice(verdict: Notice | Skip) -> Notice:
    assert isinstance(verdict, Notice), verdict
    return verdict


def test_no_notice_while_the_build_runs() -> None:
    doc = document(task("load", "failed"), task("report", None), state="running")
    verdict = decide(doc)
    assert isinstance(verdict, Skip)
    assert "RUNNING" in verdict.reason


def test_no_notice_for_a_try_that_will_retry_then_one_for_the_final_failure() -> None:
    watch = PipelineWatch()
    retrying = document(task("load", "up_for_retry", try_number=1, max_tries=1), state="running")
    # a document may say FAILED before the task's last state arrives: it is behind, wait
    behind = document(task("load", "up_for_retry", try_number=1, max_tries=1), state="failed")
    final = document(task("load", "failed", try_number=2, max_tries=1, error="boom"))
    assert kinds(watch, retrying, behind) == ["-", "-"]
    skipped = watch.observe(behind)
    assert isinstance(skipped, Skip) and "load (RETRY)" in skipped.reason
    failed = notice(watch.observe(final))
    assert failed.kind is K.FAILED
    assert [(t.node_id, t.try_number) for t in failed.root_causes] == [("load", 2)]


def test_failed_goes_out_once_however_often_the_document_is_resent() -> None:
    watch, sent = PipelineWatch(), MemorySentLog()
    doc = failed_build(7, minute=10)
    enriched = failed_build(7, minute=10, error="ValueError: bad row 17 (late enrichment)")
    verdicts = [notice(watch.observe(d)) for d in (doc, doc, enriched, doc)]
    keys = {v.dedupe_key for v in verdicts}
    assert len(keys) == 1
    assert [sent.claim(v.dedupe_key) for v in verdicts] == [True, False, False, False]


def test_the_dedupe_key_names_build_kind_and_clear() -> None:
    doc = failed_build(7, minute=10)
    assert notice(decide(doc)).dedupe_key == f"bkci-notice/{doc['id']}/failed/0"
    assert dedupe_key("b-1", K.RECOVERED, 2) == "bkci-notice/b-1/recovered/2"


def test_canceled_builds_notify_only_when_enabled() -> None:
    doc = document(
        task("load", "failed", ended=3),
        state="canceled",
        canceled_by="alice",
        cancel_reason="superseded by a newer run",
    )
    off = decide(doc)
    assert isinstance(off, Skip) and "notify_canceled" in off.reason
    on = notice(decide(doc, policy=NotifyPolicy(canceled=True)))
    assert on.kind is K.CANCELED
    assert (on.build.canceled_by, on.build.cancel_reason) == ("alice", "superseded by a newer run")
    assert on.dedupe_key.endswith("/canceled/0")


def test_recovered_after_failures_and_not_after_a_success() -> None:
    watch = PipelineWatch()
    builds = [
        good_build(1, minute=10),
        failed_build(2, minute=20),
        failed_build(3, minute=30),
        good_build(4, minute=40),
        good_build(5, minute=50),
    ]
    verdicts = [watch.observe(b) for b in builds]
    assert [v.kind.value if isinstance(v, Notice) else "-" for v in verdicts] == [
        "-",
        "FAILED",
        "FAILED",
        "RECOVERED",
        "-",
    ]
    assert notice(verdicts[2]).failing_for == 2
    recovered = notice(verdicts[3])
    assert [o.build_id for o in recovered.previous_failures] == [builds[1]["id"], builds[2]["id"]]
    assert recovered.previous_failures[0].failed_tasks == ("load",)


def test_the_first_build_of_a_pipeline_never_recovers() -> None:
    verdict = decide(good_build(1, minute=10))
    assert isinstance(verdict, Skip)


def test_recovered_can_be_turned_off() -> None:
    watch = PipelineWatch(NotifyPolicy(recovered=False))
    assert kinds(watch, failed_build(1, minute=10), good_build(2, minute=20)) == ["FAILED", "-"]


def test_canceled_builds_count_for_recovery_only_when_canceled_notices_are_on() -> None:
    def run(policy: NotifyPolicy, *states: str) -> list[str]:
        watch = PipelineWatch(policy)
        docs = [
            document(
                task("load", s if s != "canceled" else "failed", ended=m),
                state=s,
                ended=m,
                run_id=f"run-{m}",
            )
            for m, s in zip(range(10, 100, 10), states, strict=False)
        ]
        return kinds(watch, *docs)

    assert run(NotifyPolicy(), "success", "canceled", "success") == ["-", "-", "-"]
    assert run(NotifyPolicy(), "failed", "canceled", "success") == ["FAILED", "-", "RECOVERED"]
    on = NotifyPolicy(canceled=True)
    assert run(on, "success", "canceled", "success") == ["-", "CANCELED", "RECOVERED"]


def test_before_means_ended_before_not_arrived_before() -> None:
    # builds 1 and 2 overlap: 2 fails at minute 20, 1 succeeds at minute 15 but
    # its document comes last; it did not recover from a failure after it
    history = [
        BuildOutcome.from_document(good_build(0, minute=5)),
        BuildOutcome.from_document(failed_build(2, minute=20)),
    ]
    late = good_build(1, minute=15)
    assert isinstance(decide(late, [h for h in history if h]), Skip)
    later = good_build(3, minute=30)
    assert notice(decide(later, [h for h in history if h])).kind is K.RECOVERED


def test_each_clear_of_a_build_is_a_new_execution_with_its_own_key() -> None:
    watch, sent = PipelineWatch(), MemorySentLog()
    first = document(task("load", "failed", ended=10), ended=10)
    again = document(task("load", "failed", ended=20), clear_number=1, ended=20)
    fixed = document(task("load", "success", ended=30), state="success", clear_number=2, ended=30)
    verdicts = [notice(watch.observe(d)) for d in (first, again, fixed)]
    assert len({v.build.build_id for v in verdicts}) == 1
    assert [v.kind for v in verdicts] == [K.FAILED, K.FAILED, K.RECOVERED]
    assert [v.dedupe_key.rsplit("/", 2)[1:] for v in verdicts] == [
        ["failed", "0"],
        ["failed", "1"],
        ["recovered", "2"],
    ]
    assert all(sent.claim(v.dedupe_key) for v in verdicts)


def test_a_failed_build_marked_success_by_hand_recovers() -> None:
    watch = PipelineWatch()
    failed = document(task("load", "failed", ended=10), ended=10)
    marked = document(task("load", "success", ended=12), state="success", ended=12)
    assert kinds(watch, failed, marked) == ["FAILED", "RECOVERED"]


def test_after_a_restart_resends_are_dropped_and_recovery_still_seen() -> None:
    sent: SentLog = MemorySentLog()  # stands for the persistent log: it survives the restart
    failed, fixed = failed_build(8, minute=20), good_build(9, minute=30)

    before = PipelineWatch()
    first = notice(before.observe(failed))
    assert sent.claim(first.dedupe_key)

    # restart: a new watch, seeded from the store's build list, gets the same
    # document again (the stream resends what it had not acknowledged)
    after = PipelineWatch()
    store_rows = [
        {"id": failed["id"], "status": "FAILED", "ended_at": at(20.1).isoformat()},
        {"id": "b-older", "status": "SUCCEED", "ended_at": at(5).isoformat()},
        {"id": "b-running", "status": "RUNNING", "ended_at": None},
    ]
    after.seed("etl_daily", (BuildOutcome.from_summary(r) for r in store_rows))
    resent = notice(after.observe(failed))
    assert resent.dedupe_key == first.dedupe_key
    assert not sent.claim(resent.dedupe_key)

    recovered = notice(after.observe(fixed))
    assert recovered.kind is K.RECOVERED
    assert sent.claim(recovered.dedupe_key)
    assert not sent.claim(notice(after.observe(fixed)).dedupe_key)


def test_a_delivery_that_failed_can_be_claimed_again() -> None:
    sent = MemorySentLog()
    key = notice(decide(failed_build(7, minute=10))).dedupe_key
    assert sent.claim(key)
    sent.release(key)
    assert sent.claim(key)
    assert isinstance(sent, SentLog)


def test_the_watch_keeps_a_bounded_history() -> None:
    watch = PipelineWatch(keep=5)
    for n in range(30):
        watch.observe(failed_build(n, minute=10 * n + 10))
    assert len(watch.outcomes("etl_daily")) == 5


_outcomes = st.lists(
    st.tuples(st.sampled_from([S.SUCCEED, S.FAILED, S.CANCELED]), st.integers(0, 200)),
    max_size=12,
)


@given(
    outcomes=_outcomes,
    order=st.randoms(use_true_random=False),
    canceled=st.booleans(),
    status=st.sampled_from(["success", "failed"]),
)
def test_the_answer_does_not_depend_on_the_order_history_comes_in(
    outcomes: list[tuple[BuildStatus, int]], order: Any, canceled: bool, status: str
) -> None:
    history = [BuildOutcome(f"b-{i}", s, at(m), 1) for i, (s, m) in enumerate(outcomes)]
    shuffled = list(history)
    order.shuffle(shuffled)
    doc = document(task("load", status, ended=100), state=status, ended=100)
    policy = NotifyPolicy(canceled=canceled)
    assert decide(doc, history, policy) == decide(doc, shuffled, policy)
