//! A bounded chaos soak with real processes: while a fleet publishes through
//! three edges (roaming to another edge when its own dies), edges are
//! SIGKILLed and restarted and cut off from the hub and healed, one at a
//! time, at random (seeded). Throughout, both edges' own views are sampled:
//! a `replace-after` monitor with 2 instances never has more than 2 live
//! copies. Afterwards, every desired instance runs again within a bound and
//! every reading the fleet was acknowledged is stored exactly once.
//!
//! About 2.5 minutes of chaos by default; `STRATA_SOAK_SECS` makes it
//! longer, `STRATA_SOAK_SEED` replays a run.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use strata_tests::cluster::{metric_value, scrape, serial};
use strata_tests::fleet::{assert_exactly_once, run_fleet, Phase};
use strata_tests::liveness::wait_edge_state;
use strata_tests::monitors::{self, inspect, sample_module};
use strata_tests::{wait_until, Cluster, ClusterOpts};

const REGION: &str = "local";
const PATIENCE: Duration = Duration::from_secs(30);
const RUNNING: &str = "strata_monitor_instances_running";
/// Instances of the `replace-after` monitor.
const COPIES: f64 = 2.0;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Live allocations of `name` that their edges report running.
async fn running(c: &Cluster, name: &str) -> Option<usize> {
    let (status, doc) = inspect(&c.api, REGION, name).await.ok()?;
    (status == 200).then_some(())?;
    Some(
        doc["allocations"]
            .as_array()?
            .iter()
            .filter(|a| a["desired"] == "run" && a["client"] == "running")
            .count(),
    )
}

/// What the sampler saw: the most copies live at once, and when.
#[derive(Debug, Default)]
struct Seen {
    samples: u64,
    max: f64,
    over: Vec<(Duration, Vec<f64>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_soak_keeps_the_invariants() -> anyhow::Result<()> {
    let _serial = serial().await;
    let seed = env_u64("STRATA_SOAK_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(7)
    });
    let soak = Duration::from_secs(env_u64("STRATA_SOAK_SECS").unwrap_or(150));
    eprintln!("chaos soak: seed {seed} (STRATA_SOAK_SEED), {soak:?}");
    // One hub, so no leader redirect can route an edge around its proxy.
    let mut c = Cluster::start(ClusterOpts {
        hubs: 1,
        edges: 3,
        proxied_edges: vec![0, 1, 2],
        ..ClusterOpts::default()
    })
    .await?;
    let r = async {
        for i in 1..=3 {
            wait_edge_state(&c.api, &format!("edge-{i}"), "up", PATIENCE).await?;
        }
        let warm = Phase::new("chaos-warm", 1, 1);
        run_fleet(warm.fleet(c.mqtt_addrs(), seed, 0.0)).await?;
        wait_until("a device known", PATIENCE, || async {
            let n = c.api.device_counts(monitors::TENANT).await.ok()?;
            n.contains_key("chaos-warm-0").then_some(())
        })
        .await?;
        let (sha, size) = monitors::upload(&c.api, REGION, sample_module("threshold")?).await?;
        let mut spec = monitors::spec(
            "ha",
            &sha,
            size,
            // Not the soak's devices: its derived metrics would be stored as
            // their telemetry, and the exactly-once check counts readings.
            &["chaos-warm-*"],
            json!({"metrics": ["temperature"], "above": 1000.0}),
            None,
        );
        spec["placement"] = json!({"count": 2, "replace-after": "1s"});
        monitors::submit(&c.api, REGION, &spec).await?;
        wait_until("2 copies running", PATIENCE, || async {
            (running(&c, "ha").await? == 2).then_some(())
        })
        .await?;

        // The edges' own view, sampled side by side; a dead edge runs
        // nothing (its entry is None while it is down).
        let addrs: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(
            (0..3)
                .map(|i| c.edge_metrics_addr(i).ok())
                .collect::<Vec<_>>(),
        ));
        let stop = tokio_util::sync::CancellationToken::new();
        let t0 = Instant::now();
        let sampler = {
            let (addrs, stop) = (addrs.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Seen::default();
                while !stop.is_cancelled() {
                    let now: Vec<Option<String>> = addrs.lock().unwrap().clone();
                    let mut counts = Vec::new();
                    for a in now {
                        let n = match a {
                            Some(a) => scrape(&a)
                                .await
                                .ok()
                                .and_then(|t| metric_value(&t, RUNNING))
                                .unwrap_or(0.0),
                            None => 0.0,
                        };
                        counts.push(n);
                    }
                    let sum: f64 = counts.iter().sum();
                    seen.samples += 1;
                    seen.max = seen.max.max(sum);
                    if sum > COPIES {
                        seen.over.push((t0.elapsed(), counts));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen
            })
        };

        // A fleet publishing through the whole soak, roaming on failure.
        let rate = 2.0;
        let phase = Phase::new("chaos", 12, (soak.as_secs_f64() * rate) as u64);
        let mut fleet_cfg = phase.fleet(c.mqtt_addrs(), seed, rate);
        fleet_cfg.failover = true;
        let fleet = tokio::spawn(run_fleet(fleet_cfg));

        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (mut kills, mut cuts) = (0, 0);
        while t0.elapsed() < soak {
            let i = rng.gen_range(0..3);
            let hold = Duration::from_millis(rng.gen_range(1_500..5_000));
            if rng.gen_bool(0.5) {
                kills += 1;
                eprintln!("[{:>6.1?}] kill edge-{}", t0.elapsed(), i + 1);
                addrs.lock().unwrap()[i] = None;
                c.edges[i].kill().await;
                tokio::time::sleep(hold).await;
                c.edges[i].start().await?;
                addrs.lock().unwrap()[i] = c.edge_metrics_addr(i).ok();
                eprintln!("[{:>6.1?}] edge-{} restarted", t0.elapsed(), i + 1);
            } else {
                cuts += 1;
                eprintln!("[{:>6.1?}] cut edge-{}", t0.elapsed(), i + 1);
                c.cut_edge(i);
                tokio::time::sleep(hold).await;
                c.restore_edge(i);
                eprintln!("[{:>6.1?}] edge-{} healed", t0.elapsed(), i + 1);
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(1_000..3_000))).await;
        }
        let healthy = Instant::now();
        for i in 1..=3 {
            wait_edge_state(&c.api, &format!("edge-{i}"), "up", PATIENCE).await?;
        }
        // Every desired instance runs again within a bound, on the edges'
        // own count too.
        let back = wait_until("both copies running again", PATIENCE, || async {
            (running(&c, "ha").await? == 2).then_some(())
        })
        .await;
        if back.is_err() {
            // What the region thinks, for the failure report.
            let (_, edges) = c.api.get("/api/v1/edges").await?;
            eprintln!("edges: {edges}");
            let (_, doc) = inspect(&c.api, REGION, "ha").await?;
            eprintln!("ha: {}", doc["allocations"]);
            let m = scrape(&c.hub_metrics_addr(1)?).await?;
            for l in m
                .lines()
                .filter(|l| l.contains("liveness") || l.contains("sched_"))
            {
                eprintln!("hub: {l}");
            }
        }
        back?;
        let addrs_now: Vec<Option<String>> = addrs.lock().unwrap().clone();
        wait_until("the edges run exactly 2 copies", PATIENCE, || async {
            let mut sum = 0.0;
            for a in addrs_now.iter().flatten() {
                sum += metric_value(&scrape(a).await.ok()?, RUNNING)?;
            }
            (sum == COPIES).then_some(())
        })
        .await?;
        eprintln!(
            "chaos: {kills} kills, {cuts} cuts; desired state back {} ms after the last fault",
            healthy.elapsed().as_millis()
        );
        stop.cancel();
        let seen = sampler.await?;
        eprintln!(
            "chaos: {} samples of the edges, at most {} copies live at once",
            seen.samples, seen.max
        );
        ensure!(
            seen.over.is_empty(),
            "seed {seed}: more than {COPIES} live copies: {:?}",
            seen.over
        );
        ensure!(seen.samples > 100, "the sampler hardly ran: {seen:?}");

        // No acknowledged reading lost or doubled.
        let summary = fleet
            .await?
            .with_context(|| format!("seed {seed}: fleet"))?;
        eprintln!("chaos fleet: {summary}");
        assert_exactly_once(&c, &[phase], seed).await?;
        let doc: Value = inspect(&c.api, REGION, "ha").await?.1;
        eprintln!(
            "chaos: {} allocations of ha over the soak",
            doc["allocations"].as_array().map_or(0, Vec::len)
        );
        Ok(())
    }
    .await;
    c.finish(r)
}
