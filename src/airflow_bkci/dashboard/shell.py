"""The pages: every ``/ui/...`` path answers the same HTML shell with the config embedded.

The shell holds no data, so it is served without authentication; the page's
script reads ``#bkci-config`` and builds every URL from its ``root``.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from html import escape
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse

from airflow_bkci import __version__
from airflow_bkci.dashboard import MOUNT_PREFIX

__all__ = ["CONFIG_MARKER", "module_preloads", "page_config", "render_shell", "router"]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

CONFIG_MARKER = "<!--BKCI_CONFIG-->"
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# In a <script> these end the element or open a comment whatever the type; JSON
# may spell them as escapes, so the text cannot break out.
_SCRIPT_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def page_config(request: Request) -> dict[str, str]:
    """``root`` (the plugin app's URL path), ``airflow_root``, ``login_url`` and ``version``.

    Mounted by Airflow, the app's root path already ends with the mount prefix;
    served on its own (tests, a proxy), the prefix is added.
    """
    root_path = str(request.scope.get("root_path") or "").rstrip("/")
    if root_path.endswith(MOUNT_PREFIX):
        root, airflow_root = root_path, root_path[: -len(MOUNT_PREFIX)]
    else:
        root, airflow_root = root_path + MOUNT_PREFIX, root_path
    return {
        "root": root,
        "airflow_root": airflow_root,
        "login_url": _login_url(airflow_root),
        "version": __version__,
    }


def _login_url(airflow_root: str) -> str:
    try:
        from airflow_bkci.api.security import airflow_auth_manager

        url = airflow_auth_manager().get_url_login()
        if isinstance(url, str) and url:
            return url
    except Exception:  # no auth manager yet, or one that cannot say: Airflow's own route
        log.debug("bkci dashboard: no login URL from the auth manager", exc_info=True)
    return f"{airflow_root}/auth/login"


def config_script(config: dict[str, Any]) -> str:
    """The config as a JSON ``<script>`` element that no value can break out of."""
    text = json.dumps(config, ensure_ascii=False, separators=(", ", ": "))
    for raw, escaped in _SCRIPT_ESCAPES.items():
        text = text.replace(raw, escaped)
    return f'<script id="bkci-config" type="application/json">{text}</script>'


@cache
def _modules(static_dir: Path) -> tuple[str, ...]:
    return tuple(sorted(p.relative_to(static_dir).as_posix() for p in static_dir.rglob("*.js")))


def module_preloads(static_dir: Path, root: str) -> str:
    """A ``modulepreload`` link for every script of the page.

    Without them the browser finds the modules one import level at a time
    (app, views, charts, vendor): four round trips before the first data call.
    """
    return "".join(
        f'<link rel="modulepreload" href="{escape(f"{root}/ui/static/{name}")}">'
        for name in _modules(static_dir)
    )


def render_shell(template: str, config: dict[str, Any], head: str = "") -> str:
    """``template`` with the marker replaced by the config script (before </head> without one).

    ``head`` is more markup for the head (the module preloads), after the config.
    """
    script = config_script(config) + head
    if CONFIG_MARKER in template:
        return template.replace(CONFIG_MARKER, script, 1)
    log.warning(
        "bkci dashboard: index.html has no %s marker; config put before </head>", CONFIG_MARKER
    )
    head_end = template.lower().find("</head>")
    if head_end < 0:
        return script + template
    return template[:head_end] + script + template[head_end:]


def _template(static_dir: Path) -> str:
    index = static_dir / "index.html"
    try:
        return index.read_text(encoding="utf-8")
    except OSError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail={
                "message": f"the dashboard's page {index} cannot be read ({exc.strerror}); "
                "reinstall airflow-provider-bkci, its package ships the file",
                "problems": [str(exc)],
            },
        ) from None


@router.get("/ui", response_class=RedirectResponse, status_code=307)
@router.get("/ui/", response_class=RedirectResponse, status_code=307)
async def home(request: Request) -> RedirectResponse:
    """The wall is the home page; the query string goes along."""
    query = request.url.query
    target = f"{page_config(request)['root']}/ui/wall" + (f"?{query}" if query else "")
    return RedirectResponse(target, status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get("/ui/{page:path}", response_class=HTMLResponse)
async def shell(request: Request, page: str) -> HTMLResponse:
    """The HTML shell for every page (wall, pipelines/…, builds/…, and unknown ones)."""
    static_dir = request.app.state.bkci_static_dir
    config = page_config(request)
    page_html = render_shell(
        _template(static_dir), config, module_preloads(static_dir, config["root"])
    )
    return HTMLResponse(page_html, headers=_NO_STORE)
