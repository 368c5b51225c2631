// The wall: one tile per pipeline, live. Readable across a room; every status also as text.

import { getJSON } from "../api.js";
import { Sparkline } from "../charts.js";
import { isFinished, isUnfinished, statusLook } from "../status.js";
import {
  Page, StatusBadge, app, buildDuration, buildUrl, fmtAgo, fmtDuration, fmtRate, html,
  orderedStages, ourUrl, parseTime, pipelineUrl, stamp,
} from "../ui.js";

const UNITS = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** The page's `window` ("7d", "24h", "3600" seconds) as seconds for the API; null when absent or bad. */
export function windowSeconds(text) {
  if (!text) return null;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$/i.exec(text);
  if (!m) return null;
  return Math.round(Number(m[1]) * UNITS[(m[2] || "s").toLowerCase()]);
}

/** The window the server answered for, in seconds; null before the answer. */
function answerSeconds(window) {
  const since = parseTime(window?.since);
  const until = parseTime(window?.until);
  return since === null || until === null ? null : Math.round((until - since) / 1000);
}

/** Seconds as the picker's `window` value ("7d", "12h", "5400"). */
function windowText(seconds) {
  if (seconds % 86400 === 0) return `${seconds / 86400}d`;
  return seconds % 3600 === 0 ? `${seconds / 3600}h` : String(seconds);
}

function windowLabel(seconds) {
  if (!seconds) return null;
  if (seconds % 86400 === 0) return seconds === 86400 ? "last 24 hours" : `last ${seconds / 86400} days`;
  if (seconds % 3600 === 0) return `last ${seconds / 3600} hours`;
  return `last ${Math.round(seconds / 60)} minutes`;
}

/** Whether build `a` (summary or document) is later than `b` as the server picks a tile's latest: run_after, then build_num. */
function isLater(a, b) {
  if (!b) return true;
  const at = parseTime(a.run_after);
  const bt = parseTime(b.run_after);
  if (at !== null && bt !== null && at !== bt) return at > bt;
  return (a.build_num ?? -1) > (b.build_num ?? -1);
}

function summaryFromDoc(doc) {
  return {
    id: doc.id, pipeline_id: doc.pipeline_id, build_num: doc.build_num, status: doc.status,
    started_at: doc.started_at, ended_at: doc.ended_at, duration_ms: doc.duration_ms,
    triggering_user: doc.triggering_user, trigger_type: doc.trigger_type, run_after: doc.run_after,
  };
}

export function startWall({ live, params, render }) {
  const pipelinesParam = params.getAll("pipelines").flatMap((p) => p.split(",")).map((p) => p.trim()).filter(Boolean);
  const tag = params.get("tag") || "";
  const windowParam = params.get("window") || "";
  const window_ = windowSeconds(windowParam);
  const kiosk = params.get("kiosk") === "1";
  const apiParams = {
    pipelines: pipelinesParam.length ? pipelinesParam.join(",") : null,
    tag: pipelinesParam.length ? null : tag || null,
    window: window_,
    trend: params.get("trend"),
    limit: params.get("limit"),
  };

  const state = {
    loading: true,
    error: null,
    source: null,
    window: null, // the answer's {since, until}
    tiles: new Map(), // dag id -> tile (the answer's, with latestId)
    order: [],
    missing: [],
    refreshing: new Map(), // dag id -> timer
    picker: { open: false, loading: false, error: null, names: null, filter: "", chosen: new Set(pipelinesParam), tag, window: windowParam || "7d" },
    fullscreenNote: null,
  };

  function adopt(tile) {
    const doc = tile.latest_document;
    const latestId = tile.latest?.id || doc?.id || null;
    if (doc && latestId) live.seed(latestId, doc, doc.sequence ?? tile.latest?.sequence ?? 0, tile.dag_id);
    return {
      dag_id: tile.dag_id, owners: tile.owners || [], tags: tile.tags || [], stats: tile.stats || {},
      trend: (tile.trend || []).slice(-100), last_failure: tile.last_failure || null,
      latest: tile.latest || null, latestId,
    };
  }

  async function load() {
    try {
      const answer = await getJSON("/v1/dashboard/wall", apiParams, { what: "the wall" });
      state.source = answer.source;
      state.window = answer.window || null;
      const seconds = answerSeconds(state.window);
      if (!windowParam && seconds) state.picker.window = windowText(seconds); // the server's configured window
      state.missing = answer.missing || [];
      for (const tile of answer.tiles || []) state.tiles.set(tile.dag_id, adopt(tile));
      state.order = (answer.tiles || []).map((t) => t.dag_id);
      live.follow({ pipelines: state.order });
    } catch (error) {
      state.error = error.kind === "session" ? null : error;
    } finally {
      state.loading = false;
      render();
    }
  }

  /** One tile's stats again, after one of its builds finished (never on a timer). */
  function refreshTile(dagId) {
    clearTimeout(state.refreshing.get(dagId));
    state.refreshing.set(dagId, setTimeout(async () => {
      state.refreshing.delete(dagId);
      try {
        const answer = await getJSON("/v1/dashboard/wall", { pipelines: dagId, window: window_, trend: apiParams.trend }, { what: `pipeline ${dagId}` });
        const fresh = (answer.tiles || []).find((t) => t.dag_id === dagId);
        if (fresh) takeFresh(fresh);
        render();
      } catch {
        // the tile keeps its numbers; the next finished build tries again
      }
    }, 400));
  }

  /** A tile's numbers from a newer answer, and its latest build if that one is later than ours. */
  function takeFresh(fresh) {
    const tile = state.tiles.get(fresh.dag_id);
    if (!tile) return;
    tile.stats = fresh.stats || tile.stats;
    tile.trend = (fresh.trend || []).slice(-100);
    tile.last_failure = fresh.last_failure || null;
    tile.owners = fresh.owners || tile.owners;
    if (fresh.latest && (isLater(fresh.latest, currentDoc(tile) || tile.latest) || fresh.latest.id === tile.latestId)) {
      if (fresh.latest_document) live.seed(fresh.latest.id, fresh.latest_document, fresh.latest_document.sequence ?? 0, fresh.dag_id);
      if (fresh.latest.id !== tile.latestId) tile.latest = fresh.latest;
      tile.latestId = fresh.latest.id;
    }
  }

  /** Live again after a reconnect: builds that started and ended meanwhile are only in the wall's answer. */
  async function onResync() {
    if (state.loading || state.error) return;
    try {
      const answer = await getJSON("/v1/dashboard/wall", apiParams, { what: "the wall" });
      state.window = answer.window || state.window;
      for (const fresh of answer.tiles || []) takeFresh(fresh);
      render();
    } catch {
      // the tiles keep what they show; the live feed goes on
    }
  }

  function currentDoc(tile) {
    return tile.latestId ? live.doc(tile.latestId) : null;
  }

  function onChange(buildId, entry, previous) {
    const doc = entry.doc || {};
    const tile = state.tiles.get(entry.pipeline || doc.pipeline_id);
    if (!tile) return;
    if (buildId !== tile.latestId && typeof doc.build_num === "number" && isLater(doc, currentDoc(tile) || tile.latest)) {
      const old = tile.latestId;
      tile.latestId = buildId; // a newer build of the pipeline is now the one shown
      if (old && !isUnfinished(live.doc(old)?.status)) live.forget(old);
    }
    if (buildId === tile.latestId) tile.latest = { ...tile.latest, ...summaryFromDoc(doc) };
    if (isFinished(doc.status) && doc.status !== previous?.status) refreshTile(tile.dag_id);
    render();
  }

  function retain(buildId, entry) {
    const tile = state.tiles.get(entry.pipeline);
    if (!tile) return "ignore";
    if (buildId === tile.latestId || isUnfinished(entry.doc?.status)) return "keep";
    return "ignore";
  }

  function onRefused(kind, ids) {
    for (const p of ids.pipelines || []) {
      state.tiles.delete(p);
      state.order = state.order.filter((d) => d !== p);
      state.missing = [...state.missing, { dag_id: p, reason: kind }];
    }
    render();
  }

  // -- picker and full screen ---------------------------------------------------------------

  async function openPicker() {
    const picker = state.picker;
    picker.open = !picker.open;
    render();
    if (!picker.open || picker.names || picker.loading) return;
    picker.loading = true;
    try {
      const answer = await getJSON("/v1/pipelines", { limit: 500 }, { what: "the pipeline list", retry: false });
      picker.names = (answer.pipelines || answer.items || []).map((p) => p.dag_id || p.pipeline_id || p.id).filter(Boolean).sort();
    } catch (error) {
      picker.error = error.message;
      picker.names = [...state.order].sort();
    } finally {
      picker.loading = false;
      render();
    }
  }

  function go(query) {
    const next = { ...query, window: state.picker.window || null, kiosk: kiosk ? "1" : null };
    location.assign(ourUrl("/wall", next)); // a real navigation: bookmarkable, and Airflow mirrors it
  }

  async function toggleFullscreen() {
    state.fullscreenNote = null;
    try {
      if (window.top !== window) {
        // Airflow's iframe has no fullscreen permission: ask the same-origin parent for the frame.
        const frame = window.frameElement;
        if (!frame) throw new Error("the parent page is not on this origin");
        const doc = frame.ownerDocument;
        if (doc.fullscreenElement) await doc.exitFullscreen();
        else await frame.requestFullscreen();
      } else if (document.fullscreenElement) {
        await document.exitFullscreen();
      } else {
        await document.documentElement.requestFullscreen();
      }
    } catch (error) {
      state.fullscreenNote = `Full screen was refused here (${error.message || error}). Open this wall in its own tab, ${location.href}, and use the browser's full screen (F11).`;
      render();
    }
  }

  // -- drawing ------------------------------------------------------------------------------

  function StageProgress({ doc }) {
    const stages = orderedStages(doc);
    if (!stages.length) return html`<div class="stage-progress empty" data-testid="stage-progress">waiting for tasks…</div>`;
    const done = doc.progress ? `${doc.progress.finished}/${doc.progress.total} tasks` : "";
    return html`<div class="stage-progress-wrap">
      <div class="stage-progress" data-testid="stage-progress" role="list" aria-label="Stages">
        ${stages.map((s) => {
          const look = statusLook(s.status);
          return html`<span key=${s.id} role="listitem" class="stage-segment" data-testid="stage-segment"
            data-stage=${s.id} data-status=${s.status} data-updated-at=${stamp(`seg:${doc.id}:${s.id}`, s.status)}
            style=${`--status:${look.color};--ink:${look.ink};flex-grow:${Math.max(1, s.progress?.total || 1)}`}
            title=${`${s.name || s.id}: ${s.status}`}><span aria-hidden="true">${look.icon}</span> ${s.name || s.id}</span>`;
        })}
      </div>
      <div class="stage-progress-text">${done}</div>
    </div>`;
  }

  function Tile({ tile }) {
    const doc = currentDoc(tile);
    const latest = doc ? { ...tile.latest, ...summaryFromDoc(doc) } : tile.latest;
    const status = latest?.status || null;
    const look = statusLook(status);
    const stats = tile.stats || {};
    const failure = tile.last_failure;
    const updated = stamp(`tile:${tile.dag_id}`, status);
    const running = isUnfinished(status);
    return html`<article class=${`tile${running ? " is-running" : ""}`} data-testid="tile" data-dag-id=${tile.dag_id}
        data-status=${status || ""} data-updated-at=${updated} style=${`--status:${look.color}`}>
      <header class="tile-head">
        <a class="tile-name" href=${pipelineUrl(tile.dag_id)} title=${`History of ${tile.dag_id}`}>${tile.dag_id}</a>
        <${StatusBadge} status=${status} testid="tile-status" stampKey=${`tile-status:${tile.dag_id}`} big=${true} />
      </header>
      <div class="tile-build-line">
        ${latest
          ? html`<a data-testid="tile-build" class="tile-build" href=${buildUrl(latest.id)}>#${latest.build_num ?? "?"}</a>
              <span class="muted">${[
                running ? `started ${fmtAgo(latest.started_at || latest.run_after)}` : `ended ${fmtAgo(latest.ended_at)}`,
                fmtDuration(buildDuration(latest)),
                latest.triggering_user ? `by ${latest.triggering_user}` : null,
              ].filter(Boolean).join(" · ")}</span>`
          : html`<span data-testid="tile-build" class="tile-build muted">no builds yet</span>`}
      </div>
      ${doc ? html`<${StageProgress} doc=${doc} />` : null}
      <dl class="tile-stats">
        <div><dt>success</dt><dd data-testid="success-rate">${fmtRate(stats.success_rate)}</dd></div>
        <div><dt>p50</dt><dd data-testid="duration-p50">${fmtDuration(stats.duration_p50_ms)}</dd></div>
        <div><dt>p95</dt><dd data-testid="duration-p95">${fmtDuration(stats.duration_p95_ms)}</dd></div>
        <div><dt>builds</dt><dd>${stats.builds ?? 0}</dd></div>
      </dl>
      <${Sparkline} trend=${tile.trend} />
      <div class="last-failure" data-testid="last-failure">
        ${failure
          ? html`<span class="lf-icon" aria-hidden="true">✗</span> last failure <a href=${buildUrl(failure.build_id)}>#${failure.build_num}</a>
              ${" "}${fmtAgo(failure.ended_at)}${failure.task ? ` in ${failure.task}` : ""}
              ${(failure.owners || []).length ? html` · owner <b>${failure.owners.join(", ")}</b>` : null}`
          : html`<span class="muted">no failure recorded</span>`}
      </div>
    </article>`;
  }

  function Picker() {
    const p = state.picker;
    if (!p.open) return null;
    const names = (p.names || []).filter((n) => n.toLowerCase().includes(p.filter.toLowerCase()));
    const tags = [...new Set([...state.tiles.values()].flatMap((t) => t.tags))].sort();
    const toggle = (name) => {
      if (p.chosen.has(name)) p.chosen.delete(name);
      else p.chosen.add(name);
      render();
    };
    return html`<section class="picker" aria-label="Choose pipelines" data-testid="picker">
      <div class="picker-row">
        <label>Window <select value=${p.window} onChange=${(e) => { p.window = e.target.value; render(); }}>
          ${[...new Set(["24h", "3d", "7d", "14d", "30d", "90d", p.window])].map((w) => html`<option value=${w}>${w}</option>`)}
        </select></label>
        <label>Tag <input list="bkci-tags" value=${p.tag} placeholder="team-x"
          onInput=${(e) => { p.tag = e.target.value; render(); }} /></label>
        <datalist id="bkci-tags">${tags.map((t) => html`<option value=${t} />`)}</datalist>
        <button type="button" disabled=${!p.tag.trim()} onClick=${() => go({ tag: p.tag.trim() })}>Show tag</button>
        <button type="button" onClick=${() => go({})}>Default set</button>
      </div>
      <div class="picker-row">
        <label>Pipelines <input type="search" value=${p.filter} placeholder="filter by name"
          onInput=${(e) => { p.filter = e.target.value; render(); }} /></label>
        <button type="button" disabled=${!p.chosen.size} onClick=${() => go({ pipelines: [...p.chosen].join(",") })}>
          Show ${p.chosen.size} selected</button>
        <button type="button" onClick=${() => { p.chosen.clear(); render(); }}>Clear</button>
      </div>
      ${p.loading ? html`<p class="muted">Loading pipelines…</p>` : null}
      ${p.error ? html`<p class="muted">${p.error} (showing the wall's own pipelines)</p>` : null}
      <ul class="picker-list">
        ${names.slice(0, 500).map((n) => html`<li key=${n}><label><input type="checkbox" checked=${p.chosen.has(n)}
          onChange=${() => toggle(n)} /> ${n}</label></li>`)}
      </ul>
    </section>`;
  }

  function messages() {
    const out = [];
    if (state.error) out.push({ key: "load", text: state.error.message, items: state.error.detail });
    if (state.missing.length) {
      out.push({
        key: "missing",
        text: `Not shown: ${state.missing.map((m) => m.dag_id).join(", ")} — unknown pipeline, or one you may not read.`,
      });
    }
    if (!state.loading && !state.error && !app.sessionExpired && !state.order.length && !state.missing.length) {
      out.push({ key: "empty", text: tag ? `No pipeline you may read has the tag ${tag}.` : "No pipelines to show." });
    }
    if (state.fullscreenNote) out.push({ key: "fs", text: state.fullscreenNote });
    return out;
  }

  function View() {
    const subtitle = [
      windowLabel(answerSeconds(state.window) ?? window_),
      pipelinesParam.length ? `${pipelinesParam.length} chosen` : tag ? `tag ${tag}` : state.source === "config" || state.source === "config_tag" ? "configured set" : null,
    ].filter(Boolean).join(" · ");
    const actions = html`
      <button type="button" class="btn" onClick=${openPicker} aria-expanded=${state.picker.open}>Choose pipelines</button>
      <button type="button" class="btn" onClick=${toggleFullscreen} data-testid="fullscreen"><svg class="icon" viewBox="0 0 16 16" width="14" height="14" aria-hidden="true"><path d="M1 6V1h5M10 1h5v5M15 10v5h-5M6 15H1v-5" fill="none" stroke="currentColor" stroke-width="2"/></svg> Full screen</button>`;
    return html`<${Page} title="Pipeline wall" subtitle=${subtitle} actions=${actions} messages=${messages()} kiosk=${kiosk} wide=${true}>
      <${Picker} />
      ${state.loading && !app.sessionExpired ? html`<p class="loading">Loading the wall…</p>` : null}
      <div class="wall">
        ${state.order.map((dagId) => {
          const tile = state.tiles.get(dagId);
          return tile ? html`<${Tile} key=${dagId} tile=${tile} />` : null;
        })}
      </div>
    <//>`;
  }

  load();
  return { View, onChange, retain, onRefused, onResync };
}
