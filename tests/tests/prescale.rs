//! Forecast-driven pre-scaling end to end, with real processes: one region
//! (one hub, two edges) under central, and a fleet in trace mode playing a
//! compressed day of 20 s with the same surge (3×, 5 s) at noon every day.
//!
//! Central records the autoscaled workload's load once per 1 s step in its
//! replicated state and, once the history covers two 20 s seasons, fits
//! Holt-Winters and passes the peak of its 6 s forecast to the autoscaler.
//! The test asserts the cause, not a latency: a decision with reason
//! `pre-scale-forecast` taken while the measured load was still at its
//! quiet level, shortly before a day's surge, with its forecast and the
//! metric recorded. A second workload scaled on `cpu` shows that metric is
//! now measured (samples counted on central's `/metrics`).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use firmware_sim::trace::{Surge, TraceSpec};
use serde_json::{json, Value};
use strata_tests::cluster::serial;
use strata_tests::fleet::{Phase, TENANT};
use strata_tests::monitors::{cli, sample_module};
use strata_tests::{wait_until, Cluster, ClusterOpts};

/// Wall seconds per trace day.
const DAY_S: f64 = 20.0;
const DAY_MS: u64 = 86_400_000;
/// The surge begins at noon of every trace day: 10 s into each wall day.
const SURGE_AT_S: f64 = DAY_S / 2.0;
/// Fleet-wide records/s outside the surge; 3× inside it.
const BASE_RATE: f64 = 9.0;
/// Records/s per instance. An instance sees its own edge's devices (half
/// the fleet): one instance measures about 4.5/s, two 9/s, so the quiet
/// load needs 1 either way and the surge 2-3.
const TARGET: f64 = 12.0;

fn trace() -> TraceSpec {
    let hour = Duration::from_secs(3600);
    TraceSpec {
        base_rate: BASE_RATE,
        // Flat apart from the surges, so the only thing worth forecasting
        // is the recurring rise.
        daily_amplitude: 0.0,
        weekly_amplitude: 0.0,
        noise: 0.02,
        compression: DAY_MS as f64 / 1000.0 / DAY_S,
        surges: (0..20)
            .map(|day| Surge {
                at: Duration::from_millis(day * DAY_MS) + 12 * hour,
                duration: 6 * hour,
                multiplier: 3.0,
            })
            .collect(),
        ..TraceSpec::default()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn workload(name: &str, sha: &str, size: usize, scale: Value) -> Value {
    json!({
        "name": name,
        "tenant": TENANT,
        "runtime": "wasm",
        "artifact": { "sha256": sha, "size-bytes": size },
        "selector": { "tenant": TENANT, "device-globs": ["*"] },
        "params": { "metrics": ["v"], "above": 1.0e9 },
        "resources": { "memory-mib": 16, "cpu-millicores": 50 },
        "global": { "count": 1 },
        "scale": scale,
    })
}

async fn get_workload(c: &Cluster, name: &str) -> anyhow::Result<Value> {
    let (s, v) = c
        .api
        .get(&format!("/api/v1/workloads/{TENANT}/{name}"))
        .await?;
    anyhow::ensure!(s == 200, "workload {name}: {s} {v}");
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recurring_surge_is_pre_scaled_from_the_forecast_before_it_begins() -> anyhow::Result<()>
{
    let _serial = serial().await;
    let mut c = Cluster::start(ClusterOpts {
        hubs: 1,
        edges: 2,
        region: "north".into(),
        // Steps of 1 s (one sample each, at the default 1 s interval: a
        // shorter interval than a few 250 ms heartbeats makes each rate
        // count 0 or 2 heartbeats' records), a season of one wall day.
        central_extra: "[global.forecast]\nstep = \"1s\"\nhorizon = \"6s\"\n\
                        seasons = [\"20s\"]\nrefit = \"5s\"\n"
            .into(),
        ..ClusterOpts::default()
    })
    .await?;
    let result = prescale(&mut c).await;
    c.finish(result)
}

async fn prescale(c: &mut Cluster) -> anyhow::Result<()> {
    let module = sample_module("threshold")?;
    let size = module.len();
    let (s, v) = c
        .api
        .post("/api/v1/artifacts", "application/wasm", module)
        .await?;
    anyhow::ensure!(s == 201, "artifacts: {s} {v}");
    let sha = v["sha256"].as_str().context("sha256")?.to_owned();
    let rps = workload(
        "prescaled",
        &sha,
        size,
        // A short scale-down window, so each day's surge is scaled down
        // again before the next one and has to be scaled up anew.
        json!({ "min": 1, "max": 4, "metric": "records-per-second", "target": TARGET,
                "scale-down-window": "3s" }),
    );
    let cpu = workload(
        "cpu-scaled",
        &sha,
        size,
        json!({ "min": 1, "max": 2, "metric": "cpu", "target": 1000.0 }),
    );
    for w in [&rps, &cpu] {
        wait_until(
            "the workload to be accepted",
            Duration::from_secs(20),
            || {
                let api = c.api.clone();
                let body = serde_json::to_vec(w).unwrap();
                async move {
                    let (s, _) = api
                        .post("/api/v1/workloads", "application/json", body)
                        .await
                        .ok()?;
                    (s == 201 || s == 200).then_some(())
                }
            },
        )
        .await?;
    }
    // The trace runs for the whole test; it is aborted at the end.
    let mut fleet = Phase::new("trace", 8, 0).fleet(c.mqtt_addrs(), 5, 1.0);
    fleet.count = None;
    fleet.trace = Some(trace());
    // Trace time 0 is at most this instant plus the fleet's start-up: a
    // surge computed from here begins no later than computed.
    let wall0 = now_ms();
    let run = tokio::spawn(firmware_sim::run(
        fleet,
        tokio_util::sync::CancellationToken::new(),
        None,
    ));

    // Two seasons of history (40 s) and then a surge: expect the pre-scale
    // within the third or a later day. Generous: several days may pass.
    let pre = wait_until(
        "a pre-scale-forecast decision",
        Duration::from_secs(180),
        || async {
            let w = get_workload(c, "prescaled").await.ok()?;
            // The first pre-scale (the history is newest first).
            w["scale-history"]
                .as_array()?
                .iter()
                .rev()
                .find(|d| d["reason"] == "pre-scale-forecast")
                .cloned()
        },
    )
    .await?;
    run.abort();
    eprintln!("pre-scale decision: {pre}");
    // Its inputs: the metric, and a forecast that asks for more than the
    // measured load does.
    assert_eq!(pre["metric"], "records-per-second", "{pre}");
    let forecast = pre["forecast"].as_f64().context("forecast")?;
    let total = pre["total"].as_f64().context("total")?;
    assert!(forecast > total, "{pre}");
    // Taken on the forecast, not on load that had already risen: the
    // running instances were not above their target.
    let per_instance = pre["per-instance"].as_f64().context("per-instance")?;
    assert!(per_instance < TARGET, "the load had risen already: {pre}");
    assert_eq!(pre["forecast-horizon-ms"], 6000, "{pre}");
    assert!(
        pre["forecast-recommended"].as_u64() > pre["recommended"].as_u64(),
        "{pre}"
    );
    assert!(pre["desired"].as_u64() > pre["current"].as_u64(), "{pre}");
    // Before its day's surge: where in the wall day it was taken. The
    // fleet's start-up only makes the real surge later than computed.
    let at = pre["at-ms"].as_i64().context("at-ms")?;
    let phase = ((at - wall0) as f64 / 1000.0).rem_euclid(DAY_S);
    eprintln!("pre-scaled {phase:.1} s into a {DAY_S} s day; the surge begins at {SURGE_AT_S} s");
    assert!(
        (SURGE_AT_S - 8.0..SURGE_AT_S + 1.0).contains(&phase),
        "pre-scaled {phase:.1} s into the day, not shortly before the surge at {SURGE_AT_S} s: {pre}"
    );
    // The measured history the forecast came from is in the detail view
    // (what the console charts): one point per step, in the scale metric.
    let w = get_workload(c, "prescaled").await?;
    let load = &w["load"];
    assert_eq!(load["metric"], "records-per-second", "{load}");
    let step = load["step-ms"].as_u64().context("step-ms")?;
    let points = load["values"].as_array().context("values")?;
    assert!(points.len() >= 20, "two seasons of points: {load}");
    assert!(points.iter().any(|v| v.as_f64() > Some(0.0)), "{load}");
    let first = load["first-ms"].as_i64().context("first-ms")?;
    assert_eq!(first % step as i64, 0, "points sit on step boundaries");

    // The CLI shows it with its forecast.
    let http = c.central.ready_field("http").context("central http")?;
    let table = cli(
        &http,
        &c.operator_token()?,
        &["scale-history", TENANT, "prescaled"],
    )
    .await?;
    assert!(
        table.contains("pre-scale-forecast") && table.contains("in 6s"),
        "{table}"
    );

    // `cpu` is measured too: samples observed, by metric.
    let addr = c.central_metrics_addr()?;
    let cpu_samples = c
        .metric(
            &addr,
            "strata_central_global_scale_samples_total{metric=\"cpu\"}",
        )
        .await?;
    assert!(cpu_samples > 0.0, "no cpu samples observed");
    let made = c
        .metric(
            &addr,
            "strata_central_global_forecasts_total{outcome=\"made\"}",
        )
        .await?;
    assert!(made > 0.0, "no forecast counted");
    let w = get_workload(c, "cpu-scaled").await?;
    assert_eq!(w["scale"]["metric"], "cpu", "{w}");
    Ok(())
}
