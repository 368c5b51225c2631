"""Example pipelines shipped with the package, used by the demo and the integration tests."""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent

# What each example run ends as when everything works.
EXPECTED_STATES: dict[str, str] = {
    "bkci_stages": "success",
    "bkci_retry": "success",
    "bkci_failure": "failed",
    "bkci_branch": "success",
    "bkci_mapped": "success",
    "bkci_deferrable": "success",
    "bkci_chains": "success",
}

# The set a demo or a smoke test triggers; bkci_chains is the benchmark load.
SHOWCASE: tuple[str, ...] = tuple(d for d in EXPECTED_STATES if d != "bkci_chains")
