"""Benchmark-only plugin: a stub named "bkci" that keeps the real plugin from registering.

Airflow loads the plugins folder before entry points and skips an entry-point plugin whose
name is already taken, so with this file in the plugins folder our listeners and API app are
not registered (the module airflow_bkci.plugins.bkci is still imported by the entry point).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class BkciShadowPlugin(AirflowPlugin):
    """Takes the name "bkci" and registers nothing."""

    name = "bkci"
