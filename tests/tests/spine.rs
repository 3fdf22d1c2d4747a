//! The telemetry spine under faults: devices → edges → 3 Raft hubs → API.
//! Every test checks the same end state: each device has exactly the
//! readings it sent, none missing, none doubled.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_tests::{cluster::serial, wait_until, Cluster, ClusterOpts};
use tokio_util::sync::CancellationToken;

const TENANT: &str = "acme";

/// Reading timestamps start ten minutes ago: recent enough for the store's
/// retention, fixed for the whole test so every timestamp is known.
fn start_ts_ms() -> i64 {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        now - 600_000
    })
}

/// A fleet of `devices` publishing `count` sequenced readings each at
/// `rate` per second, spread over the cluster's edges.
fn fleet(c: &Cluster, seed: u64, devices: u32, count: u64, rate: f64) -> firmware_sim::FleetConfig {
    firmware_sim::FleetConfig {
        tenant: TENANT.into(),
        devices,
        seed,
        endpoints: c.mqtt_addrs(),
        connections: Some(devices.min(20)),
        rate_per_device: rate,
        count: Some(count),
        qos: 1,
        start_ts_ms: Some(start_ts_ms()),
        ack_deadline: Duration::from_secs(120),
        ..Default::default()
    }
}

/// Waits until every device has `count` records, then checks each device's
/// raw records: exactly the sequence numbers 0..count, once each.
async fn assert_exactly_once(
    c: &Cluster,
    devices: u32,
    count: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let want = u64::from(devices) * count;
    let last = std::sync::atomic::AtomicU64::new(0);
    let res = wait_until("all readings stored", Duration::from_secs(90), || async {
        let counts = c.api.device_counts(TENANT).await.ok()?;
        last.store(
            counts.values().sum::<u64>(),
            std::sync::atomic::Ordering::Relaxed,
        );
        (counts.len() == devices as usize && counts.values().all(|n| *n >= count)).then_some(counts)
    })
    .await;
    let counts = res.with_context(|| {
        format!(
            "seed {seed}: stored {} of {want}",
            last.load(std::sync::atomic::Ordering::Relaxed)
        )
    })?;
    for (dev, n) in &counts {
        anyhow::ensure!(
            *n == count,
            "seed {seed}: {dev} has {n} records, want {count} (doubled)"
        );
    }
    let (from, to) = (start_ts_ms() - 3_600_000, start_ts_ms() + 3_600_000);
    for d in 0..devices {
        let dev = firmware_sim::device_name("dev", d);
        let recs = c.api.telemetry(TENANT, &dev, from, to).await?;
        let seqs: Vec<u64> = recs.iter().filter_map(|r| r["seq"].as_u64()).collect();
        let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
        anyhow::ensure!(
            seqs.len() as u64 == count && distinct == (0..count).collect(),
            "seed {seed}: {dev}: {} records, {} distinct seqs, want exactly 0..{count}",
            seqs.len(),
            distinct.len()
        );
    }
    Ok(())
}

async fn run_fleet(cfg: firmware_sim::FleetConfig) -> anyhow::Result<firmware_sim::Summary> {
    let s = firmware_sim::run(cfg, CancellationToken::new(), None).await?;
    anyhow::ensure!(s.complete, "fleet did not complete: {s}");
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_two_edges_into_three_hubs() -> anyhow::Result<()> {
    let _g = serial().await;
    let seed = 11;
    let c = Cluster::start(ClusterOpts::default()).await?;
    let r = async {
        let (devices, count) = (60, 100);
        let s = run_fleet(fleet(&c, seed, devices, count, 0.0)).await?;
        assert_eq!(s.acked, u64::from(devices) * count);
        assert_exactly_once(&c, devices, count, seed).await
    }
    .await;
    c.finish(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_during_ingest_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let _g = serial().await;
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let r = leader_sigkill(&mut c, 12).await;
    c.finish(r)
}

async fn leader_sigkill(c: &mut Cluster, seed: u64) -> anyhow::Result<()> {
    let (devices, count) = (40, 150);
    // ~30 readings/s per device: ingest lasts about 5 s.
    let sim = tokio::spawn(run_fleet(fleet(c, seed, devices, count, 30.0)));
    // Kill the leader once ingest is well under way.
    let region = c.opts.region.clone();
    wait_until("ingest under way", Duration::from_secs(30), || async {
        let (_, stored) = c.api.leader_stored(&region).await.ok()??;
        (stored > 500).then_some(())
    })
    .await?;
    let (leader, before) = c.leader_applied().await.context("leader")?;
    let killed_at = Instant::now();
    let idx = c.hub_index(leader);
    c.hubs[idx].kill().await;
    // Write gap, asked of the hubs directly: from the kill until a new
    // leader has stored more than the old one had.
    let new_leader = wait_until(
        "a new leader storing again",
        Duration::from_secs(30),
        || async {
            let (id, stored) = c.leader_applied().await?;
            (id != leader && stored > before).then_some(id)
        },
    )
    .await?;
    let gap = killed_at.elapsed();
    println!("write gap after SIGKILL of leader hub {leader}: {gap:?} (new leader {new_leader})");
    let s = sim.await??;
    assert_eq!(s.acked, u64::from(devices) * count);
    // The killed replica comes back and catches up; the answer is unchanged.
    c.hubs[idx].start().await?;
    assert_exactly_once(c, devices, count, seed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_sigkill_mid_stream_replays_its_spool() -> anyhow::Result<()> {
    let _g = serial().await;
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let r = edge_sigkill(&mut c, 13).await;
    c.finish(r)
}

async fn edge_sigkill(c: &mut Cluster, seed: u64) -> anyhow::Result<()> {
    let (devices, count) = (40, 150);
    let sim = tokio::spawn(run_fleet(fleet(c, seed, devices, count, 30.0)));
    let region = c.opts.region.clone();
    wait_until("ingest under way", Duration::from_secs(30), || async {
        let (_, stored) = c.api.leader_stored(&region).await.ok()??;
        (stored > 400).then_some(())
    })
    .await?;
    c.edges[0].kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.edges[0].start().await?;
    let s = sim.await??;
    anyhow::ensure!(
        s.reconnects > 0,
        "devices of edge-1 should have reconnected: {s}"
    );
    assert_exactly_once(c, devices, count, seed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_outage_edges_spool_and_deliver_after() -> anyhow::Result<()> {
    let _g = serial().await;
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let r = hub_outage(&mut c, 14).await;
    c.finish(r)
}

async fn hub_outage(c: &mut Cluster, seed: u64) -> anyhow::Result<()> {
    for h in c.hubs.iter_mut() {
        h.kill().await;
    }
    let (devices, count) = (40, 50);
    // Devices keep publishing and get PUBACKs from the edges' spools.
    let s = run_fleet(fleet(c, seed, devices, count, 0.0)).await?;
    assert_eq!(s.acked, u64::from(devices) * count);
    // Nothing can have been stored: no hub is up. Bring them back.
    for h in c.hubs.iter_mut() {
        h.start().await?;
    }
    c.wait_for_leader(Duration::from_secs(30)).await?;
    assert_exactly_once(c, devices, count, seed).await
}
