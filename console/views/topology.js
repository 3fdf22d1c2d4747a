// Topology: global → regions (health, Raft roles, leader) → edges
// (liveness, backlog, ingest, machine use, instances) → devices. Counts are
// aggregated at the top; the edge and device lists are searched and paged
// (50 rows a page), so 1,000 edges and 100,000 devices stay readable.

import { badge, bytes, duration, edgeHealth, h, mount, pagedTable, pct, rate, regionHealth } from "../util.js";

/** A device whose newest reading is older than this shows as quiet. */
const QUIET_MS = 120_000;

export function render({ root, store, query }) {
  let edgePage = 0;
  let devicePage = 0;
  const search = h("input#search", {
    type: "search", placeholder: "search region, edge, tenant or device", "aria-label": "search",
    value: query.q || "",
    oninput: () => { edgePage = 0; devicePage = 0; draw(); },
  });
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
      card("Devices", store.devices.length.toLocaleString(), "with data"),
      card("Ingest", rate(ingest), "records"),
      card("Backlog", backlog.toLocaleString(), "records in edge spools"),
      card("Alerts", snap.alerts.length.toLocaleString(), "newest, last hour"));

    mount(regions, snap.regions.map((r) => {
      const edgesHere = edgeList.filter((e) => e.region === r.name);
      const devs = store.devices.filter((d) => d.region === r.name).length;
      return h(`div.region.${regionHealth(r.status)}`, { dataset: { region: r.name } },
        h("div.region-head",
          h("strong", r.name), badge(regionHealth(r.status), r.status),
          h("span.muted", `leader ${r.leader ?? "none"} · ${edgesHere.length} edges · ${devs} devices`)),
        h("ul.replicas", r.replicas.map((p) =>
          h("li", { class: p.reachable ? (p.role === "leader" ? "leader" : "") : "bad" },
            h("span.mono", p.id !== null && p.id !== undefined ? `#${p.id}` : "?"), " ",
            p.reachable ? `${p.role}${p.role === "leader" ? " ★" : ""} · term ${p.term} · applied ${p["applied-index"]}`
              : `unreachable`,
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
        { title: "Ingest", cell: (e) => rate(e["ingest-rate"]) },
        { title: "Clients", cell: (e) => e["connected-clients"] },
        { title: "CPU", cell: (e) => pct(e.node["cpu-used-millicores"], e.node["cpu-total-millicores"]) },
        { title: "Mem", cell: (e) => pct(e.node["memory-used-bytes"], e.node["memory-total-bytes"]) },
        { title: "Disk", cell: (e) => pct(e.node["disk-used-bytes"], e.node["disk-total-bytes"]) },
        { title: "Monitors", cell: (e) => e.instances.length ? e.instances.map((i) => `${i.name} (${i.state})`).join(", ") : "—" },
        { title: "Cert expiry", cell: () => h("span.muted", { title: "not reported by edges yet" }, "n/a") },
      ],
    }));

    const devRows = store.devices
      .filter((d) => match(d.region, d.tenant, d.device))
      .map((d) => ({ ...d, key: `${d.tenant}/${d.device}` }));
    const quiet = (d) => now - d["last-ts-ms"] > QUIET_MS;
    mount(devices, pagedTable({
      rows: devRows,
      page: devicePage,
      onPage: (p) => { devicePage = p; draw(); },
      rowClass: (d) => `device-row health-${quiet(d) ? "warn" : "ok"}`,
      empty: term ? `no device matches “${search.value}”` : "no device has sent data yet",
      columns: [
        { title: "Device", cell: (d) => h("span", badge(quiet(d) ? "warn" : "ok", quiet(d) ? "quiet" : "sending"), " ",
          h("a.device-name", { href: `#/device/${encodeURIComponent(d.tenant)}/${encodeURIComponent(d.device)}` }, d.device)) },
        { title: "Tenant", cell: (d) => d.tenant },
        { title: "Region", cell: (d) => d.region },
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
