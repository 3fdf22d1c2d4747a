//! Key-value state moves too, with real processes: a `replace-after`
//! rate-of-change monitor keeps its previous reading per device in kv; its
//! edge checkpoints that state through the spool to the region; the edge is
//! SIGKILLed; the replacement on another edge starts from the checkpoint,
//! so the very first reading it sees already yields a rate (an instance
//! starting empty would need two). And the same for a `per-edge` monitor
//! whose device roams (firmware-sim failover) from a killed edge to
//! another: the new edge's instance starts from the old edge's checkpoint.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{ensure, Context};
use serde_json::{json, Value};
use strata_tests::fleet::{run_fleet, start_ts_ms, Phase};
use strata_tests::liveness::wait_edge_state;
use strata_tests::monitors::{self, inspect, sample_module};
use strata_tests::{cluster::serial, wait_until, Cluster, ClusterOpts};

const REGION: &str = "local";
const PATIENCE: Duration = Duration::from_secs(30);
const MONITOR: &str = "carry";
const DEVICE: &str = "ck-0";

/// `readings` readings of `<prefix>-0` through the MQTT endpoints `addrs`
/// (the first that takes the connection: firmware-sim's failover), the
/// first at `start + offset_ms`.
async fn send_via(
    prefix: &str,
    addrs: &[&str],
    readings: u64,
    seed: u64,
    offset_ms: i64,
) -> anyhow::Result<()> {
    let endpoints = addrs.iter().map(|a| a.to_string()).collect();
    let mut f = Phase::new(prefix, 1, readings).fleet(endpoints, seed, 0.0);
    f.start_ts_ms = Some(start_ts_ms() + offset_ms);
    f.failover = addrs.len() > 1;
    run_fleet(f).await.map(|_| ())
}

/// `readings` readings of `ck-0` through the MQTT endpoint `addr`.
async fn send(addr: &str, readings: u64, seed: u64, offset_ms: i64) -> anyhow::Result<()> {
    send_via("ck", &[addr], readings, seed, offset_ms).await
}

/// Records of `ck-0` in the region carrying the monitor's derived rate.
/// Outputs are stamped with the edge's clock when their callback ran, and
/// the store keeps one record per timestamp, so this counts callbacks that
/// emitted a rate.
async fn rates(c: &Cluster) -> anyhow::Result<usize> {
    rates_of(c, MONITOR, DEVICE).await
}

/// [`rates`] of `monitor` for `device`.
async fn rates_of(c: &Cluster, monitor: &str, device: &str) -> anyhow::Result<usize> {
    let rate = format!("{monitor}/temperature.rate");
    let recs = c
        .api
        .telemetry(
            monitors::TENANT,
            device,
            start_ts_ms() - 1,
            start_ts_ms() + 3_600_000,
        )
        .await?;
    Ok(recs
        .iter()
        .filter(|r| r["metrics"].get(&rate).is_some())
        .count())
}

/// The live allocation of the monitor that its edge reports running, on
/// an edge other than `not_on`.
async fn running_elsewhere(c: &Cluster, not_on: Option<&str>) -> anyhow::Result<Value> {
    running_of(c, MONITOR, not_on).await
}

/// [`running_elsewhere`] of `monitor`; on a timeout the error carries the
/// monitor's document (allocations, evaluations).
async fn running_of(c: &Cluster, monitor: &str, not_on: Option<&str>) -> anyhow::Result<Value> {
    let r = running_of_inner(c, monitor, not_on).await;
    if r.is_err() {
        if let Ok((_, doc)) = inspect(&c.api, REGION, monitor).await {
            return r.with_context(|| format!("{monitor}: {doc}"));
        }
    }
    r
}

async fn running_of_inner(
    c: &Cluster,
    monitor: &str,
    not_on: Option<&str>,
) -> anyhow::Result<Value> {
    wait_until(&format!("{monitor} running"), PATIENCE, || async {
        let (status, doc) = inspect(&c.api, REGION, monitor).await.ok()?;
        if status != 200 {
            return None;
        }
        doc["allocations"]
            .as_array()?
            .iter()
            .find(|a| {
                a["desired"] == "run"
                    && a["client"] == "running"
                    && Some(a["edge"].as_str().unwrap_or("")) != not_on
            })
            .cloned()
    })
    .await
}

fn edge_index(edge: &str) -> anyhow::Result<usize> {
    let n: usize = edge
        .strip_prefix("edge-")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("edge name {edge:?}"))?;
    Ok(n - 1)
}

/// The most checkpoints any hub replica has stored.
async fn checkpoints_stored(c: &Cluster) -> f64 {
    let mut best = 0.0f64;
    for id in 1..=c.hubs.len() as u64 {
        if let Ok(addr) = c.hub_metrics_addr(id) {
            if let Ok(v) = c.metric(&addr, "strata_hub_checkpoints_stored_total").await {
                best = best.max(v);
            }
        }
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replacement_on_another_edge_starts_from_the_last_checkpoint() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut c = Cluster::start(ClusterOpts {
        edges: 3,
        // Checkpoint quickly, so the test need not wait 30 s.
        edge_extra: "[monitors]\nstate-flush-interval-ms = 200\ncheckpoint-interval-ms = 300\n"
            .into(),
        ..ClusterOpts::default()
    })
    .await?;
    let r = async {
        for i in 1..=3 {
            wait_edge_state(&c.api, &format!("edge-{i}"), "up", PATIENCE).await?;
        }
        // One stored reading, so the selector validates.
        send(&c.mqtt_addrs()[0], 1, 91, 0).await?;
        wait_until("ck-0 stored", PATIENCE, || async {
            let n = c.api.device_counts(monitors::TENANT).await.ok()?;
            n.contains_key(DEVICE).then_some(())
        })
        .await?;

        let (sha, size) = monitors::upload(&c.api, REGION, sample_module("rate")?).await?;
        let mut spec = monitors::spec(
            MONITOR,
            &sha,
            size,
            &["ck-*"],
            json!({"metrics": ["temperature"], "max-rate": 1.0e9}),
            None,
        );
        spec["placement"] = json!({"count": 1, "replace-after": "1s"});
        monitors::submit(&c.api, REGION, &spec).await?;
        let first = running_elsewhere(&c, None).await?;
        let victim = first["edge"].as_str().context("edge")?.to_owned();
        let vi = edge_index(&victim)?;

        // Three readings through its edge: rates, and kv state (the last
        // reading) that reaches the region as a checkpoint.
        send(&c.mqtt_addrs()[vi], 3, 92, 10_000).await?;
        wait_until("a rate stored", PATIENCE, || async {
            (rates(&c).await.ok()? >= 1).then_some(())
        })
        .await?;
        wait_until("a checkpoint stored in the region", PATIENCE, || async {
            (checkpoints_stored(&c).await >= 1.0).then_some(())
        })
        .await?;

        c.edges[vi].kill().await;
        wait_edge_state(&c.api, &victim, "down", PATIENCE).await?;
        let moved = running_elsewhere(&c, Some(&victim)).await?;
        let heir = moved["edge"].as_str().context("edge")?.to_owned();
        let hi = edge_index(&heir)?;
        ensure!(moved["previous"] == first["id"], "{moved}");
        let seeded = c
            .metric(
                &c.edge_metrics_addr(hi)?,
                "strata_monitor_checkpoint_seeds_total{reason=\"seeded\"}",
            )
            .await?;
        ensure!(
            seeded == 1.0,
            "{heir} seeded the replacement from the checkpoint"
        );

        // Counted once the old edge is dead and its replacement runs: no
        // output of the old instance is still on its way.
        let before = rates(&c).await?;
        ensure!(before >= 1, "the old instance emitted rates");

        // One reading through the new edge: a rate at once, because the
        // previous reading came with the state.
        send(&c.mqtt_addrs()[hi], 1, 93, 100_000).await?;
        wait_until("the replacement's first rate", PATIENCE, || async {
            (rates(&c).await.ok()? > before).then_some(())
        })
        .await?;
        eprintln!("{MONITOR} moved {victim} -> {heir} with its state");
        Ok(())
    }
    .await;
    c.finish(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_edge_instance_follows_its_roaming_device_with_its_state() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut c = Cluster::start(ClusterOpts {
        edges: 3,
        edge_extra: "[monitors]\nstate-flush-interval-ms = 200\ncheckpoint-interval-ms = 300\n"
            .into(),
        ..ClusterOpts::default()
    })
    .await?;
    let r = async {
        for i in 1..=3 {
            wait_edge_state(&c.api, &format!("edge-{i}"), "up", PATIENCE).await?;
        }
        let mqtt = c.mqtt_addrs();
        // pe-0 reports through edge-1: the per-edge monitor runs there.
        send_via("pe", &[&mqtt[0]], 1, 94, 0).await?;
        wait_until("pe-0 stored", PATIENCE, || async {
            let n = c.api.device_counts(monitors::TENANT).await.ok()?;
            n.contains_key("pe-0").then_some(())
        })
        .await?;
        let (sha, size) = monitors::upload(&c.api, REGION, sample_module("rate")?).await?;
        let mut spec = monitors::spec(
            "follow",
            &sha,
            size,
            &["pe-*"],
            json!({"metrics": ["temperature"], "max-rate": 1.0e9}),
            None,
        );
        spec["placement"] = json!({"per-edge": true});
        monitors::submit(&c.api, REGION, &spec).await?;
        let first = running_of(&c, "follow", None).await?;
        ensure!(first["edge"] == "edge-1", "{first}");
        send_via("pe", &[&mqtt[0]], 3, 95, 10_000).await?;
        wait_until("a rate stored", PATIENCE, || async {
            (rates_of(&c, "follow", "pe-0").await.ok()? >= 1).then_some(())
        })
        .await?;
        wait_until("a checkpoint stored in the region", PATIENCE, || async {
            (checkpoints_stored(&c).await >= 1.0).then_some(())
        })
        .await?;

        // edge-1 dies; the device fails over to edge-2 (its next endpoint),
        // and the monitor follows it there.
        c.edges[0].kill().await;
        wait_edge_state(&c.api, "edge-1", "down", PATIENCE).await?;
        send_via("pe", &[&mqtt[0], &mqtt[1]], 1, 96, 50_000).await?;
        let moved = running_of(&c, "follow", Some("edge-1")).await?;
        ensure!(moved["edge"] == "edge-2", "{moved}");
        ensure!(moved["previous"] == first["id"], "{moved}");
        let seeded = c
            .metric(
                &c.edge_metrics_addr(1)?,
                "strata_monitor_checkpoint_seeds_total{reason=\"seeded\"}",
            )
            .await?;
        ensure!(
            seeded == 1.0,
            "edge-2 seeded the instance from edge-1's checkpoint"
        );

        // Its first reading on edge-2 yields a rate: it has edge-1's state.
        let before = rates_of(&c, "follow", "pe-0").await?;
        send_via("pe", &[&mqtt[1]], 1, 97, 100_000).await?;
        wait_until("the follower's first rate", PATIENCE, || async {
            (rates_of(&c, "follow", "pe-0").await.ok()? > before).then_some(())
        })
        .await?;
        Ok(())
    }
    .await;
    c.finish(r)
}
