// The live feed: one WebSocket to `${root}/v1/live` and a mirror of the builds it follows.
//
// The mirror applies events as docs/wire-format.md says: an event id seen before is dropped, a
// snapshot replaces a build it is not older than, a change set applies only when its sequence is
// the one held + 1. A gap (or a patch that does not apply) keeps the change aside and fetches a
// snapshot from GET /v1/builds/{id}. On a lost connection it reconnects with backoff and
// subscribes again with the sequence it holds of each build, so the server sends what it missed.

import { getJSON } from "./api.js";
import { applyPatch } from "./patch.js";

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10000;
const PING_EVERY_MS = 20000;
const SILENT_DEAD_MS = 50000; // the server sends a heartbeat after 15 s of silence
const SEEN_IDS = 4096; // event ids remembered for dedupe
const IGNORED = 2048; // builds a view let go of
const MAX_DOCS = 400; // documents held at most
const KEPT_ASIDE = 200; // change sets kept per build while its snapshot is fetched
const MAX_SUBSCRIPTIONS = 900; // under the server's default live_max_subscriptions (1000)

/** A Map used as a bounded insertion-ordered set: the oldest keys go first. */
class Recent {
  constructor(limit) {
    this.limit = limit;
    this.map = new Map();
  }
  has(key) {
    return this.map.has(key);
  }
  add(key) {
    this.map.delete(key);
    this.map.set(key, true);
    if (this.map.size > this.limit) this.map.delete(this.map.keys().next().value);
  }
  delete(key) {
    this.map.delete(key);
  }
}

function idsOf(value) {
  // Error frames list builds as ids, as objects with an id, or as a map keyed by id.
  if (!value) return [];
  if (Array.isArray(value)) {
    return value.map((v) => (typeof v === "string" ? v : v && (v.build_id || v.id || v.pipeline))).filter(Boolean);
  }
  return typeof value === "object" ? Object.keys(value) : [];
}

export class LiveFeed {
  /**
   * onChange(buildId, entry, previousDocument): a build's document changed (entry: {doc, seq, pipeline}).
   * onState(state, detail): "connecting" | "live" | "disconnected"; detail.expired when the session ended.
   * onSessionExpired(): GET /v1/dashboard/me said 401 after the server closed with 4401.
   * onRefused(kind, ids): the server refused pipelines or builds ("forbidden" | "not_found"), or
   *   the subscriptions ("too_many", when nothing is left to drop: the page stops updating live).
   * onResync(): live again after a reconnect; builds that started and ended meanwhile were not sent.
   * retain(buildId, entry): after a change is shown, "keep" the document, "drop" it (a later
   *   event fetches it again) or "ignore" the build from now on.
   */
  constructor(root, handlers) {
    this.root = root;
    this.h = handlers;
    this.pipelines = new Set();
    this.wanted = new Set(); // builds followed by id (the build view)
    this.builds = new Map(); // build id -> {doc, seq, pipeline}
    this.seen = new Recent(SEEN_IDS);
    this.ignored = new Recent(IGNORED);
    this.aside = new Map(); // build id -> Map(sequence -> patch)
    this.fetching = new Set();
    this.ws = null;
    this.state = "connecting";
    this.attempt = 0;
    this.timer = null;
    this.pinger = null;
    this.lastHeard = 0;
    this.resyncHave = null;
    this.everLive = false;
    this.expired = false;
    this.stopped = true;
    this.onOnline = () => {
      if (!this.ws && !this.stopped && !this.expired) this.connectNow();
    };
  }

  // -- what to follow ------------------------------------------------------------------------

  /** Hold a build's document (from a REST answer) without telling the views. */
  seed(buildId, doc, seq, pipeline) {
    if (!buildId || !doc || typeof seq !== "number") return;
    const held = this.builds.get(buildId);
    if (held && held.seq >= seq) return;
    this.builds.set(buildId, { doc, seq, pipeline: pipeline || doc.pipeline_id });
    this.ignored.delete(buildId);
    this.bound();
  }

  doc(buildId) {
    const held = this.builds.get(buildId);
    return held ? held.doc : null;
  }

  follow({ pipelines = [], builds = [] }) {
    const newPipelines = pipelines.filter((p) => !this.pipelines.has(p));
    const newBuilds = builds.filter((b) => !this.wanted.has(b));
    newPipelines.forEach((p) => this.pipelines.add(p));
    newBuilds.forEach((b) => {
      this.wanted.add(b);
      this.ignored.delete(b);
    });
    if (this.isOpen() && (newPipelines.length || newBuilds.length)) {
      const sequences = {};
      newBuilds.forEach((b) => (sequences[b] = this.builds.get(b)?.seq ?? null));
      // Held builds of the new pipelines (seeded from REST): one that ended between that read and
      // this subscribe gets its last changes only if named.
      const added = new Set(newPipelines);
      for (const [id, held] of this.builds) if (added.has(held.pipeline) && !(id in sequences)) sequences[id] = held.seq;
      this.send({ op: "subscribe", pipelines: newPipelines, builds: sequences });
    }
  }

  /** Drop a build's document; with ignore, its later events are dropped too. */
  forget(buildId, { ignore = true } = {}) {
    this.builds.delete(buildId);
    this.aside.delete(buildId);
    if (ignore && !this.wanted.has(buildId)) this.ignored.add(buildId);
  }

  // -- the connection --------------------------------------------------------------------------

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.connectNow();
  }

  isOpen() {
    return this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  setState(state, detail = {}) {
    this.state = state;
    this.h.onState?.(state, { ...detail, attempt: this.attempt });
  }

  connectNow() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped || this.expired) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    this.setState("connecting");
    try {
      // Cookie auth: no subprotocol is offered, so the server need not pick one.
      ws = new WebSocket(`${scheme}//${location.host}${this.root}/v1/live`);
    } catch (error) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.opened = false;
    ws.onopen = () => {
      this.opened = true;
      this.lastHeard = Date.now();
      this.subscribeAll();
      this.pinger = setInterval(() => this.keepalive(), PING_EVERY_MS);
      if (!this.pipelines.size && !this.wanted.size && !this.builds.size) this.becameLive();
    };
    ws.onmessage = (message) => {
      this.lastHeard = Date.now();
      this.receive(message.data);
    };
    ws.onerror = () => {}; // a close follows; it says more
    ws.onclose = (event) => this.closed(ws, event.code);
  }

  closed(ws, code) {
    if (this.ws !== ws) return;
    this.detach();
    if (this.stopped) return;
    // 4401: the token is missing or expired. A handshake refused before it opened may be the
    // same thing said as an HTTP error: after two such failures, ask whether the session is alive.
    if (code === 4401 || (!this.opened && this.attempt >= 2)) {
      this.checkSession();
      return;
    }
    this.scheduleReconnect();
  }

  /** The REST API said 401: stop reconnecting until the page is loaded again. */
  sessionExpired() {
    this.expired = true;
    clearTimeout(this.timer);
    this.timer = null;
    this.detach();
    this.setState("disconnected", { expired: true });
  }

  detach() {
    const ws = this.ws;
    this.ws = null;
    clearInterval(this.pinger);
    this.pinger = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      if (ws.readyState <= WebSocket.OPEN) {
        try {
          ws.close();
        } catch {
          // already closing
        }
      }
    }
  }

  scheduleReconnect() {
    if (this.stopped || this.expired || this.timer) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2); // jitter: a restarted server is not hit at once
    this.attempt += 1;
    this.setState("disconnected", { retryInMs: delay });
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connectNow();
    }, delay);
  }

  async checkSession() {
    // A fresh page cookie may be there already (Airflow's own page refreshes it).
    this.setState("disconnected");
    try {
      await getJSON("/v1/dashboard/me", null, { what: "your session", retry: false });
      this.scheduleReconnect();
    } catch (error) {
      if (error && error.kind === "session") {
        this.sessionExpired();
        this.h.onSessionExpired?.();
      } else {
        this.scheduleReconnect();
      }
    }
  }

  keepalive() {
    if (!this.isOpen()) return;
    if (Date.now() - this.lastHeard > SILENT_DEAD_MS) {
      // A connection that went quiet (a sleeping laptop, a dropped NAT entry) is dead.
      this.detach();
      this.scheduleReconnect();
      return;
    }
    this.send({ op: "ping" });
  }

  send(message) {
    if (!this.isOpen()) return;
    try {
      this.ws.send(JSON.stringify(message));
    } catch {
      // the close handler reconnects
    }
  }

  becameLive() {
    const again = this.everLive && this.state !== "live";
    this.everLive = true;
    this.attempt = 0;
    this.resyncHave = null;
    this.setState("live");
    if (again) this.h.onResync?.(); // what started and ended while disconnected is only in REST
  }

  /** How much is followed: pipelines, builds followed by id, builds held. */
  followedSize() {
    return this.pipelines.size + this.wanted.size + this.builds.size;
  }

  /** Subscribe to everything followed, with the sequence held of each build (resync). */
  subscribeAll() {
    const have = this.resyncHave || {};
    const builds = {};
    let budget = MAX_SUBSCRIPTIONS - this.pipelines.size;
    const sequenceOf = (id) => {
      const held = this.builds.get(id);
      if (!held) return null;
      // After a 4409 the server said what it had sent; never claim more than is applied here.
      return typeof have[id] === "number" ? Math.min(held.seq, have[id]) : held.seq;
    };
    for (const id of this.wanted) {
      builds[id] = sequenceOf(id);
      budget -= 1;
    }
    // Held builds of followed pipelines, newest first: one that ended while the connection was
    // down gets its last changes only if named (a pipeline brings snapshots of unfinished ones).
    const held = [...this.builds.entries()]
      .filter(([id]) => !(id in builds))
      .sort((a, b) => (b[1].doc?.build_num ?? 0) - (a[1].doc?.build_num ?? 0));
    for (const [id] of held) {
      if (budget <= 0) break;
      builds[id] = sequenceOf(id);
      budget -= 1;
    }
    if (!this.pipelines.size && !Object.keys(builds).length) return;
    this.send({ op: "subscribe", pipelines: [...this.pipelines], builds });
  }

  // -- messages --------------------------------------------------------------------------------

  receive(text) {
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      return;
    }
    for (const frame of Array.isArray(body) ? body : [body]) {
      if (!frame || typeof frame !== "object") continue;
      try {
        if (frame.specversion) this.event(frame);
        else if (frame.op) this.control(frame);
      } catch (error) {
        console.warn("bkci live: a frame could not be handled", error);
      }
    }
  }

  control(frame) {
    switch (frame.op) {
      case "subscribed":
        this.becameLive();
        break;
      case "resync":
        this.resyncHave = frame.have && typeof frame.have === "object" ? frame.have : null;
        break; // the server closes with 4409 next; the reconnect uses `have`
      case "error":
        this.refused(frame);
        break;
      default:
        break; // pong, heartbeat, unsubscribed, authenticated
    }
  }

  refused(frame) {
    const code = frame.code;
    if (code === "token_expired" || code === "unauthenticated") return; // a 4401 close follows
    if (code === "not_found" || code === "forbidden") {
      // A subscribe is all or nothing: subscribe again without what was refused.
      const pipelines = idsOf(frame.pipelines);
      const builds = idsOf(frame.builds);
      const before = this.followedSize();
      pipelines.forEach((p) => this.pipelines.delete(p));
      if (code === "forbidden" && pipelines.length) {
        // The server names only the pipelines: the builds of them held or followed go too.
        const refused = new Set(pipelines);
        for (const [id, held] of this.builds) if (refused.has(held.pipeline) && !builds.includes(id)) builds.push(id);
      }
      builds.forEach((b) => {
        this.wanted.delete(b);
        this.forget(b);
      });
      this.h.onRefused?.(code, { pipelines, builds });
      // Asking again for the same would be refused again: only ask if it got smaller.
      if (this.followedSize() < before) this.subscribeAll();
      return;
    }
    if (code === "sequence_beyond") {
      // We hold sequences the store never made (it was reset): start those builds over.
      idsOf(frame.builds).forEach((b) => this.forget(b, { ignore: false }));
      this.subscribeAll();
      return;
    }
    if (code === "too_many") {
      const before = this.builds.size;
      for (const id of [...this.builds.keys()]) if (!this.wanted.has(id)) this.forget(id, { ignore: false });
      if (this.builds.size < before) {
        this.subscribeAll();
        return;
      }
      // Nothing left to drop: the same subscribe would be refused again.
      console.warn("bkci live: the server refused the subscriptions (too many); live updates stop", frame);
      this.h.onRefused?.(code, { pipelines: [], builds: [] });
      return;
    }
    console.warn("bkci live: the server refused a request", frame);
  }

  event(event) {
    const data = event.data || {};
    const buildId = data.build_id || event.subject;
    if (!buildId) return;
    if (event.id) {
      if (this.seen.has(event.id)) return;
      this.seen.add(event.id);
    }
    if (this.ignored.has(buildId) && !this.wanted.has(buildId)) return;
    const pipeline = data.pipeline_id || event.pipelineid;
    const type = String(event.type || "");
    if (type.endsWith(".build.snapshot")) {
      this.snapshot(buildId, pipeline, data.document, data.sequence);
    } else if (type.endsWith(".build.changed")) {
      this.changed(buildId, pipeline, data.sequence, data.patch);
    }
  }

  snapshot(buildId, pipeline, doc, seq) {
    if (!doc || typeof seq !== "number") return;
    const held = this.builds.get(buildId);
    if (held && seq < held.seq) return;
    this.commit(buildId, pipeline, doc, seq);
    this.drainAside(buildId);
  }

  changed(buildId, pipeline, seq, patch) {
    if (typeof seq !== "number" || !Array.isArray(patch)) return;
    const held = this.builds.get(buildId);
    const have = held ? held.seq : 0; // an unknown build is {} at sequence 0
    if (held && seq <= have) return;
    if (seq !== have + 1) {
      this.keepAside(buildId, seq, patch);
      this.resnapshot(buildId, pipeline);
      return;
    }
    let doc;
    try {
      doc = applyPatch(held ? held.doc : {}, patch);
    } catch (error) {
      console.warn(`bkci live: change set ${seq} of ${buildId} does not apply; taking a snapshot`, error);
      this.resnapshot(buildId, pipeline);
      return;
    }
    this.commit(buildId, pipeline, doc, seq);
    this.drainAside(buildId);
  }

  keepAside(buildId, seq, patch) {
    let kept = this.aside.get(buildId);
    if (!kept) this.aside.set(buildId, (kept = new Map()));
    if (kept.size < KEPT_ASIDE) kept.set(seq, patch);
  }

  drainAside(buildId) {
    const kept = this.aside.get(buildId);
    if (!kept) return;
    this.aside.delete(buildId);
    for (;;) {
      const held = this.builds.get(buildId);
      if (!held) return;
      const next = kept.get(held.seq + 1);
      if (!next) return;
      kept.delete(held.seq + 1);
      try {
        this.commit(buildId, held.pipeline, applyPatch(held.doc, next), held.seq + 1);
      } catch {
        this.resnapshot(buildId, held.pipeline);
        return;
      }
    }
  }

  async resnapshot(buildId, pipeline) {
    if (this.fetching.has(buildId)) return;
    this.fetching.add(buildId);
    try {
      const answer = await getJSON(`/v1/builds/${encodeURIComponent(buildId)}`, null, {
        what: `build ${buildId}`,
      });
      if (this.ignored.has(buildId) && !this.wanted.has(buildId)) return;
      this.snapshot(buildId, answer.pipeline_id || pipeline, answer.document, answer.sequence);
    } catch (error) {
      if (error && (error.kind === "not_found" || error.kind === "forbidden")) this.forget(buildId);
    } finally {
      this.fetching.delete(buildId);
    }
  }

  commit(buildId, pipeline, doc, seq) {
    const previous = this.builds.get(buildId);
    const entry = { doc, seq, pipeline: pipeline || doc?.pipeline_id || previous?.pipeline };
    this.builds.delete(buildId); // re-inserted last: the Map's order is least recently changed first
    this.builds.set(buildId, entry);
    this.h.onChange?.(buildId, entry, previous ? previous.doc : null);
    const keep = this.h.retain && !this.wanted.has(buildId) ? this.h.retain(buildId, entry) : "keep";
    if (keep === "drop") this.forget(buildId, { ignore: false });
    else if (keep === "ignore" || keep === false) this.forget(buildId);
    this.bound();
  }

  bound() {
    // Days on a wall screen: never hold more than MAX_DOCS documents (the least recently changed go).
    while (this.builds.size > MAX_DOCS) {
      const oldest = [...this.builds.keys()].find((id) => !this.wanted.has(id));
      if (!oldest) return;
      this.forget(oldest, { ignore: false });
    }
  }
}
