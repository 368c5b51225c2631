"""The shipped example owners file parses and routes the example pipelines as it says."""

from __future__ import annotations

from pathlib import Path

from airflow_bkci.notify import load_owners
from airflow_bkci.notify.recipient import AirflowUser, ChannelAddress, EmailAddress

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "bkci-owners"


def test_the_example_owners_file_routes_the_example_pipelines() -> None:
    rules = load_owners(EXAMPLE)
    assert rules.recipients_for("bkci_failure", "deploy") == (
        EmailAddress("deployers@example.com"),
        ChannelAddress("chat", "deploys"),
    )
    assert rules.recipients_for("bkci_failure", "verify") == (
        EmailAddress("release-team@example.com"),
    )
    assert rules.recipients_for("bkci_stages", "build.compile") == (
        EmailAddress("build-team@example.com"),
    )
    assert rules.recipients_for("bkci_stages", "test.unit") == (AirflowUser("qa"),)
    assert rules.recipients_for("bkci_retry", "flaky") == ()
    assert rules.recipients_for("bkci_mapped", "package") == (EmailAddress("platform@example.com"),)
