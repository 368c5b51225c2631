"""The page's live mirror (static/live.js, static/patch.js) in headless Chromium, fed frames.

The integration tests see it follow a real build; these feed what a real run
rarely produces on cue: duplicates, change sets out of order, a gap the mirror
must fill from a snapshot, a snapshot older than what it holds, a change set
that does not apply. The page's modules are served as the package ships them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from airflow_bkci.dashboard import STATIC_DIR

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

BUILD = "b-1"
# What GET /bkci/v1/builds/b-1 answers when the mirror asks for a snapshot.
SNAPSHOT = {
    "build_id": BUILD,
    "pipeline_id": "etl",
    "sequence": 5,
    "document": {"id": BUILD, "status": "RUNNING", "stages": {"s": {"status": "FAILED"}}},
}


class _Handler(SimpleHTTPRequestHandler):
    def translate_path(self, path: str) -> str:
        prefix = "/bkci/ui/static/"
        if path.startswith(prefix):
            return str(STATIC_DIR / path[len(prefix) :].split("?", maxsplit=1)[0])
        return str(STATIC_DIR / "__missing__")

    def do_GET(self) -> None:
        if self.path == f"/bkci/v1/builds/{BUILD}":
            self.server.snapshot_requests += 1  # type: ignore[attr-defined]
            body = json.dumps(SNAPSHOT).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(STATIC_DIR)))
    httpd.snapshot_requests = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def page(browser: Browser, server: ThreadingHTTPServer) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.goto(f"http://127.0.0.1:{server.server_port}/bkci/ui/static/README.md")
    opened.evaluate(
        """async () => {
          const api = await import('/bkci/ui/static/api.js');
          api.configureApi({root: '/bkci'});
          const {LiveFeed} = await import('/bkci/ui/static/live.js');
          window.changes = [];
          window.feed = new LiveFeed('/bkci', {
            onChange: (id, entry) => window.changes.push([id, entry.seq, entry.doc]),
          });
        }"""
    )
    yield opened
    context.close()
    assert not errors, errors


def changed(
    seq: int, *ops: dict[str, Any], build: str = BUILD, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id or f"{build}:{seq}:changed",
        "type": "dev.airflow-bkci.build.changed",
        "subject": build,
        "data": {"pipeline_id": "etl", "build_id": build, "sequence": seq, "patch": list(ops)},
    }


def snapshot(seq: int, document: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{BUILD}:{seq}:snapshot",
        "type": "dev.airflow-bkci.build.snapshot",
        "subject": BUILD,
        "data": {"pipeline_id": "etl", "build_id": BUILD, "sequence": seq, "document": document},
    }


def status(value: str) -> dict[str, Any]:
    return {"op": "replace", "path": "/status", "value": value}


def feed(page: Page, *frames: Any) -> None:
    page.evaluate("(text) => window.feed.receive(text)", json.dumps(list(frames)))


def held(page: Page) -> dict[str, Any] | None:
    return page.evaluate(  # type: ignore[no-any-return]
        f"() => {{ const b = window.feed.builds.get('{BUILD}'); "
        "return b ? {seq: b.seq, doc: b.doc} : null; }"
    )


START = {"op": "add", "path": "", "value": {"id": BUILD, "status": "QUEUE", "stages": {}}}


def test_change_sets_apply_in_sequence_once_each(page: Page) -> None:
    feed(page, changed(1, START), changed(2, status("RUNNING")), changed(2, status("RUNNING")))
    feed(page, changed(1, START))  # a resend after a reconnect
    # the same change set again under a new event id: its sequence is already applied
    feed(
        page,
        changed(1, START, event_id="resent-1"),
        changed(2, status("QUEUE"), event_id="resent-2"),
    )
    assert held(page) == {"seq": 2, "doc": {"id": BUILD, "status": "RUNNING", "stages": {}}}
    assert page.evaluate("window.changes.length") == 2, "a duplicate is not shown twice"


def test_a_change_set_that_arrives_early_waits_for_the_one_before(page: Page) -> None:
    feed(page, changed(1, START))
    feed(page, changed(3, status("SUCCEED")), changed(2, status("RUNNING")))
    # 3 is held back until 2 is in, then both apply in order (the snapshot the mirror
    # also asks for, in case 2 never comes, may land afterwards: it is newer still)
    shown = [(c[1], c[2]["status"]) for c in page.evaluate("window.changes")]
    assert shown[:3] == [(1, "QUEUE"), (2, "RUNNING"), (3, "SUCCEED")]


def test_a_gap_is_filled_from_a_snapshot(page: Page, server: ThreadingHTTPServer) -> None:
    before = server.snapshot_requests  # type: ignore[attr-defined]
    feed(page, changed(1, START))
    feed(page, changed(4, status("CANCELED")))  # 2 and 3 never come
    page.wait_for_function(f"() => window.feed.builds.get('{BUILD}').seq === 5")
    assert server.snapshot_requests == before + 1  # type: ignore[attr-defined]
    assert held(page) == {"seq": 5, "doc": SNAPSHOT["document"]}


def test_an_older_snapshot_never_replaces_a_newer_document(page: Page) -> None:
    feed(page, changed(1, START), changed(2, status("RUNNING")))
    feed(page, snapshot(1, {"id": BUILD, "status": "QUEUE"}))
    assert held(page) == {"seq": 2, "doc": {"id": BUILD, "status": "RUNNING", "stages": {}}}
    feed(page, snapshot(7, {"id": BUILD, "status": "FAILED"}))
    assert held(page) == {"seq": 7, "doc": {"id": BUILD, "status": "FAILED"}}


def test_a_change_set_that_does_not_apply_changes_nothing_and_takes_a_snapshot(
    page: Page,
) -> None:
    feed(page, changed(1, START))
    bad = {"op": "replace", "path": "/stages/nope/status", "value": "FAILED"}
    feed(page, changed(2, status("RUNNING"), bad))
    # all or nothing: the first operation is not kept; the snapshot (sequence 5) replaces it
    page.wait_for_function(f"() => window.feed.builds.get('{BUILD}').seq === 5")
    assert held(page) == {"seq": 5, "doc": SNAPSHOT["document"]}


@pytest.mark.parametrize(
    "frame",
    ["not json", '[1, null, "x"]', '{"op": "mystery"}', '{"specversion": "1.0"}'],
)
def test_frames_it_cannot_use_are_ignored(page: Page, frame: str) -> None:
    feed(page, changed(1, START))
    page.evaluate("(text) => window.feed.receive(text)", frame)
    assert held(page) == {"seq": 1, "doc": START["value"]}


# A LiveFeed whose socket is stubbed: `sent` is what the server receives, and `answer`
# (set per test) is what the server replies to a subscribe.
STUBBED_FEED = """async () => {
  const {LiveFeed} = await import('/bkci/ui/static/live.js');
  window.sent = [];
  window.refused = [];
  const f = new LiveFeed('/bkci', {onRefused: (kind, ids) => window.refused.push([kind, ids])});
  f.isOpen = () => true;
  f.send = (message) => {
    window.sent.push(message);
    const reply = message.op === 'subscribe' && window.sent.length < 50 && window.answer(message);
    if (reply) f.receive(JSON.stringify(reply));
  };
  window.stubbed = f;
}"""


def subscribes(page: Page) -> list[dict[str, Any]]:
    return page.evaluate(  # type: ignore[no-any-return]
        "() => window.sent.filter((m) => m.op === 'subscribe')"
    )


def test_a_forbidden_pipeline_forgets_its_builds_and_subscribes_once_without_it(
    page: Page,
) -> None:
    page.evaluate(STUBBED_FEED)
    page.evaluate(
        """() => {
          // the server: etl (or any build of it) may no longer be read
          window.answer = (m) => m.pipelines.includes('etl') || 'b-1' in m.builds
            ? {op: 'error', code: 'forbidden', pipelines: ['etl']} : {op: 'subscribed'};
          const f = window.stubbed;
          f.seed('b-1', {id: 'b-1', pipeline_id: 'etl', status: 'RUNNING'}, 17, 'etl');
          f.seed('b-2', {id: 'b-2', pipeline_id: 'ops', status: 'RUNNING', build_num: 8}, 4, 'ops');
          f.pipelines.add('etl');
          f.pipelines.add('ops');
          f.subscribeAll();
        }"""
    )
    sent = subscribes(page)
    assert len(sent) == 2, "one subscribe, then at most one without what was refused"
    assert sent[1] == {"op": "subscribe", "pipelines": ["ops"], "builds": {"b-2": 4}}
    assert page.evaluate("window.stubbed.doc('b-1')") is None
    # the build page is told, so it says "you may no longer read build b-1"
    assert page.evaluate("window.refused") == [
        ["forbidden", {"pipelines": ["etl"], "builds": ["b-1"]}]
    ]


def test_too_many_with_nothing_left_to_drop_stops_subscribing(page: Page) -> None:
    page.evaluate(STUBBED_FEED)
    page.evaluate(
        """() => {
          window.answer = () => ({op: 'error', code: 'too_many'});
          const f = window.stubbed;
          f.seed('b-1', {id: 'b-1', pipeline_id: 'etl', status: 'SUCCEED'}, 17, 'etl');
          f.pipelines.add('etl');
          f.subscribeAll();
        }"""
    )
    sent = subscribes(page)
    # the held build is dropped and asked without once; then there is nothing left to drop
    assert [m["builds"] for m in sent] == [{"b-1": 17}, {}]
    assert page.evaluate("window.refused") == [["too_many", {"pipelines": [], "builds": []}]]


def test_following_a_new_pipeline_names_its_held_builds(page: Page) -> None:
    page.evaluate(STUBBED_FEED)
    page.evaluate(
        """() => {
          window.answer = () => ({op: 'subscribed'});
          const f = window.stubbed;
          f.seed('b-1', {id: 'b-1', pipeline_id: 'etl', status: 'RUNNING'}, 17, 'etl');
          f.seed('b-9', {id: 'b-9', pipeline_id: 'ops', status: 'RUNNING', build_num: 1}, 2, 'ops');
          f.follow({pipelines: ['etl']});
        }"""
    )
    # a build that ended between the REST read and this subscribe is sent from sequence 17 on
    assert subscribes(page) == [{"op": "subscribe", "pipelines": ["etl"], "builds": {"b-1": 17}}]


def test_a_reconnect_resubscribes_with_the_held_sequences_and_resyncs(page: Page) -> None:
    page.evaluate(
        """async () => {
          window.sockets = [];
          window.WebSocket = class {
            static OPEN = 1;
            constructor(url) {
              this.url = url;
              this.readyState = 0;
              this.sent = [];
              window.sockets.push(this);
            }
            send(text) { this.sent.push(JSON.parse(text)); }
            close() { this.readyState = 3; }
            open() {
              this.readyState = 1;
              this.onopen();
            }
            reply(frame) { this.onmessage({data: JSON.stringify(frame)}); }
          };
          const {LiveFeed} = await import('/bkci/ui/static/live.js');
          window.resyncs = 0;
          const f = new LiveFeed('/bkci', {onResync: () => (window.resyncs += 1)});
          f.seed('b-1', {id: 'b-1', pipeline_id: 'etl', status: 'RUNNING', stages: {}}, 3, 'etl');
          f.follow({pipelines: ['etl']});
          f.start();
          window.sockets[0].open();
          window.sockets[0].reply({op: 'subscribed'});
          window.live = f;
        }"""
    )
    first = page.evaluate("window.sockets[0].sent")
    assert first == [{"op": "subscribe", "pipelines": ["etl"], "builds": {"b-1": 3}}]
    assert page.evaluate("window.resyncs") == 0, "the first time live is not a resync"
    page.evaluate(
        """(frame) => {
          window.sockets[0].reply(frame);
          window.sockets[0].onclose({code: 1006});
        }""",
        changed(4, status("SUCCEED"), build="b-1"),
    )
    page.wait_for_function("() => window.sockets.length === 2")  # after the backoff
    page.evaluate("() => window.sockets[1].open()")
    # the server sends what came after sequence 4, the one applied here
    assert page.evaluate("window.sockets[1].sent") == [
        {"op": "subscribe", "pipelines": ["etl"], "builds": {"b-1": 4}}
    ]
    page.evaluate("() => window.sockets[1].reply({op: 'subscribed'})")
    assert page.evaluate("window.live.state") == "live"
    assert page.evaluate("window.resyncs") == 1, "the view fetches what it missed"
