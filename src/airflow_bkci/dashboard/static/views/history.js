// The history view: a pipeline's builds (filters, load more), its charts, and batch cancel.

import { getJSON, postJSON } from "../api.js";
import { DurationChart, SuccessRateChart } from "../charts.js";
import { STATUSES, isCancelable, isFinished } from "../status.js";
import {
  AirflowLink, Page, StatusBadge, app, buildDuration, buildUrl, fmtDuration, fmtTime, html, ourUrl, stamp,
} from "../ui.js";

const PAGE = 50;
const MAX_ROWS = 1000; // a page open for days keeps at most this many rows

function toLocalInput(iso) {
  const t = Date.parse(iso || "");
  if (Number.isNaN(t)) return "";
  const d = new Date(t - new Date(t).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

function fromLocalInput(value) {
  if (!value) return null;
  const t = new Date(value);
  return Number.isNaN(t.getTime()) ? null : t.toISOString();
}

const OUTCOME_TEXT = {
  canceled: "canceled",
  canceled_teardown_running: "canceled (teardown tasks still run)",
  already_finished: "already finished: left as it is",
  already_canceled: "already canceled: left as it is",
};

export function startHistory({ live, params, render }, dagId) {
  const statusFilter = params.getAll("status").filter(Boolean);
  const conf = [...params.entries()].filter(([k]) => k.startsWith("conf.")).map(([k, v]) => [k.slice(5), v]);
  const since = params.get("since") || "";
  const until = params.get("until") || "";
  const query = { status: statusFilter, since: since || null, until: until || null };
  conf.forEach(([k, v]) => (query[`conf.${k}`] = v));

  const state = {
    pipeline: null,
    loading: true,
    error: null,
    rows: [], // build summaries, newest first
    byId: new Map(),
    cursor: null,
    more: false,
    loadingMore: false,
    moreError: null,
    capped: false,
    selected: new Set(),
    series: null,
    seriesError: null,
    seriesTimer: null,
    dialog: null,
    form: {
      open: Boolean(statusFilter.length || conf.length || since || until),
      status: new Set(statusFilter),
      conf: conf.length ? conf.map(([k, v]) => ({ k, v })) : [{ k: "", v: "" }],
      since: toLocalInput(since),
      until: toLocalInput(until),
    },
  };

  const what = `pipeline ${dagId}`;

  function pipelineError(error) {
    if (error.kind === "not_found") return { key: "p", text: `Pipeline ${dagId} was not found: no such DAG, or the status store has no build of it.` };
    if (error.kind === "forbidden") return { key: "p", text: `Pipeline ${dagId}: you may not read this DAG.` };
    if (error.kind === "invalid") return { key: "p", text: `The filters were not accepted: ${error.message}`, items: error.detail };
    return { key: "p", text: `Pipeline ${dagId}: ${error.message}`, items: error.detail };
  }

  function addRows(builds) {
    for (const b of builds) {
      if (state.byId.has(b.id)) continue;
      if (state.rows.length >= MAX_ROWS) {
        state.capped = true;
        break;
      }
      state.byId.set(b.id, b);
      state.rows.push(b);
    }
  }

  async function load() {
    try {
      const [pipeline, page] = await Promise.all([
        getJSON(`/v1/dashboard/pipelines/${encodeURIComponent(dagId)}`, null, { what }),
        getJSON(`/v1/pipelines/${encodeURIComponent(dagId)}/builds`, { ...query, limit: PAGE }, { what }),
      ]);
      state.pipeline = pipeline;
      addRows(page.builds || []);
      state.cursor = page.next_cursor || null;
      state.more = Boolean(page.next_cursor);
      live.follow({ pipelines: [dagId] });
      loadSeries();
    } catch (error) {
      if (error.kind !== "session") state.error = pipelineError(error);
    } finally {
      state.loading = false;
      render();
    }
  }

  /** Live again after a reconnect: the first page again, for builds that started and ended meanwhile. */
  async function onResync() {
    if (state.loading || state.error) return;
    try {
      const page = await getJSON(`/v1/pipelines/${encodeURIComponent(dagId)}/builds`, { ...query, limit: PAGE }, { what });
      const old = state.byId;
      state.rows = [];
      state.byId = new Map();
      state.capped = false;
      // A row the live feed moved past what this page says keeps its newer state.
      addRows((page.builds || []).map((b) => {
        const row = old.get(b.id);
        return row && typeof row.sequence === "number" && !(b.sequence >= row.sequence) ? row : b;
      }));
      for (const id of [...state.selected]) if (!isCancelable(state.byId.get(id)?.status)) state.selected.delete(id);
      state.cursor = page.next_cursor || null;
      state.more = Boolean(page.next_cursor);
      state.moreError = null;
    } catch {
      // the rows stay as they are; the live feed goes on
    }
    render();
  }

  async function loadMore() {
    if (!state.cursor || state.loadingMore) return;
    state.loadingMore = true;
    state.moreError = null;
    render();
    try {
      const page = await getJSON(`/v1/pipelines/${encodeURIComponent(dagId)}/builds`, { ...query, limit: PAGE, cursor: state.cursor }, { what });
      addRows(page.builds || []);
      state.cursor = page.next_cursor || null;
      state.more = Boolean(page.next_cursor) && !state.capped;
    } catch (error) {
      state.moreError = error.message;
    } finally {
      state.loadingMore = false;
      render();
    }
  }

  async function loadSeries() {
    const end = until ? Date.parse(until) : Date.now();
    const start = since ? Date.parse(since) : end - 14 * 86400000;
    const bucket = end - start <= 3 * 86400000 ? "hour" : "day";
    try {
      state.series = await getJSON(`/v1/dashboard/pipelines/${encodeURIComponent(dagId)}/series`, {
        since: new Date(start).toISOString(), until: new Date(end).toISOString(), bucket,
      }, { what: `the charts of ${dagId}`, retry: false });
      state.seriesError = null;
    } catch (error) {
      state.seriesError = error.message;
    }
    render();
  }

  function matchesFilters(doc) {
    if (conf.length || until) return false; // the page cannot tell: the server filters on these
    if (since && Date.parse(doc.run_after || "") < Date.parse(since)) return false;
    return !statusFilter.length || statusFilter.includes(doc.status);
  }

  function onChange(buildId, entry, previous) {
    const doc = entry.doc || {};
    if (doc.pipeline_id && doc.pipeline_id !== dagId) return;
    let row = state.byId.get(buildId);
    if (!row && typeof doc.build_num === "number" && matchesFilters(doc) &&
        (!state.rows.length || doc.build_num > (state.rows[0].build_num ?? 0))) {
      row = { id: buildId, pipeline_id: dagId, run_id: doc.run_id, build_num: doc.build_num };
      state.rows.unshift(row);
      state.byId.set(buildId, row);
      if (state.rows.length > MAX_ROWS) {
        const dropped = state.rows.pop();
        state.byId.delete(dropped.id);
        state.selected.delete(dropped.id);
        state.capped = true;
        state.more = false;
      }
    }
    if (row) {
      Object.assign(row, {
        status: doc.status, started_at: doc.started_at, ended_at: doc.ended_at, queued_at: doc.queued_at,
        duration_ms: doc.duration_ms, triggering_user: doc.triggering_user ?? row.triggering_user,
        trigger_type: doc.trigger_type ?? row.trigger_type, run_after: doc.run_after ?? row.run_after,
        sequence: entry.seq,
      });
      if (!isCancelable(row.status)) state.selected.delete(buildId);
    }
    if (isFinished(doc.status) && previous?.status !== doc.status) {
      clearTimeout(state.seriesTimer);
      state.seriesTimer = setTimeout(loadSeries, 5000);
    }
    render();
  }

  function retain(buildId, entry) {
    if (!isFinished(entry.doc?.status)) return "keep";
    return state.byId.has(buildId) ? "drop" : "ignore"; // a listed one fetches again if it changes
  }

  // -- filters ------------------------------------------------------------------------------------

  function applyFilters(event) {
    event.preventDefault();
    const f = state.form;
    const next = { status: [...f.status], since: fromLocalInput(f.since), until: fromLocalInput(f.until) };
    for (const { k, v } of f.conf) if (k.trim()) next[`conf.${k.trim()}`] = v;
    location.assign(ourUrl(`/pipelines/${encodeURIComponent(dagId)}`, next));
  }

  function Filters() {
    const f = state.form;
    const set = (fn) => (e) => {
      fn(e.target);
      render();
    };
    return html`<details class="filters" open=${f.open} onToggle=${(e) => (f.open = e.target.open)}>
      <summary>Filters${statusFilter.length || conf.length || since || until ? " (active)" : ""}</summary>
      <form onSubmit=${applyFilters}>
        <fieldset class="status-filter"><legend>Status</legend>
          ${STATUSES.map((s) => html`<label key=${s}><input type="checkbox" checked=${f.status.has(s)}
            onChange=${set((t) => (t.checked ? f.status.add(s) : f.status.delete(s)))} /> ${s}</label>`)}
        </fieldset>
        <fieldset><legend>Run conf (key = value)</legend>
          ${f.conf.map((row, i) => html`<div class="conf-row" key=${i}>
            <input aria-label="conf key" placeholder="branch" value=${row.k} onInput=${set((t) => (row.k = t.value))} />
            <span>=</span>
            <input aria-label="conf value" placeholder="main" value=${row.v} onInput=${set((t) => (row.v = t.value))} />
          </div>`)}
          ${f.conf.length < 10 ? html`<button type="button" class="btn-link" onClick=${() => { f.conf.push({ k: "", v: "" }); render(); }}>+ another key</button>` : null}
        </fieldset>
        <fieldset><legend>Due between</legend>
          <label>since <input type="datetime-local" value=${f.since} onInput=${set((t) => (f.since = t.value))} /></label>
          <label>until <input type="datetime-local" value=${f.until} onInput=${set((t) => (f.until = t.value))} /></label>
        </fieldset>
        <div class="form-actions">
          <button type="submit" class="btn primary">Apply</button>
          <a class="btn" href=${ourUrl(`/pipelines/${encodeURIComponent(dagId)}`)}>Clear filters</a>
        </div>
      </form>
    </details>`;
  }

  // -- cancel -------------------------------------------------------------------------------------

  function cancelErrorText(error) {
    if (error.kind === "forbidden") return `You may not cancel builds of ${(error.detail || []).join(", ") || "this DAG"}: it needs edit permission on the DAG.`;
    return error.message;
  }

  async function openCancel() {
    const ids = state.rows.filter((r) => state.selected.has(r.id) && isCancelable(r.status)).map((r) => r.id);
    if (!ids.length) return;
    state.dialog = { phase: "dry", ids, dry: null, result: null, reason: "", error: null };
    render();
    try {
      const dry = await postJSON("/v1/builds/cancel", { build_ids: ids, reason: "(dry run)", dry_run: true }, { what: "the dry run" });
      if (state.dialog?.ids === ids) state.dialog = { ...state.dialog, phase: "ready", dry };
    } catch (error) {
      if (state.dialog?.ids === ids) state.dialog = { ...state.dialog, phase: "error", error: cancelErrorText(error) };
    }
    render();
  }

  async function confirmCancel(event) {
    event?.preventDefault();
    const d = state.dialog;
    if (!d || d.phase !== "ready" || !d.reason.trim()) return;
    state.dialog = { ...d, phase: "sending", error: null };
    render();
    try {
      const result = await postJSON("/v1/builds/cancel", { build_ids: d.ids, reason: d.reason.trim(), dry_run: false }, { what: "the cancel" });
      if (state.dialog) state.dialog = { ...state.dialog, phase: "done", result };
      state.selected.clear();
    } catch (error) {
      if (state.dialog) state.dialog = { ...state.dialog, phase: "ready", error: cancelErrorText(error) };
    }
    render();
  }

  function closeDialog() {
    if (state.dialog?.phase === "sending") return;
    state.dialog = null;
    render();
  }

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.dialog) closeDialog();
  });

  function taskList(label, tasks) {
    return tasks && tasks.length ? html`<div class="task-list"><b>${label}</b> ${tasks.slice(0, 12).join(", ")}${tasks.length > 12 ? ` and ${tasks.length - 12} more` : ""}</div>` : null;
  }

  function OutcomeRows({ answer, testid, dry }) {
    return html`<table class="outcomes"><thead><tr><th>Build</th><th>State</th><th>${dry ? "Would be" : "Outcome"}</th><th>Tasks</th></tr></thead>
      <tbody>${(answer.builds || []).map((b) => {
        const row = state.byId.get(b.build_id);
        return html`<tr key=${b.build_id} data-testid=${testid} data-build-id=${b.build_id} data-outcome=${b.outcome}>
          <td><a href=${buildUrl(b.build_id)}>#${row?.build_num ?? "?"}</a> <span class="muted">${b.run_id}</span></td>
          <td>${b.prior_state} → ${b.state}</td>
          <td>${OUTCOME_TEXT[b.outcome] || b.outcome}</td>
          <td>${taskList(dry ? "fail:" : "failed:", b.failed_tasks)}${taskList(dry ? "skip:" : "skipped:", b.skipped_tasks)}${taskList("teardown runs:", b.teardown_tasks)}
            ${!(b.failed_tasks?.length || b.skipped_tasks?.length || b.teardown_tasks?.length) ? html`<span class="muted">none</span>` : null}</td>
        </tr>`;
      })}</tbody></table>`;
  }

  function summaryText(answer) {
    return Object.entries(answer.summary || {}).map(([k, n]) => `${n} ${OUTCOME_TEXT[k] || k}`).join(", ");
  }

  function CancelDialog() {
    const d = state.dialog;
    if (!d) return null;
    return html`<div class="modal-backdrop" onClick=${(e) => e.target === e.currentTarget && closeDialog()}>
      <div class="modal" role="dialog" aria-modal="true" aria-labelledby="cancel-title" data-testid="cancel-dialog">
        <h2 id="cancel-title">Cancel ${d.ids.length} build${d.ids.length === 1 ? "" : "s"} of ${dagId}</h2>
        ${d.phase === "dry" ? html`<p class="loading">Asking what the cancel would change (dry run)…</p>` : null}
        ${d.error ? html`<p class="modal-error" role="alert">${d.error}</p>` : null}
        ${d.dry && d.phase !== "done" ? html`
          <p>Dry run — nothing has changed yet. ${summaryText(d.dry)}.</p>
          <${OutcomeRows} answer=${d.dry} testid="dry-run-row" dry=${true} />
          <form onSubmit=${confirmCancel}>
            <label class="reason">Reason (required; kept in each run's note and the audit log)
              <textarea data-testid="cancel-reason" required rows="2" value=${d.reason}
                onInput=${(e) => { d.reason = e.target.value; render(); }} ref=${(el) => el && d.phase === "ready" && !d.focused && (d.focused = true, el.focus())}></textarea></label>
            <div class="form-actions">
              <button type="submit" class="btn danger" data-testid="cancel-confirm"
                disabled=${d.phase !== "ready" || !d.reason.trim()}>${d.phase === "sending" ? "Canceling…" : `Cancel ${d.ids.length} build${d.ids.length === 1 ? "" : "s"}`}</button>
              <button type="button" class="btn" onClick=${closeDialog}>Keep them running</button>
            </div>
          </form>` : null}
        ${d.phase === "done" ? html`
          <p>Done: ${summaryText(d.result)}. The rows turn CANCELED as the live feed reports it.</p>
          <${OutcomeRows} answer=${d.result} testid="cancel-result-row" dry=${false} />
          <div class="form-actions"><button type="button" class="btn" onClick=${closeDialog}>Close</button></div>` : null}
        ${d.phase === "error" ? html`<div class="form-actions"><button type="button" class="btn" onClick=${closeDialog}>Close</button></div>` : null}
      </div>
    </div>`;
  }

  // -- drawing ------------------------------------------------------------------------------------

  function Row({ row, editable }) {
    const cancelable = editable && isCancelable(row.status);
    return html`<tr data-testid="build-row" data-build-id=${row.id} data-status=${row.status}
        data-updated-at=${stamp(`row:${row.id}`, row.status)} class=${state.selected.has(row.id) ? "selected" : ""}>
      ${editable ? html`<td class="select">${cancelable ? html`<input type="checkbox" data-testid="select-build"
        aria-label=${`Select build #${row.build_num}`} checked=${state.selected.has(row.id)}
        onChange=${(e) => { if (e.target.checked) state.selected.add(row.id); else state.selected.delete(row.id); render(); }} />` : null}</td>` : null}
      <td><a href=${buildUrl(row.id)}>#${row.build_num}</a></td>
      <td><${StatusBadge} status=${row.status} /></td>
      <td title=${row.run_after}>${fmtTime(row.run_after)}</td>
      <td>${fmtDuration(buildDuration(row))}</td>
      <td>${row.trigger_type || "—"}</td>
      <td>${row.triggering_user || "—"}</td>
      <td class="muted run-id" title=${row.run_id}>${row.run_id}</td>
    </tr>`;
  }

  function View() {
    const p = state.pipeline;
    const editable = Boolean(p?.editable);
    const cancelableRows = state.rows.filter((r) => isCancelable(r.status));
    const selectedCount = cancelableRows.filter((r) => state.selected.has(r.id)).length;
    const allSelected = cancelableRows.length > 0 && selectedCount === cancelableRows.length;
    const messages = state.error ? [state.error] : [];
    const grid = p?.links?.grid;
    return html`<${Page} title=${dagId} subtitle=${p ? [p.owners?.length ? `owners ${p.owners.join(", ")}` : null, ...(p.tags || []).map((t) => `#${t}`)].filter(Boolean).join(" · ") : null}
        actions=${grid ? html`<${AirflowLink} path=${grid} testid="airflow-grid-link" title="This DAG in Airflow">Open in Airflow ↗</${AirflowLink}>` : null}
        messages=${messages}>
      ${state.loading && !app.sessionExpired ? html`<p class="loading">Loading ${dagId}…</p>` : null}
      ${p && !state.error ? html`
        <section class="charts">
          ${state.series ? html`<${SuccessRateChart} series=${state.series} /><${DurationChart} series=${state.series} />`
            : html`<p class="muted">${state.seriesError || "Loading charts…"}</p>`}
        </section>
        <${Filters} />
        <div class="toolbar">
          ${editable
            ? html`<button type="button" class="btn danger" data-testid="cancel-selected" disabled=${!selectedCount}
                onClick=${openCancel}>Cancel selected (${selectedCount})</button>
                <span class="muted">Only queued and running builds can be selected.</span>`
            : html`<p class="note" data-testid="cancel-not-allowed">You cannot cancel builds here: canceling needs edit permission on the DAG ${dagId}, and you may only read it.</p>`}
        </div>
        <div class="table-scroll"><table class="builds">
          <thead><tr>
            ${editable ? html`<th class="select"><input type="checkbox" aria-label="Select every queued and running build"
              checked=${allSelected} disabled=${!cancelableRows.length}
              onChange=${(e) => { cancelableRows.forEach((r) => (e.target.checked ? state.selected.add(r.id) : state.selected.delete(r.id))); render(); }} /></th>` : null}
            <th>Build</th><th>Status</th><th>Due</th><th>Duration</th><th>Trigger</th><th>User</th><th>Run</th>
          </tr></thead>
          <tbody>${state.rows.map((r) => html`<${Row} key=${r.id} row=${r} editable=${editable} />`)}</tbody>
        </table></div>
        ${!state.rows.length ? html`<p class="muted">No builds match.</p>` : null}
        ${state.moreError ? html`<p class="muted">${state.moreError}</p>` : null}
        ${state.more ? html`<button type="button" class="btn" onClick=${loadMore} disabled=${state.loadingMore}
          data-testid="load-more">${state.loadingMore ? "Loading…" : "Load more"}</button>` : null}
        ${state.capped ? html`<p class="muted">Showing the first ${MAX_ROWS} builds: narrow the filters to see others.</p>` : null}
        <${CancelDialog} />` : null}
    <//>`;
  }

  load();
  return { View, onChange, retain, onResync };
}
