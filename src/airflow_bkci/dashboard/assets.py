"""The pages' assets at ``/ui/static/``, from the package's ``static`` folder only.

A path that leaves the folder is a 404 (Starlette resolves it and refuses). A
file whose name carries a content hash (``app.3f9a1c2b.js``) may be kept for a
year; any other is revalidated on every load, so a new release is seen at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["DashboardAssets", "cache_control"]

_VERSIONED = re.compile(r"\.[0-9a-f]{8,}\.[A-Za-z0-9]+$")


def cache_control(path: str) -> str:
    """Long-lived for content-hashed names, revalidated for every other."""
    if _VERSIONED.search(path):
        return "public, max-age=31536000, immutable"
    return "no-cache"


class DashboardAssets(StaticFiles):
    """StaticFiles with our Cache-Control and ``nosniff``."""

    def __init__(self, directory: Path) -> None:
        # check_dir=False: the app builds even where the folder is missing; a request 404s.
        super().__init__(directory=directory, check_dir=False, follow_symlink=False)

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = cache_control(str(full_path))
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
