// Alerts: a live feed with filters (tenant, device, monitor, minimum
// severity). Opening the view or changing a filter reads the history once
// (`GET /api/v1/alerts`); after that new alerts arrive with the stream's
// snapshots. Filters live in the URL (#/alerts?severity=warning), so a
// malformed one — typed or linked — is reported, never silently ignored.

import { api } from "../api.js";
import { badge, h, mount, pagedTable, time } from "../util.js";

const SEVERITIES = ["info", "warning", "critical"];
const FILTERS = ["tenant", "device", "monitor", "severity"];
const KEEP = 5000;

const key = (a) => [a.region, a["ts-ms"], a.tenant, a.device, a.monitor, a.code, a.message].join("|");
const sevClass = (s) => ({ info: "unknown", warning: "warn", critical: "bad" }[s] || "unknown");

/** The filter's problems, one sentence each (empty: valid). */
export function validate(f) {
  const errs = [];
  for (const k of Object.keys(f)) {
    if (!FILTERS.includes(k)) errs.push(`unknown filter “${k}” (filters: ${FILTERS.join(", ")})`);
  }
  if (f.severity !== undefined && !SEVERITIES.includes(f.severity)) {
    errs.push(`severity “${f.severity}” is not one of ${SEVERITIES.join(", ")}`);
  }
  for (const k of ["tenant", "device", "monitor"]) {
    if (f[k] !== undefined && !/^[A-Za-z0-9._*:-]{1,128}$/.test(f[k])) errs.push(`${k} “${f[k]}” is not a valid name`);
  }
  return errs;
}

export function render({ root, query, store }) {
  const filter = Object.fromEntries(Object.entries(query).filter(([, v]) => v !== ""));
  const errs = validate(filter);
  let alerts = [];
  const seen = new Set();
  let page = 0;
  let loaded = false;
  const inputs = {
    tenant: h("input", { name: "tenant", placeholder: "tenant", value: query.tenant || "" }),
    device: h("input", { name: "device", placeholder: "device", value: query.device || "" }),
    monitor: h("input", { name: "monitor", placeholder: "monitor", value: query.monitor || "" }),
    severity: h("select", { name: "severity" },
      h("option", { value: "" }, "any severity"),
      SEVERITIES.map((s) => h("option", { value: s, selected: query.severity === s }, `≥ ${s}`))),
  };
  const form = h("form.filters#alert-filters", {
    onsubmit: (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      for (const [k, el] of Object.entries(inputs)) if (el.value.trim()) q.set(k, el.value.trim());
      location.hash = `#/alerts${q.toString() ? `?${q}` : ""}`;
    },
  }, Object.values(inputs), h("button", { type: "submit" }, "Filter"),
  h("a.button", { href: "#/alerts" }, "Clear"));
  const status = h("div#alerts-status");
  const list = h("div#alerts-list");
  mount(root, h("h1", "Alerts"), form, status, list);

  if (errs.length) {
    mount(status, h("div.notice.bad#filter-error", { role: "alert" },
      h("strong", "This filter is not valid: "), errs.join("; "), ". ", h("a", { href: "#/alerts" }, "Show all alerts"), "."));
    return {};
  }

  const matches = (a) => (!filter.tenant || a.tenant === filter.tenant)
    && (!filter.device || a.device === filter.device)
    && (!filter.monitor || a.monitor === filter.monitor)
    && (!filter.severity || SEVERITIES.indexOf(a.severity) >= SEVERITIES.indexOf(filter.severity));

  function add(batch) {
    let added = 0;
    for (const a of batch) {
      const k = key(a);
      if (seen.has(k) || !matches(a)) continue;
      seen.add(k);
      alerts.push(a);
      added++;
    }
    if (added) {
      alerts.sort((a, b) => b["ts-ms"] - a["ts-ms"]);
      alerts = alerts.slice(0, KEEP);
    }
  }

  function draw() {
    mount(status, h("p.muted", loaded ? `${alerts.length} alerts${Object.keys(filter).length ? " matching the filter" : ""} · live` : "loading…"));
    mount(list, pagedTable({
      rows: alerts.map((a) => ({ ...a, key: key(a) })),
      page,
      onPage: (p) => { page = p; draw(); },
      rowClass: (a) => `alert-row sev-${a.severity}`,
      empty: "no alerts in the last hour",
      columns: [
        { title: "Time", cell: (a) => time(a["ts-ms"]) },
        { title: "Severity", cell: (a) => badge(sevClass(a.severity), a.severity) },
        { title: "Device", cell: (a) => h("a.alert-device", { href: `#/device/${encodeURIComponent(a.tenant)}/${encodeURIComponent(a.device)}` }, `${a.tenant}/${a.device}`) },
        { title: "Monitor", cell: (a) => `${a.monitor} on ${a.edge}` },
        { title: "Code", cell: (a) => h("code", a.code) },
        { title: "Message", cell: (a) => a.message },
        { title: "Region", cell: (a) => a.region },
      ],
    }));
  }

  const q = new URLSearchParams(filter);
  q.set("limit", "1000");
  api(`/api/v1/alerts?${q}`).then((doc) => {
    add(doc.alerts);
    if (doc.errors?.length) mount(status, h("div.notice.warn", doc.errors.map((e) => `${e.region}: ${e.message}`).join("; ")));
    loaded = true;
    draw();
  }, (e) => {
    mount(status, h("div.notice.bad#filter-error", { role: "alert" }, `Could not read alerts: ${e.message}`));
  });
  draw();
  return {
    update() {
      if (!store.snapshot) return;
      add(store.snapshot.alerts);
      if (loaded) draw();
    },
  };
}
