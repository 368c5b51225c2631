// The dashboard's entry: reads the page's config, routes on the path, starts the live feed.

import { Component, html } from "./vendor/htm-preact-standalone.module.js";
import { configureApi } from "./api.js";
import { LiveFeed } from "./live.js";
import { Page, app, mount, reportFatal, scheduleRender } from "./ui.js";
import { startWall } from "./views/wall.js";
import { startBuild } from "./views/build.js";
import { startHistory } from "./views/history.js";

function readConfig() {
  if (window.__BKCI_CONFIG__) return window.__BKCI_CONFIG__;
  try {
    return JSON.parse(document.getElementById("bkci-config").textContent);
  } catch {
    const at = location.pathname.indexOf("/ui/");
    return { root: at >= 0 ? location.pathname.slice(0, at) : "/bkci", airflow_root: "", login_url: "/auth/login" };
  }
}

/** The view for the path under `${root}/ui`: wall, pipelines/{id}, builds/{id}, else unknown. */
export function route(pathname, root) {
  const base = `${root}/ui`;
  const rest = pathname.startsWith(base) ? pathname.slice(base.length) : pathname;
  const parts = rest.split("/").filter(Boolean);
  try {
    if (parts.length === 0 || (parts.length === 1 && parts[0] === "wall")) return { name: "wall" };
    if (parts.length === 2 && parts[0] === "pipelines") return { name: "history", id: decodeURIComponent(parts[1]) };
    if (parts.length === 2 && parts[0] === "builds") return { name: "build", id: decodeURIComponent(parts[1]) };
  } catch {
    // a malformed %-escape: not a page of ours
  }
  return { name: "unknown", path: rest || "/" };
}

function unknownPage(path) {
  return {
    View: () => html`<${Page} title="Unknown page"
      messages=${[`There is no dashboard page at ${path}: unknown page. Try the wall, a pipeline's history (/ui/pipelines/<dag id>) or a build (/ui/builds/<build id>).`]}>
      <p class="hint"><a href=${`${app.config.root}/ui/wall`}>Open the wall</a></p>
    <//>`,
  };
}

/** Anything a view throws while drawing ends up in the error box, not in a blank page. */
class Boundary extends Component {
  componentDidCatch(error) {
    reportFatal(error);
    this.setState({ failed: true });
  }
  render({ view }) {
    if (this.state.failed) return html`<${Page} title="BK-CI" messages=${[]} />`;
    return html`<${view.View} />`;
  }
}

function main() {
  app.config = { ...app.config, ...readConfig() };
  const root = (app.config.root || "").replace(/\/$/, "");
  app.config.root = root;
  window.addEventListener("error", (event) => {
    // A resource that failed to load is not a JS error (the views report their own fetches).
    if (event.error || event.message) reportFatal(event.error || event.message);
  });
  window.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    if (event.reason && event.reason.name === "AbortError") return;
    reportFatal(event.reason);
  });
  let live = null;
  configureApi({
    root,
    onSessionExpired: () => {
      app.sessionExpired = true;
      live?.sessionExpired();
      scheduleRender();
    },
    onReachability: (reachable) => {
      app.apiDown = !reachable;
      scheduleRender();
    },
  });

  let view = null;
  live = new LiveFeed(root, {
    onState: (state, detail) => {
      if (state === "live") app.liveRefused = false;
      app.connection = {
        state,
        everLive: app.connection.everLive || state === "live",
        expired: Boolean(detail.expired),
      };
      scheduleRender();
    },
    onSessionExpired: () => {
      app.sessionExpired = true;
      scheduleRender();
    },
    onChange: (id, entry, previous) => view?.onChange?.(id, entry, previous),
    retain: (id, entry) => (view?.retain ? view.retain(id, entry) : "keep"),
    onRefused: (kind, ids) => {
      if (kind === "too_many") {
        app.liveRefused = true;
        scheduleRender();
      }
      view?.onRefused?.(kind, ids);
    },
    onResync: () => view?.onResync?.(),
  });

  const where = route(location.pathname, root);
  const ctx = { live, params: new URLSearchParams(location.search), render: scheduleRender };
  if (where.name === "wall") view = startWall(ctx);
  else if (where.name === "history") view = startHistory(ctx, where.id);
  else if (where.name === "build") view = startBuild(ctx, where.id);
  else view = unknownPage(where.path);

  document.documentElement.classList.toggle("wall-page", where.name === "wall");
  mount(document.getElementById("app"), () => html`<${Boundary} view=${view} />`);
  live.start();
  // Relative times ("3 min ago", a running build's duration) move on without any fetch.
  setInterval(scheduleRender, 5000);
}

try {
  main();
} catch (error) {
  reportFatal(error);
  const box = document.createElement("div");
  box.className = "error-box";
  box.setAttribute("data-testid", "error");
  box.textContent = `The dashboard could not start: ${error && error.message}. Reload the page to try again.`;
  document.getElementById("app")?.replaceChildren(box);
}
