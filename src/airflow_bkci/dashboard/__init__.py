"""The live pipeline-health dashboard served in Airflow's UI: pages, assets and data routes.

Importing this package is cheap (the plugin reads :data:`MOUNT_PREFIX` in every
process); :func:`airflow_bkci.dashboard.routes.install` adds the routes to the app.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MOUNT_PREFIX", "STATIC_DIR"]

MOUNT_PREFIX = "/bkci"
"""Where Airflow's API server mounts the plugin app."""

STATIC_DIR = Path(__file__).parent / "static"
"""The pages' HTML shell and assets."""
