// Charts in plain SVG: the tiles' trend sparkline and the history view's line charts.
// Each has a <title> (and <desc>) so a screen reader gets the gist.

import { html } from "./vendor/htm-preact-standalone.module.js";
import { statusLook } from "./status.js";
import { fmtDuration, fmtRate } from "./ui.js";

/** The last builds as bars: height = duration, colour = final status; oldest on the left. */
export function Sparkline({ trend = [], width = 240, height = 48, testid = "trend" }) {
  const builds = trend.slice(-100);
  const durations = builds.map((b) => b.duration_ms || 0);
  const max = Math.max(1, ...durations);
  const counts = {};
  builds.forEach((b) => (counts[b.status] = (counts[b.status] || 0) + 1));
  const summary = builds.length
    ? `Last ${builds.length} builds: ${Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ")}; ` +
      `longest ${fmtDuration(max)}`
    : "No finished builds yet";
  const slot = width / Math.max(builds.length, 1);
  const bar = Math.max(1, slot * 0.7);
  return html`<svg class="sparkline" data-testid=${testid} viewBox=${`0 0 ${width} ${height}`}
      role="img" aria-label=${summary} preserveAspectRatio="none">
    <title>${summary}</title>
    <line x1="0" y1=${height - 0.5} x2=${width} y2=${height - 0.5} class="axis" />
    ${builds.map((b, i) => {
      const h = Math.max(3, ((b.duration_ms || 0) / max) * (height - 4));
      return html`<rect key=${b.build_id || i} x=${i * slot + (slot - bar) / 2} y=${height - h}
          width=${bar} height=${h} rx="1" fill=${statusLook(b.status).color}>
        <title>#${b.build_num} ${b.status} ${fmtDuration(b.duration_ms)}</title></rect>`;
    })}
  </svg>`;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * exp) return step * exp;
  return 10 * exp;
}

const DURATION_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
  .map((s) => s * 1000);

/** A top for a duration axis of four steps that fall on whole seconds, minutes or hours. */
function niceDurationMax(value) {
  const step = DURATION_STEPS.find((s) => s * 4 >= value) || Math.ceil(value / 4 / 86400000) * 86400000;
  return step * 4;
}

function label(start, bucket) {
  const d = new Date(start);
  if (Number.isNaN(d.getTime())) return "";
  return bucket === "hour"
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { month: "short", day: "numeric" });
}

/**
 * Lines over the series' buckets. `lines`: [{key, label, color, dash}]; a null value breaks the
 * line (an empty bucket). `yMax` fixes the scale (1 for a rate), else it fits the data.
 */
export function LineChart({ points = [], bucket = "day", lines, yMax, yFormat, title, testid, durations = false }) {
  const W = 800;
  const H = 260;
  const pad = { l: 64, r: 16, t: 16, b: 36 };
  const iw = W - pad.l - pad.r;
  const ih = H - pad.t - pad.b;
  const values = points.flatMap((p) => lines.map((l) => p[l.key])).filter((v) => typeof v === "number");
  const highest = Math.max(0, ...values);
  const top = yMax ?? (durations ? niceDurationMax(highest) : niceMax(highest));
  const x = (i) => pad.l + (points.length <= 1 ? iw / 2 : (i / (points.length - 1)) * iw);
  const y = (v) => pad.t + ih - (v / top) * ih;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => f * top);
  const every = Math.max(1, Math.ceil(points.length / 8));
  const paths = lines.map((l) => {
    let d = "";
    let pen = false;
    points.forEach((p, i) => {
      const v = p[l.key];
      if (typeof v !== "number") {
        pen = false;
        return;
      }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    return { ...l, d };
  });
  const filled = points.filter((p) => lines.some((l) => typeof p[l.key] === "number"));
  const desc = filled.length
    ? lines.map((l) => {
        const vs = filled.map((p) => p[l.key]).filter((v) => typeof v === "number");
        return `${l.label}: latest ${yFormat(vs[vs.length - 1])}, from ${yFormat(Math.min(...vs))} to ${yFormat(Math.max(...vs))}`;
      }).join("; ")
    : "No finished builds in this window";
  return html`<figure class="chart">
    <svg data-testid=${testid} viewBox=${`0 0 ${W} ${H}`} role="img" aria-label=${`${title}. ${desc}`}>
      <title>${title}</title>
      <desc>${desc}</desc>
      ${ticks.map((t) => html`<g key=${t} class="grid">
        <line x1=${pad.l} x2=${W - pad.r} y1=${y(t)} y2=${y(t)} />
        <text x=${pad.l - 8} y=${y(t) + 4} text-anchor="end">${yFormat(t)}</text></g>`)}
      ${points.map((p, i) => (i % every === 0 ? html`<text key=${p.start} class="xlabel" x=${x(i)} y=${H - 12}
        text-anchor="middle">${label(p.start, bucket)}</text>` : null))}
      ${paths.map((l) => html`<path key=${l.key} d=${l.d} fill="none" stroke=${l.color} stroke-width="3"
        stroke-dasharray=${l.dash || ""} stroke-linejoin="round" stroke-linecap="round" />`)}
      ${paths.map((l) => points.map((p, i) => (typeof p[l.key] === "number"
        ? html`<circle key=${`${l.key}-${i}`} cx=${x(i)} cy=${y(p[l.key])} r="3.5" fill=${l.color}>
            <title>${label(p.start, bucket)} ${l.label}: ${yFormat(p[l.key])} (${p.finished ?? 0} finished)</title></circle>`
        : null)))}
      ${!filled.length && html`<text x=${W / 2} y=${H / 2} text-anchor="middle" class="empty">No finished builds</text>`}
    </svg>
    <figcaption>${title}${lines.map((l) => html` <span class="legend" key=${l.key}>
      <svg width="28" height="10" aria-hidden="true"><line x1="0" y1="5" x2="28" y2="5" stroke=${l.color}
        stroke-width="3" stroke-dasharray=${l.dash || ""} /></svg> ${l.label}</span>`)}</figcaption>
  </figure>`;
}

export function SuccessRateChart({ series }) {
  return html`<${LineChart} points=${series.points || []} bucket=${series.bucket} yMax=${1}
    yFormat=${fmtRate} title="Success rate" testid="chart-success-rate"
    lines=${[{ key: "success_rate", label: "success rate", color: "#009E73" }]} />`;
}

export function DurationChart({ series }) {
  return html`<${LineChart} points=${series.points || []} bucket=${series.bucket}
    yFormat=${fmtDuration} title="Build duration" testid="chart-durations" durations=${true}
    lines=${[
      { key: "duration_p50_ms", label: "p50", color: "#0072B2" },
      { key: "duration_p95_ms", label: "p95", color: "#E69F00", dash: "8 5" },
    ]} />`;
}
