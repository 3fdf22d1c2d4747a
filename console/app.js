// The console's shell: login, hash routing, the one live connection, and
// the store every view reads. Views render once and then update in place
// from the store when a snapshot or events arrive; none of them polls.

import { api, ApiError, setToken, subscribe, token } from "./api.js";
import { h, mount, parseQuery } from "./util.js";
import * as topology from "./views/topology.js";
import * as device from "./views/device.js";
import * as alerts from "./views/alerts.js";
import * as workloads from "./views/workloads.js";
import * as events from "./views/events.js";

/** Newest events kept (all regions). */
const MAX_EVENTS = 2000;

/** What the live stream has told us so far. */
export const store = {
  snapshot: null,
  events: [],
  eventKeys: new Set(),
  status: "offline",
};

const routes = {
  topology: { title: "Topology", view: topology },
  device: { title: "Device", view: device, hidden: true },
  alerts: { title: "Alerts", view: alerts },
  workloads: { title: "Workloads", view: workloads },
  submit: { title: "Submit monitor", view: workloads, mode: "submit" },
  workload: { title: "Global workload", view: workloads, mode: "global", hidden: true },
  events: { title: "Events", view: events },
};

const root = document.getElementById("app");
let current = null; // { name, instance }
let stopStream = null;

function conn() {
  const s = store.status;
  const text = {
    offline: "offline", connecting: "connecting…", live: "live", reconnecting: "reconnecting…",
    reconnected: "reconnected", unauthorized: "token refused",
  }[s] || s;
  const cls = { live: "ok", reconnected: "ok", connecting: "warn", reconnecting: "warn" }[s] || "bad";
  return h(`span#conn.badge.${cls}`, { role: "status", "aria-live": "polite", dataset: { state: s } },
    h("span.dot"), text);
}

function shell(name, body) {
  const nav = h("nav",
    Object.entries(routes).filter(([, r]) => !r.hidden).map(([k, r]) =>
      h("a", { href: `#/${k}`, class: k === name ? "active" : null }, r.title)));
  const header = h("header",
    h("a.brand", { href: "#/topology" }, "Strata"),
    nav,
    h("div.right", conn(),
      h("button.link", { type: "button", id: "logout", onclick: logout }, "log out")));
  mount(root, header, h("div#banner"), h("main#main", body));
}

function updateConn() {
  const old = document.getElementById("conn");
  if (old) old.replaceWith(conn());
}

function banner() {
  const b = document.getElementById("banner");
  if (!b) return;
  const errs = store.snapshot?.errors || [];
  mount(b, errs.length ? h("div.notice.warn", h("strong", "Partial data: "), errs.join("; ")) : null);
}

function onStreamEvent(type, doc) {
  if (type === "snapshot") {
    store.snapshot = doc;
  } else if (type === "events") {
    for (const e of doc.events) {
      const key = `${doc.region}:${e.seq}`;
      if (store.eventKeys.has(key)) continue;
      store.eventKeys.add(key);
      store.events.push({ ...e, region: doc.region });
    }
    store.events.sort((a, b) => b["at-ms"] - a["at-ms"] || b.seq - a.seq);
    if (store.events.length > MAX_EVENTS) {
      for (const e of store.events.splice(MAX_EVENTS)) store.eventKeys.delete(`${e.region}:${e.seq}`);
    }
  } else {
    return;
  }
  banner();
  current?.instance?.update?.(type);
}

function onStatus(status, _attempt, message) {
  store.status = status;
  updateConn();
  if (status === "unauthorized") {
    stop();
    setToken(null);
    location.hash = `#/login?error=${encodeURIComponent(message || "the token was refused")}`;
  }
}

function start() {
  if (!stopStream) stopStream = subscribe(onStreamEvent, onStatus);
}

function stop() {
  if (stopStream) stopStream();
  stopStream = null;
  store.status = "offline";
}

function logout() {
  stop();
  setToken(null);
  Object.assign(store, { snapshot: null, events: [], eventKeys: new Set() });
  location.hash = "#/login";
}

function loginView(query) {
  const input = h("input#token", {
    type: "password", name: "token", autocomplete: "current-password", required: true,
    placeholder: "operator token", "aria-label": "API token",
  });
  const msg = h("p#login-error.error", { role: "alert" }, query.error || "");
  const button = h("button", { type: "submit" }, "Log in");
  const form = h("form.login", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) { msg.textContent = "Enter a token."; return; }
      button.disabled = true;
      msg.textContent = "";
      setToken(t);
      try {
        // Any guarded read proves the token; the stream checks it again.
        await api("/api/v1/regions");
        start();
        location.hash = query.next ? decodeURIComponent(query.next) : "#/topology";
      } catch (e) {
        setToken(null);
        msg.textContent = e instanceof ApiError && (e.status === 401 || e.status === 403)
          ? `Central refused this token: ${e.message}`
          : `Could not log in: ${e.message}`;
      } finally {
        button.disabled = false;
      }
    },
  },
  h("h1", "Strata console"),
  h("p.muted", "Log in with central's operator token (",
    h("code", "<data-dir>/operator.token"), ", or ", h("code", "strata up"), "'s banner)."),
  h("label", { for: "token" }, "Token"), input, button, msg);
  mount(root, h("main.login-page", form));
  input.focus();
}

function notFound(path) {
  return h("div.notice.bad", { id: "route-error", role: "alert" },
    h("h2", "No such page"),
    h("p", `The console has no page “${path}”. `, "Try ", h("a", { href: "#/topology" }, "Topology"), "."));
}

function route() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, q] = raw.split("?");
  const [name, ...rest] = path.split("/").filter(Boolean);
  const query = parseQuery(q);
  current?.instance?.destroy?.();
  current = null;
  if (name === "login") {
    loginView(query);
    return;
  }
  if (!token()) {
    location.hash = `#/login${raw ? `?next=${encodeURIComponent(`#/${raw}`)}` : ""}`;
    return;
  }
  start();
  if (!name) {
    location.hash = "#/topology";
    return;
  }
  const r = routes[name];
  if (!r) {
    shell(null, notFound(`#/${raw}`));
    document.title = "Not found · Strata";
    return;
  }
  const body = h("div.view", { id: `view-${name}` });
  shell(name, body);
  banner();
  document.title = `${r.title} · Strata`;
  try {
    const instance = r.view.render({ root: body, params: rest.map(decodeURIComponent), query, store, mode: r.mode });
    current = { name, instance };
    if (store.snapshot) instance?.update?.("snapshot");
  } catch (e) {
    mount(body, h("div.notice.bad", { role: "alert" }, `This view failed: ${e.message}`));
    console.error(e);
  }
}

window.addEventListener("hashchange", route);
route();
