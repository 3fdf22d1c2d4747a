// Workloads: global workloads (central's split over regions, scaling) and
// every region's monitors with their allocations (where each instance
// runs, why it was placed there, its state, its measured use) and recent
// evaluations; one monitor in detail with its spec
// (#/workloads/<region>/<tenant>/<name>); one global workload in detail
// with its split, plans, scale decisions and the measured load the
// autoscaler forecasts from, charted against the capacity it scaled to
// (#/workload/<tenant>/<name>); and the form that submits a monitor
// (#/submit).

import uPlot from "../vendor/uPlot.esm.js";
import { api, ApiError } from "../api.js";
import { badge, dateTime, duration, h, mount } from "../util.js";

const fmt = (v) => (v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
const stateClass = (s) => ({ running: "ok", pending: "warn", failed: "bad", lost: "bad", complete: "unknown" }[s] || "unknown");

export function render(ctx) {
  if (ctx.mode === "submit") return submitForm(ctx);
  if (ctx.mode === "global") return globalDetail(ctx);
  if (ctx.params.length) return detail(ctx);
  return overview(ctx);
}

function overview({ root, store }) {
  const global = h("section#global-workloads");
  const monitors = h("section#monitors");
  mount(root, h("h1", "Workloads"),
    h("p", h("a.button", { href: "#/submit" }, "Submit a monitor")),
    h("h2", "Global workloads"), global, h("h2", "Region monitors"), monitors);

  function draw() {
    const snap = store.snapshot;
    if (!snap) { mount(monitors, h("p.muted", "Waiting for central's first snapshot…")); return; }
    const wl = snap.workloads;
    mount(global, !wl ? h("p.muted", "Central's replicated state is not running on this server.")
      : !wl.workloads.length ? h("p.muted", "No global workloads.")
        : wl.workloads.map((w) => h("div.card.workload", { dataset: { workload: `${w.tenant}/${w.name}` } },
          h("div.region-head",
            h("a", { href: `#/workload/${encodeURIComponent(w.tenant)}/${encodeURIComponent(w.name)}` }, h("strong", `${w.tenant}/${w.name}`)),
            h("span.muted", `generation ${w.generation}`),
            w.deleting ? badge("warn", "deleting") : null),
          h("p", `placed ${w.placed}`, w.scaled !== null && w.scaled !== undefined ? ` · scaled to ${w.scaled}` : "",
            w["held-by-unreachable"] ? ` · ${w["held-by-unreachable"]} held by unreachable regions` : ""),
          h("p", "intent: ", h("code", fmt(w.global))),
          h("ul", w.split.map((s) => h("li", `${s.region}: ${s.instances} (${fmt(s.health)})`,
            s.reasons.length ? h("span.muted", ` — ${s.reasons.map(fmt).join("; ")}`) : null))),
          w.short ? h("p.error", `short: ${w.short.unplaced} of ${w.short.wanted} unplaced — ${fmt(w.short.regions)}`) : null,
          w.scale ? h("p", "scale: ", h("code", fmt(w.scale))) : null)));

    mount(monitors, !snap.monitors.length ? h("p.muted", "No monitors. ", h("a", { href: "#/submit" }, "Submit one"), ".")
      : snap.monitors.map((m) => monitorCard(m)));
  }
  draw();
  return { update: draw };
}

function monitorCard(m, full) {
  const st = m.status?.state || "unreported";
  return h("div.card.monitor", { dataset: { monitor: `${m.region}/${m.tenant}/${m.name}` } },
    h("div.region-head",
      full ? h("strong", `${m.tenant}/${m.name}`)
        : h("a", { href: `#/workloads/${encodeURIComponent(m.region)}/${encodeURIComponent(m.tenant)}/${encodeURIComponent(m.name)}` }, h("strong", `${m.tenant}/${m.name}`)),
      badge(stateClass(st), st),
      h("span.muted", `region ${m.region} · edge ${m.edge || "—"} · generation ${m.generation} · ${m.placed}/${m.wanted} placed`)),
    m.status ? h("p.muted.measured", `restarts ${m.status.restarts} · records in ${m.status["records-in"]} (${m.status["records-dropped"] ?? 0} dropped) · queue ${m.status["queue-depth"] ?? 0} · alerts ${m.status.alerts} · CPU ${m.status["used-cpu-millicores"] ?? 0}m of ${m.status["cpu-millicores"]}m · memory ${Math.round((m.status["used-memory-bytes"] || 0) / 1048576)} MiB used of ${m.status["memory-mib"]} MiB`,
      m.status.reason ? ` · ${m.status.reason}` : "") : null,
    h("div.table-wrap", h("table.allocations",
      h("thead", h("tr", ["Allocation", "Edge", "Slot", "Desired", "State", "Why here", "Score", "Fencing"].map((t) => h("th", t)))),
      h("tbody", m.allocations.length ? m.allocations.map((a) =>
        h("tr", { class: `alloc-row alloc-${a.client} desired-${a.desired}`, dataset: { edge: a.edge } },
          h("td.mono", fmt(a.id)), h("td.alloc-edge", a.edge), h("td", a.slot), h("td", a.desired),
          h("td", badge(stateClass(a.client), a.client)),
          h("td", `${fmt(a.reason)} (${a["nodes-feasible"]}/${a["nodes-evaluated"]} edges feasible)`),
          h("td", { title: (a["score-parts"] || []).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ") }, a.score.toFixed(2)),
          h("td", a["fencing-token"])))
        : h("tr", h("td.empty", { colSpan: 8 }, "no allocations"))))),
    full && m.evaluations.length ? [h("h3", "Scheduling decisions"), h("ul.evals", m.evaluations.map((e) =>
      h("li", `${dateTime(e["at-ms"])} · ${e.trigger} → ${e.status}: placed ${e.placed}, stopped ${e.stopped}, updated ${e.updated}`,
        e.failure ? h("span.error", ` — ${fmt(e.failure)}`) : null,
        e.refused?.length ? h("span.muted", ` — refused: ${fmt(e.refused)}`) : null)))] : null,
    full ? [h("h3", "Spec"), h("pre.spec", JSON.stringify(m.spec, null, 2))] : null);
}

function detail({ root, params, store }) {
  const [region, tenant, name] = params;
  const body = h("div#monitor-detail", h("p.muted", "loading…"));
  mount(root, h("h1", h("a", { href: "#/workloads" }, "Workloads"), ` › ${tenant}/${name}`), body);
  if (!region || !tenant || !name) {
    mount(body, h("div.notice.bad", { role: "alert" }, "A monitor page needs #/workloads/<region>/<tenant>/<name>."));
    return {};
  }
  let last = 0;
  async function read() {
    last = Date.now();
    try {
      const m = await api(`/api/v1/regions/${encodeURIComponent(region)}/monitors/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}`);
      mount(body, monitorCard(m, true));
    } catch (e) {
      mount(body, h("div.notice.bad", { role: "alert" }, e.message));
    }
  }
  read();
  return {
    update() {
      // The snapshot says when it changed; read the detail again then.
      const m = store.snapshot?.monitors.find((x) => x.region === region && x.tenant === tenant && x.name === name);
      if (m && m["updated-ms"] > last - 5000 && Date.now() - last > 3000) read();
      else if (m && Date.now() - last > 15_000) read();
    },
  };
}

/** A global workload in detail: split, scale decisions, load vs capacity. */
function globalDetail({ root, params, store }) {
  const [tenant, name] = params;
  const body = h("div#global-detail", h("p.muted", "loading…"));
  mount(root, h("h1", h("a", { href: "#/workloads" }, "Workloads"), ` › global ${tenant}/${name}`), body);
  if (!tenant || !name) {
    mount(body, h("div.notice.bad", { role: "alert" }, "A global workload page needs #/workload/<tenant>/<name>."));
    return {};
  }
  let chart = null;
  let last = 0;
  let seen = null;
  async function read() {
    last = Date.now();
    try {
      const w = await api(`/api/v1/workloads/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}`);
      draw(w);
    } catch (e) {
      mount(body, h("div.notice.bad", { role: "alert" }, e.message));
    }
  }
  function draw(w) {
    chart?.destroy();
    chart = null;
    const plot = h("div.chart#load-chart");
    const decisions = w["scale-history"] || [];
    mount(body,
      h("p", `generation ${w.generation} · placed ${w.placed}`,
        w.scaled !== null && w.scaled !== undefined ? ` · autoscaled to ${w.scaled}` : "",
        w.deleting ? " · deleting" : ""),
      h("p", "intent: ", h("code", fmt(w.global))),
      h("h2", "Split over regions"),
      h("div.table-wrap", h("table",
        h("thead", h("tr", ["Region", "Instances", "Health", "Why"].map((t) => h("th", t)))),
        h("tbody", w.split.length ? w.split.map((s) => h("tr.share-row",
          h("td", s.region), h("td", s.instances), h("td", badge(s.health === "ok" ? "ok" : s.health === "degraded" ? "warn" : "bad", fmt(s.health))),
          h("td", s.reasons.map(fmt).join("; "))))
          : h("tr", h("td.empty", { colSpan: 4 }, "placed nowhere yet"))))),
      w.short ? h("p.error", `short: ${w.short.unplaced} of ${w.short.wanted} unplaced — ${fmt(w.short.regions)}`) : null,
      w.scale ? [
        h("h2", "Autoscaling"),
        h("p", `${w.scale.min}..${w.scale.max} instances by ${w.scale.metric}, target ${w.scale.target} per instance`),
        w.load ? h("p.muted#load-info", `measured ${w.load.metric}, one point per ${duration(w.load["step-ms"])}, ${w.load.values.length} points; capacity = instances × target`)
          : h("p.muted#load-info", "no load measured yet (one point per forecast step)"),
        w.load?.values.length ? plot : null,
        h("h3", "Scale decisions (newest first)"),
        h("div.table-wrap", h("table#scale-decisions",
          h("thead", h("tr", ["At", "Count", "Reason", "Load", "Per instance", "Target", "Forecast", "Recommended"].map((t) => h("th", t)))),
          h("tbody", decisions.length ? decisions.map((d) => h("tr.scale-row",
            h("td", dateTime(d["at-ms"])), h("td", `${d.current} → ${d.desired}`), h("td", d.reason),
            h("td", num(d.total)), h("td", num(d["per-instance"])), h("td", num(d.target)),
            h("td", d.forecast === null || d.forecast === undefined ? "—" : `${num(d.forecast)} in ${duration(d["forecast-horizon-ms"])}`),
            h("td", d["forecast-recommended"] ?? d.recommended)))
            : h("tr", h("td.empty", { colSpan: 8 }, "no scale decisions yet"))))),
      ] : h("p.muted", "Not autoscaled (no scale block)."),
      (w.plans || []).length ? [h("h2", "Plans (newest first)"), h("ul.plans", w.plans.slice(0, 10).map((p) =>
        h("li", `${dateTime(p["at-ms"])} · index ${p.index} · generation ${p.generation}: `,
          Object.entries(p.shares).map(([r, s]) => `${r} ${s.previous}→${s.instances}`).join(", "),
          Object.keys(p.rejected || {}).length ? h("span.muted", " (trimmed by the applier)") : null)))] : null,
      w.monitor ? [h("h2", "Spec"), h("pre.spec", JSON.stringify(w.monitor, null, 2))] : null);
    if (w.scale && w.load && w.load.values.length) drawLoad(plot, w);
  }
  function drawLoad(plot, w) {
    const step = w.load["step-ms"];
    const xs = w.load.values.map((_, i) => (w.load["first-ms"] + i * step) / 1000);
    // The count in force at each point: the last decision before it.
    const ds = [...(w["scale-history"] || [])].sort((a, b) => a["at-ms"] - b["at-ms"]);
    let j = 0;
    let count = ds.length ? ds[0].current : w.scaled ?? w.scale.min;
    const capacity = xs.map((x) => {
      while (j < ds.length && ds[j]["at-ms"] <= x * 1000) count = ds[j++].desired;
      return count * w.scale.target;
    });
    const width = Math.max(280, plot.clientWidth || root.clientWidth || 600);
    chart = new uPlot({
      width,
      height: Math.min(320, Math.max(200, Math.round(width * 0.4))),
      scales: { x: { time: true } },
      series: [{}, { label: `load (${w.load.metric})`, stroke: "#2a7de1", width: 1.5 },
        { label: "capacity", stroke: "#e0593a", width: 1.5, dash: [6, 4] }],
    }, [xs, w.load.values, capacity], plot);
  }
  read();
  return {
    update() {
      const w = store.snapshot?.workloads?.workloads?.find((x) => x.tenant === tenant && x.name === name);
      const changed = w && w["updated-ms"] !== seen;
      if (w) seen = w["updated-ms"];
      if ((changed && Date.now() - last > 2000) || Date.now() - last > 15_000) read();
    },
    destroy() { chart?.destroy(); },
  };
}

const num = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(1));

function submitForm({ root, store }) {
  const regions = (store.snapshot?.regions || []).map((r) => r.name);
  const f = {
    region: regions.length ? h("select#f-region", { name: "region" }, regions.map((r) => h("option", { value: r }, r)))
      : h("input#f-region", { name: "region", required: true, placeholder: "region" }),
    tenant: h("input#f-tenant", { name: "tenant", required: true, value: "acme" }),
    name: h("input#f-name", { name: "name", required: true, pattern: "[a-z0-9][a-z0-9\\-]*", placeholder: "my-monitor" }),
    globs: h("input#f-globs", { name: "globs", required: true, placeholder: "sensor-*, pump-1" }),
    module: h("input#f-module", { name: "module", type: "file", accept: ".wasm,application/wasm" }),
    sha256: h("input#f-sha256", { name: "sha256", placeholder: "or: sha256 of a module already uploaded", pattern: "[0-9a-f]{64}" }),
    size: h("input#f-size", { name: "size", type: "number", min: "1", placeholder: "its size, bytes" }),
    params: h("textarea#f-params", { name: "params", rows: 3 }, "{}"),
    memory: h("input#f-memory", { name: "memory", type: "number", min: "1", value: "16" }),
    cpu: h("input#f-cpu", { name: "cpu", type: "number", min: "1", value: "100" }),
    count: h("input#f-count", { name: "count", type: "number", min: "1", value: "1" }),
    replace: h("input#f-replace", { name: "replace", placeholder: "e.g. 5s (empty: never move)" }),
  };
  const out = h("div#submit-result", { role: "status" });
  const button = h("button#f-submit", { type: "submit" }, "Submit");
  const row = (label, el, hint) => h("label.field", h("span", label), el, hint ? h("small.muted", hint) : null);
  const form = h("form.submit#submit-form", { onsubmit: submit },
    row("Region", f.region), row("Tenant", f.tenant), row("Name", f.name),
    row("Devices", f.globs, "device globs, comma separated"),
    row("Module (.wasm)", f.module, "uploaded to the region first"), row("…or artifact", f.sha256), row("Size", f.size),
    row("Params (JSON)", f.params), row("Memory, MiB", f.memory), row("CPU, millicores", f.cpu),
    row("Instances", f.count), row("Replace after", f.replace, "move the instance when its edge is gone this long"),
    button);
  mount(root, h("h1", "Submit a monitor"), form, out);

  async function submit(ev) {
    ev.preventDefault();
    button.disabled = true;
    mount(out, h("p.muted", "submitting…"));
    try {
      const region = f.region.value.trim();
      let params;
      try { params = JSON.parse(f.params.value || "{}"); } catch (e) { throw new ApiError(400, "bad-params", `Params are not JSON: ${e.message}`); }
      let artifact;
      const file = f.module.files?.[0];
      if (file) {
        const stored = await api(`/api/v1/regions/${encodeURIComponent(region)}/artifacts`,
          { method: "POST", body: await file.arrayBuffer(), type: "application/wasm" });
        artifact = { sha256: stored.sha256, "size-bytes": stored["size-bytes"] };
      } else if (f.sha256.value && f.size.value) {
        artifact = { sha256: f.sha256.value.trim(), "size-bytes": Number(f.size.value) };
      } else {
        throw new ApiError(400, "no-module", "Choose a .wasm module, or give the sha256 and size of one already uploaded.");
      }
      const tenant = f.tenant.value.trim();
      const spec = {
        name: f.name.value.trim(),
        tenant,
        runtime: "wasm",
        artifact,
        selector: { tenant, "device-globs": f.globs.value.split(",").map((s) => s.trim()).filter(Boolean) },
        params,
        resources: { "memory-mib": Number(f.memory.value), "cpu-millicores": Number(f.cpu.value) },
      };
      const count = Number(f.count.value || 1);
      if (count !== 1 || f.replace.value.trim()) {
        spec.placement = { count };
        if (f.replace.value.trim()) spec.placement["replace-after"] = f.replace.value.trim();
      }
      const m = await api(`/api/v1/regions/${encodeURIComponent(region)}/monitors`, { method: "POST", body: spec });
      mount(out, h("div.notice.ok#submit-ok", `Submitted ${m.tenant}/${m.name} (generation ${m.generation}) to region ${m.region}. `,
        h("a", { href: `#/workloads/${encodeURIComponent(m.region)}/${encodeURIComponent(m.tenant)}/${encodeURIComponent(m.name)}` }, "Follow it"), "."));
    } catch (e) {
      mount(out, h("div.notice.bad#submit-error", { role: "alert" }, h("strong", "Not submitted: "), e.message,
        e.fields?.length ? h("ul", e.fields.map((x) => h("li", h("code", x.field), ": ", x.message))) : null));
    } finally {
      button.disabled = false;
    }
  }
  return {};
}
