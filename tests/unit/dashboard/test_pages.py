"""The pages: one HTML shell for every /ui/ path with its config, and the assets beside it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from airflow_bkci import __version__
from airflow_bkci.dashboard import STATIC_DIR
from airflow_bkci.dashboard.shell import CONFIG_MARKER, render_shell
from tests.unit.dashboard.helpers import FakeAuthManager

with __import__("warnings").catch_warnings():
    __import__("warnings").filterwarnings("ignore", message="Using `httpx`")
    from fastapi.testclient import TestClient

pytestmark = [pytest.mark.timeout(60)]

_CONFIG = re.compile(r'<script id="bkci-config" type="application/json">(.*?)</script>', re.S)


@pytest.fixture(params=["sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The pages never read the store: one database is enough."""
    from airflow_bkci.store import Store

    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    yield store
    store.dispose()


def config_of(html: str) -> dict[str, Any]:
    found = _CONFIG.search(html)
    assert found is not None, html
    return json.loads(found[1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "path",
    [
        "/ui/wall",
        "/ui/wall?tag=team-x&kiosk=1",
        "/ui/pipelines/etl",
        "/ui/builds/b-1",
        "/ui/no/such/page",
    ],
)
def test_every_page_path_is_the_shell_with_its_config(client: Any, path: str) -> None:
    answer = client.get(path)  # no token: the shell holds no data
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["cache-control"] == "no-store"
    assert CONFIG_MARKER not in answer.text
    assert config_of(answer.text) == {
        "root": "/bkci",
        "airflow_root": "",
        "login_url": "/auth/login",
        "version": __version__,
    }


def test_home_redirects_to_the_wall_keeping_the_query(client: Any) -> None:
    answer = client.get("/ui/?tag=team-x&window=7d", follow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["location"] == "/bkci/ui/wall?tag=team-x&window=7d"


def test_mounted_under_airflow_base_path_the_roots_follow(app: FastAPI) -> None:
    # Airflow's API server: FastAPI(root_path="/airflow") mounting the plugin app at /bkci
    airflow = FastAPI(root_path="/airflow")
    airflow.mount("/bkci", app)
    client = TestClient(airflow)
    config = config_of(client.get("/airflow/bkci/ui/builds/b-1").text)
    assert (config["root"], config["airflow_root"]) == ("/airflow/bkci", "/airflow")
    redirect = client.get("/airflow/bkci/ui/", follow_redirects=False)
    assert redirect.headers["location"] == "/airflow/bkci/ui/wall"
    asset = client.get("/airflow/bkci/ui/static/app.js")
    assert asset.text == "console.log('bkci');\n"


def test_login_url_falls_back_to_airflows_route(client: Any, auth: FakeAuthManager) -> None:
    auth.login_url = None  # an auth manager that cannot say
    assert config_of(client.get("/ui/wall").text)["login_url"] == "/auth/login"
    auth.login_url = "https://sso.example.com/login?app=airflow"
    assert config_of(client.get("/ui/wall").text)["login_url"] == auth.login_url


def test_config_values_cannot_break_out_of_the_script() -> None:
    hostile = {"root": "</script><script>alert(1)</script>", "x": "<!-- & \u2028"}
    html = render_shell("<head><!--BKCI_CONFIG--></head><body></body>", hostile)
    assert html.count("</script>") == 1  # only the config element's own end
    assert "<!--" not in html.replace("<head>", "")
    assert config_of(html) == hostile  # still the same JSON once parsed


def test_a_shell_without_the_marker_still_gets_the_config_in_head() -> None:
    html = render_shell("<html><head><title>t</title></head><body></body></html>", {"root": "/r"})
    assert html.index('id="bkci-config"') < html.index("</head>")


def test_assets_are_served_with_cache_rules(client: Any) -> None:
    plain = client.get("/ui/static/app.js")
    assert (plain.status_code, plain.headers["cache-control"]) == (200, "no-cache")
    assert "javascript" in plain.headers["content-type"]
    versioned = client.get("/ui/static/app.0123abcd.js")
    assert "immutable" in versioned.headers["cache-control"]


def raw_get(app: FastAPI, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written: an HTTP client would resolve the dots first."""
    import anyio

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
    }
    anyio.run(app, scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


@pytest.mark.parametrize(
    "path",
    [
        "/ui/static/../secret.txt",
        "/ui/static/../../static/../secret.txt",
        "/ui/static//etc/passwd",
        "/ui/static/nope.js",
    ],
)
def test_assets_outside_the_folder_or_missing_are_404(app: FastAPI, path: str) -> None:
    status, body = raw_get(app, path)
    assert status == 404
    assert b"outside the static folder" not in body and b"root:" not in body
    assert b'id="bkci-config"' not in body  # a missing asset is not the shell


@pytest.mark.parametrize("path", ["/ui/static/%2e%2e/secret.txt", "/ui/static/..%2fsecret.txt"])
def test_encoded_dots_do_not_leave_the_folder_either(client: Any, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 404
    assert "outside the static folder" not in answer.text


def test_a_missing_shell_is_a_503_that_says_what_to_do(client: Any, static_dir: Path) -> None:
    (static_dir / "index.html").unlink()
    answer = client.get("/ui/wall")
    assert answer.status_code == 503
    assert "reinstall" in answer.json()["detail"]["message"]


def test_the_packaged_shell_has_the_config_marker() -> None:
    assert CONFIG_MARKER in (STATIC_DIR / "index.html").read_text(encoding="utf-8")


def test_the_plugin_puts_the_wall_in_airflows_navigation() -> None:
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    from airflow_bkci.plugins.bkci import BkciPlugin

    (view,) = (ExternalViewResponse.model_validate(v) for v in BkciPlugin.external_views)
    assert (view.name, view.href, view.url_route) == ("BK-CI", "/bkci/ui/wall", "bkci")
    assert view.nav_top_level is True and view.destination == "nav"
    assert view.icon == "/bkci/ui/static/bkci.svg"


def test_the_packaged_shell_renders_through_the_app(
    auth: FakeAuthManager, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_bkci.api.app import create_app

    client = TestClient(create_app(store_factory=lambda: store, dispatcher_factory=lambda: None))
    page = client.get("/ui/wall").text
    assert config_of(page)["root"] == "/bkci"
    # every module is asked for at once, not one import level at a time
    modules = sorted(p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*.js"))
    assert "views/wall.js" in modules and "vendor/htm-preact-standalone.module.js" in modules
    for name in modules:
        assert f'<link rel="modulepreload" href="/bkci/ui/static/{name}">' in page
        assert client.get(f"/ui/static/{name}").status_code == 200
    assert client.get("/ui/static/bkci.svg").status_code == 200
