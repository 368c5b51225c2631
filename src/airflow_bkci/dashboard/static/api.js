// The REST client: same-origin fetch with Airflow's session cookie, errors a person can read.
//
// 401 marks the session expired (the page shows a sign-in link); 403 and 404 become messages
// naming what was asked for; a 5xx or a network failure is "API unreachable, retrying" and GETs
// retry with backoff until the API answers again.

let root = "";
const listeners = { session: () => {}, reachable: () => {} };
let unreachable = 0; // requests currently waiting for the API to come back

export function configureApi(options) {
  root = options.root;
  if (options.onSessionExpired) listeners.session = options.onSessionExpired;
  if (options.onReachability) listeners.reachable = options.onReachability;
}

export class ApiError extends Error {
  /** kind: "session" | "forbidden" | "not_found" | "invalid" | "unreachable" | "other" */
  constructor(kind, status, message, detail) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.detail = detail;
  }
}

/** `${root}${path}` with a query string; array values repeat the parameter, null/"" are left out. */
export function apiUrl(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== undefined && v !== null && v !== "") query.append(key, String(v));
    }
  }
  const qs = query.toString();
  return `${root}${path}${qs ? `?${qs}` : ""}`;
}

function detailText(body) {
  const detail = body && body.detail;
  if (!detail) return { message: null, items: [] };
  if (typeof detail === "string") return { message: detail, items: [] };
  if (Array.isArray(detail)) {
    // FastAPI's own 422: [{"loc": [...], "msg": "..."}]
    return {
      message: "Some parameters are not valid",
      items: detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`),
    };
  }
  const items = detail.problems || (detail.dags ? detail.dags.map((d) => `DAG ${d}`) : []);
  return { message: detail.message || null, items };
}

async function errorFor(response, what) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const { message, items } = detailText(body);
  const s = response.status;
  if (s === 401) {
    return new ApiError("session", s, "Your Airflow session has expired or you are not signed in.", items);
  }
  if (s === 403) {
    return new ApiError("forbidden", s, message || `You may not read ${what}.`, items);
  }
  if (s === 404) return new ApiError("not_found", s, message || `${what} was not found.`, items);
  if (s >= 500) return new ApiError("unreachable", s, "API unreachable, retrying…", items);
  if (s === 400 || s === 409 || s === 413 || s === 422) {
    return new ApiError("invalid", s, message || `The request for ${what} was refused.`, items);
  }
  return new ApiError("other", s, message || `Unexpected answer ${s} for ${what}.`, items);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    }, { once: true });
  });
}

async function once(url, init, what) {
  let response;
  try {
    response = await fetch(url, { credentials: "same-origin", ...init });
  } catch (error) {
    if (error && error.name === "AbortError") throw error;
    throw new ApiError("unreachable", 0, "API unreachable, retrying…", []);
  }
  if (!response.ok) throw await errorFor(response, what);
  try {
    return await response.json();
  } catch {
    throw new ApiError("other", response.status, `The answer for ${what} was not JSON.`, []);
  }
}

function markReachable(down) {
  const before = unreachable;
  unreachable = Math.max(0, unreachable + (down ? 1 : -1));
  if ((before === 0) !== (unreachable === 0)) listeners.reachable(unreachable === 0);
}

/**
 * GET JSON. `what` names the thing for messages ("pipeline etl"). Unless `retry` is false, a 5xx
 * or a network failure is retried (1 s doubling to 30 s) until it answers or `signal` aborts.
 */
export async function getJSON(path, params, { what = path, retry = true, signal } = {}) {
  const url = apiUrl(path, params);
  let delay = 1000;
  let waiting = false;
  try {
    for (;;) {
      try {
        return await once(url, { headers: { Accept: "application/json" }, signal }, what);
      } catch (error) {
        if (error.kind === "session") listeners.session();
        if (!retry || !(error instanceof ApiError) || error.kind !== "unreachable") throw error;
        if (!waiting) {
          waiting = true;
          markReachable(true);
        }
        await sleep(delay * (0.75 + Math.random() * 0.5), signal);
        delay = Math.min(delay * 2, 30000);
      }
    }
  } finally {
    if (waiting) markReachable(false);
  }
}

/** POST JSON once (a cancel is never repeated behind the user's back). */
export async function postJSON(path, body, { what = path } = {}) {
  try {
    return await once(apiUrl(path), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    }, what);
  } catch (error) {
    if (error.kind === "session") listeners.session();
    if (error.kind === "unreachable") error.message = "API unreachable or busy: check the builds, then try again (sending the same cancel twice is safe).";
    throw error;
  }
}
