// Topology: global → regions (health, Raft roles, leader, certificates) →
// edges (liveness, backlog, sync lag, ingest, machine use, certificate
// expiry, instances) → devices. Counts are aggregated at the top; edges are
// searched and paged here (50 rows a page) and devices by central
// (`GET /api/v1/devices?search=&limit=&offset=`), so 1,000 edges and
// 100,000 devices stay readable and the stream never carries the device
// list.

import { api } from "../api.js";
import { badge, bytes, duration, edgeHealth, h, mount, pagedTable, pct, rate, regionHealth } from "../util.js";

/** A device whose newest reading is older than this shows as quiet. */
const QUIET_MS = 120_000;
/** Rows per page (edges and devices). */
const PAGE = 50;
/** A certificate expiring sooner than this is flagged. */
const CERT_WARN_MS = 30 * 86_400_000;

/** Certificate expiry as a date and the time left, flagged when close. */
function certCell(expiresMs, now) {
  if (expiresMs === null || expiresMs === undefined) return h("span.muted", { title: "not reported" }, "n/a");
  const left = expiresMs - now;
  const day = new Date(expiresMs).toISOString().slice(0, 10);
  if (left <= 0) return badge("bad", `expired ${day}`);
  if (left < CERT_WARN_MS) return badge("warn", `${day} (${duration(left)})`);
  return h("span", { title: new Date(expiresMs).toISOString() }, day);
}

export function render({ root, store, query }) {
  let edgePage = 0;
  let devicePage = 0;
  // The device page central answered: { key, total, devices, error }.
  let devicePageDoc = null;
  let deviceKey = null;
  let countsAt = null;
  let debounce = null;
  let inFlight = null;
  const search = h("input#search", {
    type: "search", placeholder: "search region, edge, tenant or device", "aria-label": "search",
    value: query.q || "",
    oninput: () => {
      edgePage = 0;
      devicePage = 0;
      draw();
      clearTimeout(debounce);
      debounce = setTimeout(fetchDevices, 250);
    },
  });

  /** Asks central for the device page the search and page select. */
  async function fetchDevices() {
    const term = search.value.trim();
    const params = new URLSearchParams({ limit: String(PAGE), offset: String(devicePage * PAGE) });
    if (term) params.set("search", term);
    const key = params.toString();
    deviceKey = key;
    inFlight?.abort();
    const ctl = new AbortController();
    inFlight = ctl;
    try {
      const doc = await api(`/api/v1/devices?${key}`, { signal: ctl.signal });
      if (deviceKey !== key) return;
      devicePageDoc = { key, total: doc.total, devices: doc.devices, error: null };
    } catch (e) {
      if (e.name === "AbortError" || deviceKey !== key) return;
      devicePageDoc = { key, total: 0, devices: [], error: e.message };
    }
    draw();
  }
  const summary = h("section.summary");
  const regions = h("section.regions");
  const edges = h("section.edges");
  const devices = h("section.devices");
  mount(root,
    h("h1", "Topology"),
    summary,
    h("h2", "Regions"), regions,
    h("div.searchbar", search),
    h("h2", "Edges"), edges,
    h("h2", "Devices"), devices);

  function draw() {
    const snap = store.snapshot;
    if (!snap) {
      mount(summary, h("p.muted#waiting", "Waiting for central's first snapshot…"));
      return;
    }
    const term = search.value.trim().toLowerCase();
    const counts = snap.devices;
    // New counts mean devices came or went: refresh the page shown.
    if (counts && counts["at-ms"] !== countsAt) {
      countsAt = counts["at-ms"];
      fetchDevices();
    }
    const match = (...fields) => !term || fields.some((f) => String(f).toLowerCase().includes(term));
    const now = snap["now-ms"];
    const edgeList = snap.edges;
    const up = edgeList.filter((e) => e.state === "up").length;
    const down = edgeList.filter((e) => e.state === "down").length;
    const healthyRegions = snap.regions.filter((r) => r.status === "healthy").length;
    const ingest = edgeList.reduce((s, e) => s + (e["ingest-rate"] || 0), 0);
    const backlog = edgeList.reduce((s, e) => s + (e["spool-records"] || 0), 0);
    mount(summary,
      card("Regions", `${healthyRegions}/${snap.regions.length}`, "healthy"),
      card("Edges", `${up}/${edgeList.length}`, down ? `up · ${down} down` : "up", down ? "bad" : null),
      card("Devices", counts ? counts.total.toLocaleString() : "…", "with data"),
      card("Ingest", rate(ingest), "records"),
      card("Backlog", backlog.toLocaleString(), "records in edge spools"),
      card("Alerts", snap.alerts.length.toLocaleString(), "newest, last hour"));

    mount(regions, snap.regions.map((r) => {
      const edgesHere = edgeList.filter((e) => e.region === r.name);
      const devs = counts?.regions?.[r.name] ?? 0;
      return h(`div.region.${regionHealth(r.status)}`, { dataset: { region: r.name } },
        h("div.region-head",
          h("strong", r.name), badge(regionHealth(r.status), r.status),
          h("span.muted", `leader ${r.leader ?? "none"} · ${edgesHere.length} edges · ${devs} devices`)),
        h("ul.replicas", r.replicas.map((p) =>
          h("li", { class: p.reachable ? (p.role === "leader" ? "leader" : "") : "bad" },
            h("span.mono", p.id !== null && p.id !== undefined ? `#${p.id}` : "?"), " ",
            p.reachable ? `${p.role}${p.role === "leader" ? " ★" : ""} · term ${p.term} · applied ${p["applied-index"]} · cert `
              : `unreachable`,
            p.reachable ? certCell(p["cert-expires-ms"], now) : null,
            h("span.muted.addr", ` ${p.addr}`)))),
        r.problems.length ? h("ul.problems", r.problems.map((x) => h("li", x))) : null);
    }));

    const edgeRows = edgeList
      .filter((e) => match(e.region, e.name, e.state))
      .map((e) => ({ ...e, key: `${e.region}/${e.name}` }));
    mount(edges, pagedTable({
      rows: edgeRows,
      page: edgePage,
      onPage: (p) => { edgePage = p; draw(); },
      rowClass: (e) => `edge-row health-${edgeHealth(e)}`,
      empty: term ? `no edge matches “${search.value}”` : "no edges have reported yet",
      columns: [
        { title: "Edge", cell: (e) => h("span", badge(edgeHealth(e), e.state || "unknown"), " ", h("strong.edge-name", e.name)) },
        { title: "Region", cell: (e) => e.region },
        { title: "Last seen", cell: (e) => `${duration(e["age-ms"])} ago` },
        { title: "Backlog", cell: (e) => `${e["spool-records"].toLocaleString()} (${bytes(e["spool-bytes"])})` },
        { title: "Sync lag", cell: (e) => h(e["sync-lag-ms"] > 60_000 ? "span.warn-text" : "span", duration(e["sync-lag-ms"])) },
        { title: "Devices", cell: (e) => (counts?.edges?.[`${e.region}/${e.name}`] ?? 0).toLocaleString() },
        { title: "Ingest", cell: (e) => rate(e["ingest-rate"]) },
        { title: "Clients", cell: (e) => e["connected-clients"] },
        { title: "CPU", cell: (e) => pct(e.node["cpu-used-millicores"], e.node["cpu-total-millicores"]) },
        { title: "Mem", cell: (e) => pct(e.node["memory-used-bytes"], e.node["memory-total-bytes"]) },
        { title: "Disk", cell: (e) => pct(e.node["disk-used-bytes"], e.node["disk-total-bytes"]) },
        { title: "Monitors", cell: (e) => e.instances.length ? e.instances.map((i) => `${i.name} (${i.state})`).join(", ") : "—" },
        { title: "Cert expiry", cell: (e) => certCell(e["cert-expires-ms"], now) },
      ],
    }));

    const page = devicePageDoc;
    const devRows = (page?.devices || []).map((d) => ({ ...d, key: `${d.tenant}/${d.device}` }));
    const quiet = (d) => now - d["last-ts-ms"] > QUIET_MS;
    mount(devices, page?.error ? h("p.notice.bad", `Devices could not be read: ${page.error}`) : null, pagedTable({
      rows: devRows,
      total: page ? page.total : 0,
      page: devicePage,
      onPage: (p) => { devicePage = p; fetchDevices(); },
      rowClass: (d) => `device-row health-${quiet(d) ? "warn" : "ok"}`,
      empty: !page ? "loading devices…" : term ? `no device matches “${search.value}”` : "no device has sent data yet",
      columns: [
        { title: "Device", cell: (d) => h("span", badge(quiet(d) ? "warn" : "ok", quiet(d) ? "quiet" : "sending"), " ",
          h("a.device-name", { href: `#/device/${encodeURIComponent(d.tenant)}/${encodeURIComponent(d.device)}` }, d.device)) },
        { title: "Tenant", cell: (d) => d.tenant },
        { title: "Region", cell: (d) => d.region },
        { title: "Edge", cell: (d) => d.edge ?? "—" },
        { title: "Records", cell: (d) => d.records.toLocaleString() },
        { title: "Latest reading", cell: (d) => `${duration(Math.max(0, now - d["last-ts-ms"]))} ago` },
      ],
    }));
  }

  draw();
  return { update: draw };
}

function card(title, value, sub, cls) {
  return h(`div.card${cls ? `.${cls}` : ""}`, h("div.card-title", title), h("div.card-value", value), h("div.muted", sub));
}
