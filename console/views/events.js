// Events: every region's event log (edges going down and coming back,
// placements, replacements, failures) as it happens, newest first, from
// the live stream. Filter by kind or any text.

import { badge, h, mount, pagedTable, time } from "../util.js";

const kindClass = (k) => {
  if (/down|failed|lost|expired/.test(k)) return "bad";
  if (/suspect|replaced|migrated|stopped|deleted|reclassified/.test(k)) return "warn";
  return "ok";
};

export function render({ root, store, query }) {
  let page = 0;
  const text = h("input#event-search", {
    type: "search", placeholder: "filter: kind, edge, monitor, text", value: query.q || "",
    "aria-label": "filter events", oninput: () => { page = 0; draw(); },
  });
  const list = h("div#events-list");
  mount(root, h("h1", "Events"), h("div.searchbar", text), list);

  function draw() {
    const term = text.value.trim().toLowerCase();
    const rows = store.events
      .filter((e) => !term || [e.kind, e.subject, e.message, e.region].some((f) => String(f).toLowerCase().includes(term)))
      .map((e) => ({ ...e, key: `${e.region}:${e.seq}` }));
    mount(list, pagedTable({
      rows,
      page,
      onPage: (p) => { page = p; draw(); },
      rowClass: (e) => `event-row kind-${e.kind}`,
      empty: store.snapshot ? (term ? `no event matches “${text.value}”` : "no events yet") : "connecting…",
      columns: [
        { title: "Time", cell: (e) => time(e["at-ms"]) },
        { title: "Kind", cell: (e) => badge(kindClass(e.kind), e.kind) },
        { title: "Subject", cell: (e) => h("strong", e.subject) },
        { title: "Message", cell: (e) => e.message },
        { title: "Region", cell: (e) => `${e.region} #${e.seq}` },
      ],
    }));
  }
  draw();
  return { update: draw };
}
