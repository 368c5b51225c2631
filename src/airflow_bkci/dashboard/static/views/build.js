// The build view: header, stages with their tasks as a live tree, the transition history.

import { getJSON } from "../api.js";
import { isUnfinished, statusLook } from "../status.js";
import {
  AirflowLink, Page, StatusBadge, app, buildDuration, fmtAgo, fmtDuration, fmtTime, html,
  orderedStages, ourUrl, pipelineUrl, stamp,
} from "../ui.js";

const TRANSITIONS_LIMIT = 500;

function taskOrder(tasks) {
  // Keep the document's order of tasks; a mapped task's instances by their index.
  const first = new Map();
  const list = Object.values(tasks || {});
  list.forEach((t, i) => {
    const base = t.task_id || String(t.id).split("[")[0];
    if (!first.has(base)) first.set(base, i);
  });
  return list.sort((a, b) => {
    const ba = first.get(a.task_id || String(a.id).split("[")[0]);
    const bb = first.get(b.task_id || String(b.id).split("[")[0]);
    return ba - bb || (a.map_index ?? -1) - (b.map_index ?? -1);
  });
}

function errorSummary(error) {
  if (!error) return null;
  const text = typeof error === "string" ? error : error.message || error.summary || JSON.stringify(error);
  // The store keeps "Type: first line of the message" already; a longer text keeps its first line.
  const line = String(text).trim().split("\n").find((l) => l.trim()) || "";
  return { short: line.length > 240 ? `${line.slice(0, 240)}…` : line, full: String(text).slice(0, 4000) };
}

export function startBuild({ live, render }, buildId) {
  const state = {
    loading: true,
    error: null,
    editable: false,
    links: {},
    transitions: [],
    transitionsError: null,
    transitionsTimer: null,
    transitionsFirstAsk: 0,
  };

  async function load() {
    try {
      const answer = await getJSON(`/v1/dashboard/builds/${encodeURIComponent(buildId)}`, null, { what: `build ${buildId}` });
      state.editable = Boolean(answer.editable);
      state.links = answer.links || {};
      live.seed(buildId, answer.document, answer.sequence ?? answer.document?.sequence ?? 0, answer.document?.pipeline_id);
      live.follow({ builds: [buildId] });
      loadTransitions();
    } catch (error) {
      if (error.kind !== "session") state.error = buildError(error);
    } finally {
      state.loading = false;
      render();
    }
  }

  function buildError(error) {
    if (error.kind === "not_found") return { text: `Build ${buildId} was not found: check the build id in the address.` };
    if (error.kind === "forbidden") return { text: `Build ${buildId}: you may not read this build's pipeline (${(error.detail || []).join(", ") || "no permission"}).` };
    return { text: `Build ${buildId}: ${error.message}`, items: error.detail };
  }

  async function loadTransitions() {
    try {
      const answer = await getJSON(`/v1/dashboard/builds/${encodeURIComponent(buildId)}/transitions`, { limit: TRANSITIONS_LIMIT }, { what: `the transitions of ${buildId}` });
      state.transitions = (answer.transitions || []).slice(0, TRANSITIONS_LIMIT);
      state.transitionsError = null;
    } catch (error) {
      state.transitionsError = error.message;
    }
    render();
  }

  /** Debounced: a burst of changes makes one request, and a steady stream one every 3 s at most. */
  function transitionsSoon() {
    const now = Date.now();
    if (!state.transitionsTimer) state.transitionsFirstAsk = now;
    clearTimeout(state.transitionsTimer);
    const wait = Math.max(0, Math.min(800, state.transitionsFirstAsk + 3000 - now));
    state.transitionsTimer = setTimeout(() => {
      state.transitionsTimer = null;
      loadTransitions();
    }, wait);
  }

  function onChange(id) {
    if (id !== buildId) return;
    transitionsSoon();
    render();
  }

  function onRefused(kind, ids) {
    if ((ids.builds || []).includes(buildId)) {
      state.error = { text: kind === "forbidden" ? `You may no longer read build ${buildId}.` : `Build ${buildId} is gone.` };
      render();
    }
  }

  function Task({ task, doc }) {
    const links = state.links.tasks?.[task.id] || {};
    const err = errorSummary(task.error);
    const label = task.map_index >= 0 ? html`${task.task_id}<span class="map-index">[${task.map_index}]</span>` : task.label || task.id;
    return html`<li class=${`task${task.map_index >= 0 ? " mapped" : ""}`} data-testid="task" data-node=${task.id}
        data-status=${task.status} data-updated-at=${stamp(`task:${doc.id}:${task.id}`, task.status)}>
      <${StatusBadge} status=${task.status} />
      <span class="task-name" title=${task.id}>${label}</span>
      <span class="task-meta">
        <span title="Try number">try ${task.try_number ?? "—"}${task.max_tries ? `/${task.max_tries + 1}` : ""}</span>
        <span title="Duration">${fmtDuration(buildDuration(task))}</span>
        ${task.host ? html`<span class="host" title="Host">${task.host}</span>` : null}
        ${task.detail && task.detail !== task.status ? html`<span class="detail">${task.detail}</span>` : null}
        ${task.quality_summary ? html`<span class="detail">${task.quality_summary}</span>` : null}
      </span>
      <span class="task-links">
        ${links.log ? html`<${AirflowLink} path=${links.log} testid="airflow-log-link" title="Task log in Airflow">log</${AirflowLink}>` : null}
        ${links.task && links.task !== links.log ? html`<${AirflowLink} path=${links.task} title="Task in Airflow">task</${AirflowLink}>` : null}
      </span>
      ${err ? html`<div class="task-error" title=${err.full}>${err.short}</div>` : null}
    </li>`;
  }

  function Stage({ stage, doc }) {
    const p = stage.progress || {};
    return html`<section class="stage" data-testid="stage" data-stage=${stage.id} data-status=${stage.status}
        style=${`--status:${statusLook(stage.status).color}`}
        data-updated-at=${stamp(`stage:${doc.id}:${stage.id}`, stage.status)}>
      <h3><${StatusBadge} status=${stage.status} /> <span>${stage.name || stage.id}</span>
        <span class="muted">${p.total != null ? `${p.finished}/${p.total} finished` : ""}</span></h3>
      <ul class="tasks">${taskOrder(stage.tasks).map((t) => html`<${Task} key=${t.id} task=${t} doc=${doc} />`)}</ul>
    </section>`;
  }

  function Header({ doc }) {
    const running = isUnfinished(doc.status);
    const grid = state.links.run || state.links.grid;
    const rows = [
      ["Trigger", doc.trigger_type || doc.run_type || "—"],
      ["User", doc.triggering_user || "—"],
      ["Queued", fmtTime(doc.queued_at)],
      ["Started", fmtTime(doc.started_at)],
      ["Ended", running ? "—" : fmtTime(doc.ended_at)],
      ["Duration", `${fmtDuration(buildDuration(doc))}${running && doc.started_at ? " so far" : ""}`],
      ["Run", doc.run_id || "—"],
    ];
    return html`<section class="build-head">
      <div class="build-head-main">
        <${StatusBadge} status=${doc.status} testid="build-status" stampKey=${`build:${doc.id}`} big=${true} />
        <span class="build-num">#${doc.build_num ?? "?"}</span>
        <a class="build-pipeline" href=${pipelineUrl(doc.pipeline_id)}>${doc.pipeline_id}</a>
        ${grid ? html`<${AirflowLink} path=${grid} testid="airflow-grid-link" title="This run in Airflow">Open in Airflow ↗</${AirflowLink}>` : null}
      </div>
      <dl class="facts">${rows.map(([k, v]) => html`<div key=${k}><dt>${k}</dt><dd>${v}</dd></div>`)}</dl>
      ${doc.status === "CANCELED" && (doc.cancel_reason || doc.canceled_by)
        ? html`<p class="note">Canceled${doc.canceled_by ? ` by ${doc.canceled_by}` : ""}${doc.cancel_reason ? `: ${doc.cancel_reason}` : ""}</p>` : null}
      ${doc.note ? html`<p class="note">Note: ${doc.note}</p>` : null}
    </section>`;
  }

  function Transitions() {
    return html`<section class="transitions-wrap">
      <h2>Transitions <span class="muted">(newest first${state.transitions.length >= TRANSITIONS_LIMIT ? `, the last ${TRANSITIONS_LIMIT}` : ""}; Airflow's own state in grey)</span></h2>
      ${state.transitionsError ? html`<p class="muted">${state.transitionsError}</p>` : null}
      <div class="table-scroll"><table class="transitions" data-testid="transitions">
        <thead><tr><th>When</th><th>Node</th><th>From</th><th>To</th><th>Try</th><th>Source</th></tr></thead>
        <tbody>${state.transitions.map((t, i) => html`<tr key=${`${t.node}|${t.at}|${t.to}|${i}`} data-testid="transition"
            data-node=${t.node || ""} data-to=${t.to}>
          <td title=${t.at}>${fmtTime(t.at)}</td><td>${t.node || "(build)"}</td>
          <td>${t.from ? html`<${StatusBadge} status=${t.from} />` : "—"}</td>
          <td><${StatusBadge} status=${t.to} />${t.airflow_state ? html` <span class="muted airflow-state" title="Airflow's state">${t.airflow_state}</span>` : null}</td>
          <td>${t.try_number ?? ""}</td><td class="muted">${t.source || ""}</td>
        </tr>`)}</tbody>
      </table></div>
    </section>`;
  }

  function View() {
    const doc = live.doc(buildId);
    const messages = state.error ? [{ key: "build", ...state.error }] : [];
    const title = doc ? `${doc.pipeline_id} #${doc.build_num ?? "?"}` : `Build ${buildId}`;
    return html`<${Page} title=${title} subtitle=${doc ? fmtAgo(doc.started_at || doc.run_after) : null} messages=${messages}>
      ${state.loading && !app.sessionExpired ? html`<p class="loading">Loading build ${buildId}…</p>` : null}
      ${doc && !state.error ? html`
        <${Header} doc=${doc} />
        <div class="stages">${orderedStages(doc).map((s) => html`<${Stage} key=${s.id} stage=${s} doc=${doc} />`)}</div>
        ${!orderedStages(doc).length ? html`<p class="muted">No tasks yet.</p>` : null}
        <${Transitions} />` : null}
      ${state.error ? html`<p class="hint"><a href=${ourUrl("/wall")}>Back to the wall</a></p>` : null}
    <//>`;
  }

  load();
  return { View, onChange, onRefused, retain: (id) => (id === buildId ? "keep" : "ignore") };
}
