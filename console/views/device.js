// Device: its telemetry as a uPlot chart over a zoomable time range. Short
// ranges read raw records; longer ones ask the API for buckets (`step`), so
// a chart never draws more than about POINTS points per metric. Dragging
// across the chart zooms in; the range buttons zoom out. While the range
// ends at "now" the chart follows the live stream's ticks.

import uPlot from "../vendor/uPlot.esm.js";
import { api } from "../api.js";
import { dateTime, duration, h, mount } from "../util.js";

/** Points per metric a chart aims for. */
const POINTS = 600;
/** Ranges up to this are read raw (if under the limit). */
const RAW_MAX_MS = 15 * 60_000;
/** Re-read a following chart at most this often. */
const FOLLOW_EVERY_MS = 5_000;
const RANGES = [["15m", 15 * 60_000], ["1h", 3_600_000], ["6h", 6 * 3_600_000], ["24h", 86_400_000], ["7d", 7 * 86_400_000]];

export function render({ root, params, store }) {
  const [tenant, device] = params;
  if (!tenant || !device) {
    mount(root, h("div.notice.bad", { role: "alert" }, "A device page needs a tenant and a device: #/device/<tenant>/<device>."));
    return {};
  }
  let span = 3_600_000;
  let to = null; // null: follow now
  let from = null;
  let chart = null;
  let lastRead = 0;
  let inflight = null;
  const info = h("p.muted#chart-info", "loading…");
  const error = h("div#chart-error");
  const plot = h("div.chart#chart");
  const buttons = h("div.ranges", RANGES.map(([label, ms]) =>
    h("button", { type: "button", onclick: () => { span = ms; to = null; from = null; read(); } }, label)),
  h("button", { type: "button", onclick: () => { to = null; from = null; read(); } }, "follow live"));
  mount(root,
    h("h1", h("a", { href: "#/topology" }, "Topology"), " › ", `${tenant} / ${device}`),
    buttons, info, error, plot,
    h("p.muted", "Drag across the chart to zoom in."));

  async function read() {
    inflight?.abort();
    const ctl = new AbortController();
    inflight = ctl;
    const now = Date.now();
    const t1 = to ?? now;
    const t0 = from ?? t1 - span;
    const width = t1 - t0;
    let step = width > RAW_MAX_MS ? Math.max(1000, Math.ceil(width / POINTS)) : null;
    lastRead = now;
    try {
      let doc = await fetchRange(t0, t1, step, ctl.signal);
      if (!step && doc.truncated) {
        step = Math.max(1, Math.ceil(width / POINTS));
        doc = await fetchRange(t0, t1, step, ctl.signal);
      }
      mount(error);
      draw(doc, t0, t1);
    } catch (e) {
      if (e.name === "AbortError") return;
      mount(error, h("div.notice.bad", { role: "alert" }, `Telemetry of ${tenant}/${device}: ${e.message}`));
      info.textContent = "";
    }
  }

  function fetchRange(t0, t1, step, signal) {
    const q = new URLSearchParams({ from: String(Math.floor(t0)), to: String(Math.ceil(t1)) });
    if (step) q.set("step", String(step));
    else q.set("limit", "20000");
    return api(`/api/v1/telemetry/${encodeURIComponent(tenant)}/${encodeURIComponent(device)}?${q}`, { signal });
  }

  function draw(doc, t0, t1) {
    const { xs, series } = columns(doc);
    const mode = doc.kind === "raw" ? "raw readings" : `downsampled, ${duration(doc["step-ms"])} buckets (average)`;
    info.textContent = `${dateTime(t0)} → ${to === null ? "now" : dateTime(t1)} · ${mode} · ${doc.count} ${doc.kind === "raw" ? "records" : "buckets"}${doc.truncated ? " (truncated)" : ""} · region ${doc.region}`;
    const names = Object.keys(series);
    const data = [xs, ...names.map((n) => series[n])];
    const width = Math.max(280, plot.clientWidth || root.clientWidth || 600);
    if (chart && chart.series.length === names.length + 1 && names.every((n, i) => chart.series[i + 1].label === n)) {
      chart.setData(data);
      chart.setScale("x", { min: t0 / 1000, max: t1 / 1000 });
      return;
    }
    chart?.destroy();
    if (!names.length) {
      mount(plot, h("p.notice", "No readings in this range."));
      chart = null;
      return;
    }
    mount(plot);
    const palette = ["#2a7de1", "#e0593a", "#2e9d57", "#9b51e0", "#d4a017", "#17a2b8"];
    chart = new uPlot({
      width,
      height: Math.min(360, Math.max(220, Math.round(width * 0.45))),
      scales: { x: { time: true, min: t0 / 1000, max: t1 / 1000 } },
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: palette[i % palette.length], width: 1.5, spanGaps: false }))],
      cursor: { drag: { x: true, y: false, setScale: false } },
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 5) return;
          const a = u.posToVal(u.select.left, "x") * 1000;
          const b = u.posToVal(u.select.left + u.select.width, "x") * 1000;
          u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
          from = a;
          to = b;
          read();
        }],
      },
    }, data, plot);
  }

  const onResize = () => chart?.setSize({ width: Math.max(280, plot.clientWidth), height: chart.height });
  window.addEventListener("resize", onResize);
  read();
  return {
    update() {
      if (to === null && Date.now() - lastRead > FOLLOW_EVERY_MS && store.status !== "offline") read();
    },
    destroy() {
      inflight?.abort();
      chart?.destroy();
      window.removeEventListener("resize", onResize);
    },
  };
}

/** uPlot columns: seconds on x, one array per metric (null = no value). */
function columns(doc) {
  const series = {};
  if (doc.kind === "raw") {
    const xs = doc.records.map((r) => r["ts-ms"] / 1000);
    doc.records.forEach((r, i) => {
      for (const [k, v] of Object.entries(r.metrics)) {
        (series[k] ||= new Array(xs.length).fill(null))[i] = v;
      }
    });
    return { xs, series };
  }
  const starts = [...new Set(doc.buckets.map((b) => b["start-ms"]))].sort((a, b) => a - b);
  const at = new Map(starts.map((s, i) => [s, i]));
  for (const b of doc.buckets) {
    (series[b.metric] ||= new Array(starts.length).fill(null))[at.get(b["start-ms"])] = b.avg;
  }
  return { xs: starts.map((s) => s / 1000), series };
}
