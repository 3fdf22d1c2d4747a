//! Rebalancing under pressure with real processes: an edge whose real
//! running instances measure above the region's high watermark sheds its
//! low-priority instance to another edge, while the higher-priority one
//! stays (the region's migration budget allows one move here).
//!
//! The pressure is real and deterministic: edge-1 offers monitors only
//! 16 MiB (`[monitors] memory-mib = 16`), and each threshold monitor's
//! measured memory (its wasm linear memory, about 1.06 MiB, reported in
//! every heartbeat) is a fixed share of that: two instances are above the
//! test region's `enter-percent = 10`, one is not (but stays above
//! `leave-percent = 5`, so the edge stays pressured and the budget, not
//! luck, keeps the second instance in place). CPU is not involved.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{ensure, Context};
use serde_json::{json, Value};
use strata_tests::fleet::{run_fleet, Phase};
use strata_tests::liveness::{events_since, wait_edge_state};
use strata_tests::monitors::{self, inspect, sample_module};
use strata_tests::{cluster::serial, wait_until, Cluster, ClusterOpts};

const REGION: &str = "local";
const PATIENCE: Duration = Duration::from_secs(30);

const HUB_PRESSURE: &str = "[scheduler.pressure]
enter-percent = 10
leave-percent = 5
sustain = \"2s\"
sample-every = \"250ms\"
moves-per-window = 1
window = \"10m\"
";

/// A threshold monitor on `press-*` of `priority`, 4 MiB, preferring edge-1.
fn monitor(name: &str, priority: u8, sha: &str, size: u64) -> Value {
    let mut s = monitors::spec(
        name,
        sha,
        size,
        &["press-*"],
        json!({"metrics": ["temperature"], "above": 1000.0}),
        None,
    );
    s["priority"] = json!(priority);
    s["resources"] = json!({"memory-mib": 4, "cpu-millicores": 50});
    s["placement"] = json!({
        "count": 1,
        "affinity": [{"label": "node", "value": "edge-1", "weight": 100}],
    });
    s
}

/// The monitor's allocations as central shows them.
async fn allocations(c: &Cluster, name: &str) -> anyhow::Result<Vec<Value>> {
    let (status, doc) = inspect(&c.api, REGION, name).await?;
    ensure!(status == 200, "inspect {name}: {status} {doc}");
    Ok(doc["allocations"].as_array().cloned().unwrap_or_default())
}

/// `name`'s live allocation reported running on `edge`.
async fn running_on(c: &Cluster, name: &str, edge: &str) -> anyhow::Result<Value> {
    wait_until(&format!("{name} running on {edge}"), PATIENCE, || async {
        allocations(c, name)
            .await
            .ok()?
            .into_iter()
            .find(|a| a["desired"] == "run" && a["client"] == "running" && a["edge"] == edge)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_under_memory_pressure_sheds_its_low_priority_instance() -> anyhow::Result<()> {
    let _serial = serial().await;
    let c = Cluster::start(ClusterOpts {
        hubs: 1,
        edges: 2,
        hub_extra: HUB_PRESSURE.into(),
        edge_sections: vec![(0, "[monitors]\nmemory-mib = 16\n".into())],
        ..ClusterOpts::default()
    })
    .await?;
    let r = async {
        for i in 1..=2 {
            wait_edge_state(&c.api, &format!("edge-{i}"), "up", PATIENCE).await?;
        }
        run_fleet(Phase::new("press", 1, 1).fleet(c.mqtt_addrs(), 91, 0.0)).await?;
        wait_until("press-0 stored", PATIENCE, || async {
            let n = c.api.device_counts(monitors::TENANT).await.ok()?;
            n.contains_key("press-0").then_some(())
        })
        .await?;
        let (sha, size) = monitors::upload(&c.api, REGION, sample_module("threshold")?).await?;
        monitors::submit(&c.api, REGION, &monitor("shed-low", 10, &sha, size)).await?;
        monitors::submit(&c.api, REGION, &monitor("keep-high", 90, &sha, size)).await?;
        // Both start where they prefer to run.
        let low0 = running_on(&c, "shed-low", "edge-1").await?;
        let high0 = running_on(&c, "keep-high", "edge-1").await?;

        // Sustained pressure: the low-priority one moves to edge-2.
        let moved = running_on(&c, "shed-low", "edge-2").await?;
        ensure!(moved["reason"] == "migrate-pressure", "{moved}");
        ensure!(
            moved["fencing-token"].as_u64() > low0["fencing-token"].as_u64(),
            "the moved instance has a higher fencing token: {low0} then {moved}"
        );
        let low = allocations(&c, "shed-low").await?;
        let old = low
            .iter()
            .find(|a| a["id"] == low0["id"])
            .context("the moved-off allocation is listed")?;
        ensure!(
            old["desired"] == "stop" && old["replaced-by"] == moved["id"],
            "the old copy stops with its replacement: {old}"
        );

        // The edge stays above leave-percent, so it would shed again; the
        // budget (one move per 10 minutes) holds the next move back, and
        // says so. The higher-priority instance never moved.
        let hub = c.hub_metrics_addr(1)?;
        wait_until("a held move counted", PATIENCE, || async {
            let n = c
                .metric(&hub, "strata_hub_migrations_held_total{reason=\"budget\"}")
                .await
                .ok()?;
            (n >= 1.0).then_some(())
        })
        .await?;
        let high = allocations(&c, "keep-high").await?;
        ensure!(
            high.len() == 1 && high[0]["id"] == high0["id"] && high[0]["desired"] == "run",
            "keep-high stays where it was: {high:?}"
        );
        ensure!(
            c.metric(
                &hub,
                "strata_hub_migrations_total{reason=\"memory-pressure\"}"
            )
            .await?
                == 1.0,
            "one move, counted with its reason"
        );
        ensure!(
            c.metric(&hub, "strata_hub_pressured_edges").await? == 1.0,
            "edge-1 is still pressured"
        );
        let events = events_since(&c.api, REGION, 0).await?;
        let migrated: Vec<&Value> = events
            .iter()
            .filter(|e| e["kind"] == "alloc-migrated")
            .collect();
        ensure!(
            migrated.len() == 1
                && migrated[0]["subject"] == format!("{}/shed-low", monitors::TENANT).as_str(),
            "one alloc-migrated event, for shed-low: {migrated:?}"
        );
        Ok(())
    }
    .await;
    c.finish(r)
}
