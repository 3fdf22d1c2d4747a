//! A sharded monitor with real processes: a single-edge region, the `rate`
//! sample monitor submitted with `placement = { count = 1, shard = true }`
//! and resubmitted with `count = 3`. All three instances run on the one
//! edge (an unsharded monitor could place only one there), every reading
//! reaches exactly one of them, and the devices that moved to the new
//! instances took their kv state along (the edge's hand-over counters).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::ensure;
use serde_json::{json, Value};
use strata_tests::cluster::{metric_value, scrape, serial};
use strata_tests::fleet::{run_fleet, Phase};
use strata_tests::liveness::wait_edge_state;
use strata_tests::monitors::{self, inspect, sample_module};
use strata_tests::{wait_until, Cluster, ClusterOpts};

const REGION: &str = "local";
const PATIENCE: Duration = Duration::from_secs(30);
const DEVICES: u32 = 16;
const READINGS: u64 = 20;

async fn live_allocations(c: &Cluster, name: &str) -> anyhow::Result<Vec<Value>> {
    let (status, doc) = inspect(&c.api, REGION, name).await?;
    ensure!(status == 200, "inspect {name}: {status} {doc}");
    Ok(doc["allocations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["desired"] == "run")
        .collect())
}

/// Waits until `name` has `n` allocations in slots `0..n`, all running on
/// edge-1.
async fn running_on_edge_1(c: &Cluster, name: &str, n: u64) -> anyhow::Result<()> {
    wait_until(
        &format!("{name}: {n} instances running on edge-1"),
        PATIENCE,
        || async {
            let live = live_allocations(c, name).await.ok()?;
            let slots: std::collections::BTreeSet<u64> =
                live.iter().filter_map(|a| a["slot"].as_u64()).collect();
            (live.len() as u64 == n
                && slots == (0..n).collect()
                && live
                    .iter()
                    .all(|a| a["edge"] == "edge-1" && a["client"] == "running"))
            .then_some(())
        },
    )
    .await
}

async fn edge_counter(c: &Cluster, series: &str) -> anyhow::Result<f64> {
    let text = scrape(&c.edge_metrics_addr(0)?).await?;
    Ok(metric_value(&text, series).unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_monitor_scales_out_on_a_single_edge_and_its_devices_keep_their_state(
) -> anyhow::Result<()> {
    let _g = serial().await;
    let seed = 91;
    eprintln!("fleet seed = {seed}");
    let c = Cluster::start(ClusterOpts {
        edges: 1,
        ..ClusterOpts::default()
    })
    .await?;
    let r = async {
        wait_edge_state(&c.api, "edge-1", "up", PATIENCE).await?;
        // The selector must match a known device: one reading first.
        run_fleet(Phase::new("shd", 1, 1).fleet(c.mqtt_addrs(), seed, 0.0)).await?;
        wait_until("shd-0 stored", PATIENCE, || async {
            let n = c.api.device_counts(monitors::TENANT).await.ok()?;
            n.contains_key("shd-0").then_some(())
        })
        .await?;
        let (sha, size) = monitors::upload(&c.api, REGION, sample_module("rate")?).await?;
        let mut spec = monitors::spec(
            "shd-rate",
            &sha,
            size,
            &["shd-*"],
            json!({"metrics": ["temperature"], "max-rate": 1e9}),
            None,
        );
        spec["placement"] = json!({"count": 1, "shard": true});
        monitors::submit(&c.api, REGION, &spec).await?;
        running_on_edge_1(&c, "shd-rate", 1).await?;

        let phase = Phase::new("shd", DEVICES, READINGS);
        run_fleet(phase.fleet(c.mqtt_addrs(), seed, 20.0)).await?;
        // Scale out: the region places the new slots on the same edge.
        spec["placement"] = json!({"count": 3, "shard": true});
        monitors::submit(&c.api, REGION, &spec).await?;
        running_on_edge_1(&c, "shd-rate", 3).await?;
        run_fleet(phase.fleet(c.mqtt_addrs(), seed + 1, 20.0)).await?;

        // Exactly once: every reading of both phases was queued for one
        // instance (three instances each seeing everything would be 3×),
        // and all were processed.
        let total = 2.0 * (DEVICES as f64) * (READINGS as f64);
        wait_until("every reading processed once", PATIENCE, || async {
            let routed = edge_counter(&c, "strata_monitor_routed_total").await.ok()?;
            let done = edge_counter(&c, "strata_monitor_processed_total").await.ok()?;
            (routed == total && done == total).then_some(())
        })
        .await?;
        let handovers = edge_counter(&c, "strata_monitor_shard_handovers_total").await?;
        let devices = edge_counter(&c, "strata_monitor_shard_devices_moved_total").await?;
        let keys = edge_counter(&c, "strata_monitor_shard_keys_moved_total").await?;
        let dropped = edge_counter(&c, "strata_monitor_records_dropped_handover_total").await?;
        eprintln!("hand-overs {handovers}, devices moved {devices}, keys moved {keys}, dropped while held {dropped}");
        ensure!(handovers >= 3.0, "none→1 and two slots added: {handovers}");
        // Two of three slots are new: about 2/3 of the 16 devices move, each
        // with its one series (temperature).
        // (A restart of slot 0 for the new generation may move some twice.)
        ensure!(devices >= 4.0, "devices moved: {devices}");
        ensure!(keys == devices, "one rate series per moved device: {keys} keys");
        ensure!(dropped == 0.0, "{dropped}");
        Ok(())
    }
    .await;
    c.finish(r)
}
