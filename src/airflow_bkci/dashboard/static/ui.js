// What every view shares: the frame-throttled renderer, status-change stamps, the app state
// (connection, session, errors), formatting, and links into Airflow's own pages.

import { h, html, render } from "./vendor/htm-preact-standalone.module.js";
import { statusLook } from "./status.js";

export { html };

export const app = {
  config: { root: "/bkci", airflow_root: "", login_url: "/auth/login", version: "" },
  connection: { state: "connecting", everLive: false, expired: false },
  sessionExpired: false,
  apiDown: false,
  liveRefused: false, // the server refused the live subscriptions (too many)
  fatal: null, // a JS error: shown in the friendly box
};

// -- rendering: at most once per animation frame --------------------------------------------------

let mountPoint = null;
let Root = null;
let scheduled = false;
let frameTimer = null;
let frameRequest = null;
let generation = 0;
let renderNow = 0;
let inFrame = false;
const stamps = new Map(); // element key -> {status, at, gen}

export function mount(element, component) {
  mountPoint = element;
  Root = component;
  mountPoint.textContent = "";
  renderFrame();
}

/** Ask for a render; many changes within one frame make one render. */
export function scheduleRender() {
  if (scheduled || !mountPoint) return;
  scheduled = true;
  // rAF does not run in a hidden tab; the timer keeps a background wall current (and bounded).
  frameRequest = requestAnimationFrame(renderFrame);
  frameTimer = setTimeout(renderFrame, document.hidden ? 100 : 250);
}

let broken = false; // the renderer itself threw: the plain-DOM message stays

function renderFrame() {
  if (!mountPoint || broken) return;
  scheduled = false;
  clearTimeout(frameTimer); // whichever came first: the other one is not left pending
  cancelAnimationFrame(frameRequest);
  frameTimer = frameRequest = null;
  generation += 1;
  renderNow = Date.now();
  inFrame = true;
  try {
    render(h(Root, null), mountPoint);
  } catch (error) {
    reportFatal(error);
    broken = true;
    showFatalWithoutPreact();
  } finally {
    inFrame = false;
  }
  if (generation % 120 === 0 || stamps.size > 20000) sweepStamps();
}

function sweepStamps() {
  for (const [key, entry] of stamps) if (entry.gen < generation - 1) stamps.delete(key);
}

/**
 * When the element `key` last changed status: Date.now() of the render that changed it (the
 * `data-updated-at` the browser tests measure latency with). Call it on every render.
 */
export function stamp(key, status) {
  const at = inFrame ? renderNow : Date.now();
  let entry = stamps.get(key);
  if (!entry) {
    entry = { status, at, gen: generation };
    stamps.set(key, entry);
  } else if (entry.status !== status) {
    entry.status = status;
    entry.at = at;
  }
  entry.gen = generation;
  return entry.at;
}

// -- errors ---------------------------------------------------------------------------------------

export function reportFatal(error) {
  const message = (error && (error.message || error.reason || String(error))) || "unknown error";
  if (/ResizeObserver loop/.test(message)) return; // a benign browser notice, not ours
  app.fatal = { message: String(message).slice(0, 300) };
  console.warn("bkci dashboard: an error was caught and shown", error);
  scheduleRender();
}

function showFatalWithoutPreact() {
  // The renderer itself failed: say so with plain DOM so the page is never blank.
  if (!mountPoint) return;
  mountPoint.innerHTML = "";
  const box = document.createElement("div");
  box.className = "error-box";
  box.setAttribute("data-testid", "error");
  box.setAttribute("role", "alert");
  box.textContent = `The dashboard hit an error and stopped drawing: ${app.fatal?.message}. Reload the page to try again.`;
  mountPoint.appendChild(box);
}

/** The sign-in page, coming back to this page (Airflow's own URL of it when shown in Airflow). */
export function signInUrl() {
  const url = new URL(app.config.login_url || "/auth/login", location.origin);
  let next = location.pathname + location.search;
  const top = sameOriginTop();
  if (top) next = top.location.pathname + top.location.search;
  url.searchParams.set("next", next);
  return url.origin === location.origin ? url.pathname + url.search : url.href;
}

function sameOriginTop() {
  try {
    if (window.top === window) return null;
    void window.top.location.href; // throws when cross-origin
    return window.top;
  } catch {
    return null;
  }
}

function navigateTopTo(url) {
  // The iframe's sandbox has no allow-top-navigation: let the top document's own link navigate.
  const top = sameOriginTop();
  if (!top) return false;
  try {
    const a = top.document.createElement("a");
    a.href = url;
    a.style.display = "none";
    top.document.body.appendChild(a);
    a.click();
    a.remove();
    return true;
  } catch {
    return false;
  }
}

function plainClick(event) {
  return event.button === 0 && !event.metaKey && !event.ctrlKey && !event.shiftKey && !event.altKey;
}

/**
 * One box, `[data-testid=error]`, for everything wrong on the page: the view's messages plus
 * an expired session (with the sign-in link), the API being down, a caught JS error.
 */
export function ErrorBox({ messages = [] }) {
  const all = [];
  if (app.sessionExpired) {
    all.push({
      key: "session",
      text: "Your Airflow session has expired or you are not signed in.",
      signIn: true,
    });
  }
  if (app.apiDown && !app.sessionExpired) all.push({ key: "down", text: "API unreachable, retrying…" });
  if (app.liveRefused && !app.sessionExpired) {
    all.push({ key: "live", text: "The server refused live updates for this many pipelines and builds: this page no longer updates by itself. Show fewer pipelines, or reload the page." });
  }
  for (const m of messages) if (m) all.push(typeof m === "string" ? { key: m, text: m } : m);
  if (app.fatal) {
    all.push({
      key: "fatal",
      text: `Something went wrong in the dashboard: ${app.fatal.message}. The page keeps running; reload it if it looks wrong.`,
    });
  }
  if (!all.length) return null;
  const onSignIn = (event) => {
    if (plainClick(event) && navigateTopTo(event.currentTarget.href)) event.preventDefault();
  };
  return html`<div class="error-box" data-testid="error" role="alert">
    ${all.map((m) => html`<p key=${m.key}>
      ${m.text}
      ${m.signIn && html` <a data-testid="sign-in" href=${signInUrl()} onClick=${onSignIn}>Sign in again</a>`}
      ${m.items && m.items.length ? html`<ul>${m.items.slice(0, 20).map((i) => html`<li>${i}</li>`)}</ul>` : null}
    </p>`)}
  </div>`;
}

// -- connection indicator ---------------------------------------------------------------------------

export function Connection() {
  const c = app.connection;
  let text;
  if (c.state === "live") text = "Live";
  else if (c.state === "connecting") text = c.everLive ? "Reconnecting…" : "Connecting…";
  else if (c.expired) text = "Disconnected — sign in again";
  else text = "Disconnected — reconnecting";
  return html`<span class=${`connection connection-${c.state}`} data-testid="connection"
    data-state=${c.state} role="status" aria-live="polite" title="Live updates">
    <span class="connection-dot" aria-hidden="true"></span>${text}</span>`;
}

// -- status ---------------------------------------------------------------------------------------

/** A status as colour + icon + the BK-CI status name; data-updated-at when `stampKey` is given. */
export function StatusBadge({ status, testid, stampKey, big = false, extra = {} }) {
  const look = statusLook(status);
  const updated = stampKey ? stamp(stampKey, status) : undefined;
  return html`<span class=${`badge${big ? " badge-big" : ""}`} data-testid=${testid}
    data-status=${status || ""} data-updated-at=${updated}
    style=${`--status:${look.color};--ink:${look.ink}`} title=${look.label} ...${extra}>
    <span class="badge-icon" aria-hidden="true">${look.icon}</span>
    <span class="badge-text">${status || "NONE"}</span></span>`;
}

// -- links ------------------------------------------------------------------------------------------

export function ourUrl(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== undefined && v !== null && v !== "") query.append(key, String(v));
    }
  }
  const qs = query.toString();
  return `${app.config.root}/ui${path}${qs ? `?${qs}` : ""}`;
}

export const pipelineUrl = (dagId) => ourUrl(`/pipelines/${encodeURIComponent(dagId)}`);
export const buildUrl = (buildId) => ourUrl(`/builds/${encodeURIComponent(buildId)}`);

/**
 * A link into Airflow's own UI. Shown inside Airflow's iframe, a click routes Airflow's window
 * (pushState + popstate, which its router follows: the sandbox forbids navigating the top).
 */
export function AirflowLink({ path, testid, children, title }) {
  if (!path) return null;
  const href = /^https?:/.test(path) ? path : `${app.config.airflow_root || ""}${path}`;
  const onClick = (event) => {
    if (!plainClick(event)) return;
    const top = sameOriginTop();
    if (!top) return;
    try {
      const url = new URL(href, location.href);
      top.history.pushState(null, "", url.pathname + url.search + url.hash);
      top.dispatchEvent(new PopStateEvent("popstate"));
      event.preventDefault();
    } catch {
      // leave it to the link
    }
  };
  return html`<a class="airflow-link" data-testid=${testid} href=${href} onClick=${onClick} title=${title}>${children}</a>`;
}

// -- formatting -------------------------------------------------------------------------------------

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

export function parseTime(value) {
  if (!value) return null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t;
}

export function fmtTime(value) {
  const t = parseTime(value);
  if (t === null) return "—";
  const d = new Date(t);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function fmtAgo(value) {
  const t = parseTime(value);
  if (t === null) return "—";
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** A rate as a whole percent, rounded half to even (as the server's Python would). */
export function fmtRate(rate) {
  if (rate === null || rate === undefined) return "—";
  const x = rate * 100;
  const floor = Math.floor(x);
  const diff = x - floor;
  let n;
  if (Math.abs(diff - 0.5) < 1e-9) n = floor % 2 === 0 ? floor : floor + 1;
  else n = Math.round(x);
  return `${n}%`;
}

/** A build's duration: ended − started, or the time so far for a running one. */
export function buildDuration(doc) {
  if (!doc) return null;
  if (typeof doc.duration_ms === "number") return doc.duration_ms;
  const started = parseTime(doc.started_at);
  if (started === null) return null;
  const ended = parseTime(doc.ended_at);
  return (ended ?? Date.now()) - started;
}

/** Stages in their `order`. */
export function orderedStages(doc) {
  return Object.values(doc?.stages || {}).sort((a, b) => (a.order ?? 0) - (b.order ?? 0) || String(a.id).localeCompare(String(b.id)));
}

// -- the page frame ---------------------------------------------------------------------------------

/** Header (logo, navigation, title, connection, the view's actions), the error box, the content. */
export function Page({ title, subtitle, actions, messages, kiosk = false, wide = false, children }) {
  const logo = `${app.config.root}/ui/static/bkci.svg`;
  return html`<div class=${`page${kiosk ? " kiosk" : ""}${wide ? " wide" : ""}`}>
    ${kiosk
      ? html`<div class="kiosk-connection"><${Connection} /></div>`
      : html`<header class="topbar">
          <a class="brand" href=${ourUrl("/wall")}><img src=${logo} alt="" width="28" height="28" /><span>BK-CI</span></a>
          <nav class="nav"><a href=${ourUrl("/wall")}>Wall</a></nav>
          <div class="title"><h1>${title}</h1>${subtitle ? html`<span class="subtitle">${subtitle}</span>` : null}</div>
          <div class="actions">${actions}<${Connection} /></div>
        </header>`}
    <${ErrorBox} messages=${messages} />
    <main id="content">${children}</main>
  </div>`;
}
