// Small DOM and formatting helpers. Every text from the API goes through
// text nodes (never innerHTML), so a device or monitor name cannot inject
// markup.

/** h("div.card#x", {onclick}, child, "text", [more]) → an element. */
export function h(tag, attrs, ...children) {
  // "tag#id.class.class", in any order after the tag name.
  const node = document.createElement(/^[a-z0-9]*/i.exec(tag)[0] || "div");
  const id = /#([\w-]+)/.exec(tag);
  if (id) node.id = id[1];
  const classes = [...tag.matchAll(/\.([\w-]+)/g)].map((m) => m[1]);
  if (classes.length) node.className = classes.join(" ");
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className += (node.className ? " " : "") + v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces the children of `node`. */
export function mount(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n < 10 && i ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

export function pct(used, total) {
  if (!total) return "—";
  return `${Math.round((100 * used) / total)}%`;
}

export function rate(r) {
  if (r === null || r === undefined) return "—";
  return r >= 100 ? `${Math.round(r)}/s` : `${r.toFixed(1)}/s`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 ? ` ${s % 60}s` : ""}`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function time(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function dateTime(ms) {
  if (!ms) return "—";
  return new Date(ms).toLocaleString([], { hour12: false });
}

/** Health class of an edge: ok, warn, bad, unknown. */
export function edgeHealth(e) {
  switch (e.state) {
    case "up": return "ok";
    case "suspect": return "warn";
    case "down": return "bad";
    default: return "unknown";
  }
}

/** Health class of a region (`healthy`, `degraded`, `unavailable`). */
export function regionHealth(status) {
  return { healthy: "ok", degraded: "warn", unavailable: "bad" }[status] || "unknown";
}

/** A coloured dot with a text label (colour is never the only signal). */
export function badge(cls, label) {
  return h(`span.badge.${cls}`, h("span.dot"), label);
}

/** A paginated table: `rows` are already filtered; `page` is 0-based. */
/**
 * A table of `rows`, 50 a page. With `total`, `rows` is already the page
 * (the server searched and paged) and `total` the number of matches.
 */
export function pagedTable({ columns, rows, page, pageSize = 50, onPage, rowClass, empty, total }) {
  const count = total ?? rows.length;
  const pages = Math.max(1, Math.ceil(count / pageSize));
  const p = Math.min(Math.max(0, page), pages - 1);
  const shown = total === undefined ? rows.slice(p * pageSize, (p + 1) * pageSize) : rows;
  const table = h("table",
    h("thead", h("tr", columns.map((c) => h("th", { class: c.cls }, c.title)))),
    h("tbody", shown.length
      ? shown.map((r) => h("tr", { class: rowClass ? rowClass(r) : null, dataset: r.key ? { key: r.key } : null },
        columns.map((c) => h("td", { class: c.cls, "data-label": c.title }, c.cell(r)))))
      : h("tr", h("td.empty", { colSpan: columns.length }, empty || "nothing to show"))));
  const nav = pages > 1
    ? h("div.pager",
      h("button", { type: "button", disabled: p === 0, onclick: () => onPage(p - 1) }, "‹ prev"),
      h("span", `page ${p + 1} of ${pages} · ${count.toLocaleString()} rows`),
      h("button", { type: "button", disabled: p >= pages - 1, onclick: () => onPage(p + 1) }, "next ›"))
    : h("div.pager", h("span", `${count.toLocaleString()} rows`));
  return h("div.table-wrap", table, nav);
}

/** Parses `a=b&c=d` of a hash route into an object. */
export function parseQuery(q) {
  const out = {};
  for (const [k, v] of new URLSearchParams(q || "")) out[k] = v;
  return out;
}

export function link(href, ...children) {
  return h("a", { href }, ...children);
}
