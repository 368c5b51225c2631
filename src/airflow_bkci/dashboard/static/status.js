// BK-CI statuses: the Okabe–Ito palette, an icon and a label for each, and what each means.

const PALETTE = {
  SUCCEED: { color: "#009E73", ink: "#ffffff", icon: "✓", label: "Succeeded" },
  FAILED: { color: "#D55E00", ink: "#ffffff", icon: "✗", label: "Failed" },
  RUNNING: { color: "#0072B2", ink: "#ffffff", icon: "▶", label: "Running" },
  QUEUE: { color: "#999999", ink: "#000000", icon: "◷", label: "Queued" },
  PREPARE_ENV: { color: "#999999", ink: "#000000", icon: "◷", label: "Preparing environment" },
  RETRY: { color: "#E69F00", ink: "#000000", icon: "↻", label: "Waiting to retry" },
  REVIEWING: { color: "#F0E442", ink: "#000000", icon: "?", label: "Waiting for review" },
  CANCELED: { color: "#CC79A7", ink: "#000000", icon: "⊘", label: "Canceled" },
  SKIP: { color: "#BBBBBB", ink: "#000000", icon: "–", label: "Skipped" },
  UNEXEC: { color: "#BBBBBB", ink: "#000000", icon: "–", label: "Not executed" },
};
const UNKNOWN = { color: "#777777", ink: "#ffffff", icon: "·", label: "No status" };

export const STATUSES = Object.keys(PALETTE);

/** Colour, text colour on it, icon and long label of a status (a neutral look for null/unknown). */
export function statusLook(status) {
  return PALETTE[status] || UNKNOWN;
}

/** A build in these may still change; the wall draws its stage progress. */
export function isUnfinished(status) {
  return status === "QUEUE" || status === "PREPARE_ENV" || status === "RUNNING" ||
    status === "REVIEWING" || status === "RETRY";
}

/** A build in one of these has ended: its pipeline's stats change. */
export function isFinished(status) {
  return status === "SUCCEED" || status === "FAILED" || status === "CANCELED" ||
    status === "SKIP" || status === "UNEXEC";
}

/** The statuses a batch cancel may act on (Airflow's queued and running runs). */
export function isCancelable(status) {
  return status === "QUEUE" || status === "PREPARE_ENV" || status === "RUNNING" ||
    status === "REVIEWING";
}
