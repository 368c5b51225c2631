"""Our modules import without warnings of their own: a CLI would print them into its output."""

from __future__ import annotations

import json
import subprocess
import sys

# A fresh interpreter: the test run has imported (and warned about) everything already.
PROBE = """
import importlib, json, pkgutil, sys, warnings
import airflow.configuration  # Airflow routes warnings to logging when it starts: first
import airflow_bkci
loaded = sorted(m for m in sys.modules if m.startswith("airflow_bkci."))
# Airflow's config reads providers' info; everything else must load under the probe.
assert loaded == ["airflow_bkci.get_provider_info"], f"imported before the probe: {loaded}"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for info in pkgutil.walk_packages(airflow_bkci.__path__, "airflow_bkci."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
ours = [
    f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}"
    for w in caught
    if "airflow_bkci" in w.filename
]
print(json.dumps(ours))
"""


def test_no_module_of_ours_warns_when_imported() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
