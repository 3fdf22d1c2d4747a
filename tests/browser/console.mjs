// The console in a real browser (Debian's chromium, driven by
// playwright-core), against a real cluster that tests/tests/console.rs
// started:
//
//   node tests/browser/console.mjs <central-url> <token> <out-dir> <module.wasm>
//
// When it needs the cluster to do something (inject a spike, kill an edge)
// it prints `STEP <what> <arg>` and waits for the test to answer `OK …` on
// stdin. Screenshots of every view at 1280×800 and 390×844 go to <out-dir>.
// Exits non-zero with a message on the first failed check.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { join } from "node:path";

const [base, token, outDir, wasm] = process.argv.slice(2);
if (!base || !token || !outDir || !wasm) {
  console.error("usage: console.mjs <central-url> <token> <out-dir> <module.wasm>");
  process.exit(2);
}
const CHROMIUM = process.env.STRATA_CHROMIUM || "/usr/bin/chromium";
// Generous: a loaded 2-core CI machine runs the whole cluster too.
const PATIENCE = 60_000;
const MONITOR = "ui-zs";
mkdirSync(outDir, { recursive: true });

const replies = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
/** Asks the Rust side to act on the cluster; resolves its answer. */
async function step(what, arg = "") {
  console.log(`STEP ${what} ${arg}`.trim());
  const { value, done } = await replies.next();
  if (done || !value.startsWith("OK")) throw new Error(`step ${what} failed: ${value}`);
  return value.slice(2).trim();
}

const log = (...a) => console.error("[console.mjs]", ...a);
const t0 = Date.now();
const since = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  // Root (CI containers) cannot use chromium's sandbox.
  args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
});
const errors = [];
let expectHttpErrors = false;
let expectNetErrors = false;
let failed = false;
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
try {
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    // Deliberate bad input (a wrong token, a bad filter) makes the browser
    // log the refused request itself; nothing else may log an error.
    if (expectHttpErrors && /status of 4\d\d/.test(m.text())) return;
    // While the test cuts the network, the refused reconnects log too.
    if (expectNetErrors && /net::ERR_/.test(m.text())) return;
    errors.push(`console: ${m.text()} (${m.location()?.url || "?"})`);
  });
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));

  async function shots(name) {
    await page.screenshot({ path: join(outDir, `${name}-1280x800.png`) });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(300); // one layout pass at the new width
    await page.screenshot({ path: join(outDir, `${name}-390x844.png`), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });
    log(`${since()} screenshots: ${name}`);
  }
  const go = async (hash) => {
    await page.evaluate((h) => { location.hash = h; }, hash);
  };
  const visible = (sel, timeout = PATIENCE) => page.locator(sel).first().waitFor({ state: "visible", timeout });

  // 1. A bad token is refused with a message, never a blank page.
  await page.goto(`${base}/#/topology`);
  await visible("#token");
  expectHttpErrors = true;
  await page.fill("#token", "not-the-token");
  await page.click("form.login button");
  await page.locator("#login-error", { hasText: "refused" }).waitFor({ timeout: PATIENCE });
  expectHttpErrors = false;
  await shots("login-refused");

  // 2. Log in; the topology shows both edges, up, and the devices.
  await page.fill("#token", token);
  await page.click("form.login button");
  await visible("#view-topology");
  for (const edge of ["edge-1", "edge-2"]) {
    await page.locator(`tr.edge-row.health-ok[data-key="local/${edge}"]`).waitFor({ timeout: PATIENCE });
  }
  await page.locator("tr.device-row", { hasText: "con-0" }).first().waitFor({ timeout: PATIENCE });
  const devices = await page.locator("tr.device-row").count();
  if (devices < 2) throw new Error(`topology lists ${devices} devices, want the fleet's`);
  await page.locator("#conn[data-state=live]").waitFor({ timeout: PATIENCE });
  // Every device row names the edge it reports through; every edge shows
  // its certificate's expiry date and its sync lag.
  const edgeCells = await page.locator("tr.device-row td[data-label=Edge]").allTextContents();
  if (!edgeCells.length || !edgeCells.every((t) => /^edge-\d$/.test(t))) {
    throw new Error(`device rows name no edge: ${JSON.stringify(edgeCells)}`);
  }
  const certs = await page.locator("tr.edge-row td[data-label='Cert expiry']").allTextContents();
  if (!certs.length || !certs.every((t) => /^\d{4}-\d\d-\d\d/.test(t))) {
    throw new Error(`edges show no certificate expiry: ${JSON.stringify(certs)}`);
  }
  const lags = await page.locator("tr.edge-row td[data-label='Sync lag']").allTextContents();
  if (!lags.length || lags.some((t) => t === "—")) throw new Error(`edges show no sync lag: ${JSON.stringify(lags)}`);
  // Search narrows the lists: edges here, devices by central.
  await page.fill("#search", "edge-2");
  await page.locator('tr.edge-row[data-key="local/edge-1"]').waitFor({ state: "detached", timeout: 5000 });
  await page.fill("#search", "con-1");
  await page.locator("tr.device-row", { hasText: "con-0" }).first().waitFor({ state: "detached", timeout: 10_000 });
  const found = await page.locator("tr.device-row a.device-name").allTextContents();
  if (!found.length || !found.every((t) => t.includes("con-1"))) {
    throw new Error(`device search for con-1 shows ${JSON.stringify(found)}`);
  }
  await page.fill("#search", "");
  log(`${since()} topology shows both edges and ${devices} devices`);
  await shots("topology");

  // 3. An unknown route and a malformed filter say so.
  await go("#/no-such-view");
  await visible("#route-error");
  await shots("unknown-route");
  expectHttpErrors = true;
  await go("#/alerts?severity=fatal");
  await page.locator("#filter-error", { hasText: "severity" }).waitFor({ timeout: PATIENCE });
  expectHttpErrors = false;
  await shots("alerts-bad-filter");

  // 4. The device view charts telemetry; zooming in reads raw records.
  await go("#/device/acme/con-0");
  await visible("#chart canvas");
  await page.locator("#chart-info", { hasText: "downsampled" }).waitFor({ timeout: PATIENCE });
  await shots("device");
  const box = await page.locator("#chart .u-over").boundingBox();
  if (!box) throw new Error("the chart has no plot area");
  await page.mouse.move(box.x + box.width * 0.80, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.97, box.y + box.height / 2, { steps: 8 });
  await page.mouse.up();
  await page.locator("#chart-info", { hasText: "raw readings" }).waitFor({ timeout: PATIENCE });
  await shots("device-zoomed");

  // 5. A monitor submitted from the form runs, and its allocation shows.
  await go("#/submit");
  await visible("#submit-form");
  await page.fill("#f-name", MONITOR);
  await page.fill("#f-globs", "con*");
  await page.setInputFiles("#f-module", wasm);
  await page.fill("#f-params", JSON.stringify({ metrics: ["temperature"], window: 40, "min-samples": 30 }));
  await page.fill("#f-count", "1");
  await page.fill("#f-replace", "1s");
  await shots("submit-form");
  await page.click("#f-submit");
  await visible("#submit-ok");
  await go("#/workloads");
  const running = page.locator(`[data-monitor="local/acme/${MONITOR}"] tr.alloc-row.alloc-running.desired-run`);
  await running.first().waitFor({ timeout: PATIENCE });
  const edge = await running.first().getAttribute("data-edge");
  log(`${since()} ${MONITOR} runs on ${edge}`);
  await shots("workloads");
  await go(`#/workloads/local/acme/${MONITOR}`);
  await page.locator("#monitor-detail pre.spec").waitFor({ timeout: PATIENCE });
  await page.locator("#monitor-detail p.measured", { hasText: "CPU" }).waitFor({ timeout: PATIENCE });
  await shots("workload-detail");

  // 5b. An autoscaled global workload (the same module, through the API
  // with the console's token): its page shows the split with reasons and
  // the autoscaling block with its decisions.
  const created = await page.evaluate(async ([monitor]) => {
    const auth = { Authorization: `Bearer ${sessionStorage.getItem("strata.token")}` };
    const m = await (await fetch(`/api/v1/regions/local/monitors/acme/${monitor}`, { headers: auth })).json();
    const spec = {
      name: "ui-global", tenant: "acme", runtime: "wasm", artifact: m.spec.artifact,
      selector: { tenant: "acme", "device-globs": ["con*"] },
      params: { metrics: ["temperature"], window: 40, "min-samples": 30 },
      resources: { "memory-mib": 16, "cpu-millicores": 50 },
      scale: { min: 1, max: 3, metric: "records-per-second", target: 1000 },
      global: { count: 1 },
    };
    const r = await fetch("/api/v1/workloads", {
      method: "POST", headers: { ...auth, "Content-Type": "application/json" }, body: JSON.stringify(spec),
    });
    return `${r.status} ${await r.text()}`;
  }, [MONITOR]);
  if (!/^20[01] /.test(created)) throw new Error(`global workload not created: ${created}`);
  await go("#/workloads");
  await page.locator('[data-workload="acme/ui-global"] a').first().click();
  await page.locator("#global-detail tr.share-row", { hasText: "local" }).waitFor({ timeout: PATIENCE });
  await page.locator("#global-detail #scale-decisions").waitFor({ timeout: PATIENCE });
  log(`${since()} the global workload's page shows its split and autoscaling`);
  await shots("global-workload");

  // 6. A spike through that edge shows in the live alert feed within
  // seconds (the view is open before the spike: the stream delivers it).
  await go("#/alerts?tenant=acme");
  await page.locator("#alerts-status", { hasText: "live" }).waitFor({ timeout: PATIENCE });
  await step("spike", edge);
  const spiked = Date.now();
  await page.locator("tr.alert-row", { hasText: "zscore.anomaly" }).first().waitFor({ timeout: 30_000 });
  log(`${since()} the spike's alert appeared ${((Date.now() - spiked) / 1000).toFixed(1)} s after the fleet finished`);
  await shots("alerts");

  // 7. Killing that edge turns it red, and its monitor moves.
  await step("kill", edge);
  await go("#/topology");
  await page.locator(`tr.edge-row.health-bad[data-key="local/${edge}"]`).waitFor({ timeout: PATIENCE });
  log(`${since()} ${edge} shows down`);
  await shots("topology-edge-down");
  await go("#/workloads");
  await page.locator(`[data-monitor="local/acme/${MONITOR}"] tr.alloc-row.alloc-running.desired-run:not([data-edge="${edge}"])`)
    .first().waitFor({ timeout: PATIENCE });
  log(`${since()} ${MONITOR} moved off ${edge}`);
  await shots("workloads-moved");

  // 8. The events view has the story live: the edge going down.
  await go("#/events");
  await page.locator("tr.event-row.kind-edge-down", { hasText: edge }).first().waitFor({ timeout: PATIENCE });
  await shots("events");

  // 9. A lost connection to central: the console says it is reconnecting,
  // then that it reconnected, and the live view carries on.
  await go("#/topology");
  await visible("#view-topology");
  expectNetErrors = true;
  await step("cut");
  await page.locator("#conn[data-state=reconnecting]").waitFor({ timeout: 10_000 });
  await shots("reconnecting");
  await page.locator("#conn[data-state=reconnected]").waitFor({ timeout: PATIENCE });
  expectNetErrors = false;
  const before = await page.locator("#conn").getAttribute("data-state");
  await page.locator("tr.edge-row").first().waitFor({ timeout: PATIENCE });
  log(`${since()} the stream was cut, the console said so and came back (${before})`);

  if (errors.length) throw new Error(`the console logged errors:\n  ${errors.join("\n  ")}`);
  log(`${since()} all checks passed`);
} catch (e) {
  failed = true;
  console.error(`FAILED at ${page.url()}: ${e.message}`);
  await page.screenshot({ path: join(outDir, "FAILED-1280x800.png"), fullPage: true }).catch(() => {});
  if (errors.length) console.error(`console errors so far:\n  ${errors.join("\n  ")}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
