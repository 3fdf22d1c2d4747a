//! Driving a simulated fleet through a cluster and checking the result:
//! every device holds exactly the readings it sent, none missing, none
//! doubled.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::wait::wait_until;

/// Tenant of every test fleet.
pub const TENANT: &str = "acme";

/// Reading timestamps start ten minutes ago: recent enough for the store's
/// retention, fixed for the whole test process so every timestamp is known.
pub fn start_ts_ms() -> i64 {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        now - 600_000
    })
}

/// A group of devices `<prefix>-0..devices`, each sending `count`
/// sequenced readings.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Device name prefix.
    pub prefix: String,
    /// Number of devices.
    pub devices: u32,
    /// Readings per device.
    pub count: u64,
}

impl Phase {
    /// A phase of `devices` devices named `<prefix>-<n>`.
    pub fn new(prefix: &str, devices: u32, count: u64) -> Phase {
        Phase {
            prefix: prefix.into(),
            devices,
            count,
        }
    }

    /// The fleet config for this phase at `rate` readings/s per device
    /// (0 = as fast as the edges take them), spread over `endpoints`.
    pub fn fleet(&self, endpoints: Vec<String>, seed: u64, rate: f64) -> firmware_sim::FleetConfig {
        firmware_sim::FleetConfig {
            tenant: TENANT.into(),
            devices: self.devices,
            device_prefix: self.prefix.clone(),
            seed,
            endpoints,
            connections: Some(self.devices.min(20)),
            rate_per_device: rate,
            count: Some(self.count),
            qos: 1,
            start_ts_ms: Some(start_ts_ms()),
            ack_deadline: Duration::from_secs(120),
            username: Some(crate::cluster::login(TENANT).0),
            password: Some(crate::cluster::login(TENANT).1),
            ..Default::default()
        }
    }

    /// Readings the phase sends in all.
    pub fn total(&self) -> u64 {
        u64::from(self.devices) * self.count
    }
}

/// Runs a fleet to completion: every reading PUBACKed.
pub async fn run_fleet(cfg: firmware_sim::FleetConfig) -> anyhow::Result<firmware_sim::Summary> {
    let want = u64::from(cfg.devices) * cfg.count.unwrap_or(0);
    let s = firmware_sim::run(cfg, CancellationToken::new(), None).await?;
    anyhow::ensure!(s.complete, "fleet did not complete: {s}");
    anyhow::ensure!(s.acked == want, "{} readings acked, want {want}", s.acked);
    Ok(s)
}

/// Waits until central lists every device of `phases` with its full count,
/// then checks each device's raw records: exactly sequence numbers
/// `0..count`, once each.
pub async fn assert_exactly_once(c: &Cluster, phases: &[Phase], seed: u64) -> anyhow::Result<()> {
    let want: Vec<(String, u64)> = phases
        .iter()
        .flat_map(|p| {
            (0..p.devices).map(move |d| (firmware_sim::device_name(&p.prefix, d), p.count))
        })
        .collect();
    let total: u64 = phases.iter().map(Phase::total).sum();
    let stored = AtomicU64::new(0);
    let counts = wait_until("every reading stored", Duration::from_secs(90), || async {
        let counts = c.api.device_counts(TENANT).await.ok()?;
        stored.store(
            want.iter().filter_map(|(d, _)| counts.get(d)).sum::<u64>(),
            Ordering::Relaxed,
        );
        want.iter()
            .all(|(d, n)| counts.get(d).is_some_and(|got| got >= n))
            .then_some(counts)
    })
    .await
    .with_context(|| {
        format!(
            "seed {seed}: {} of {total} stored",
            stored.load(Ordering::Relaxed)
        )
    })?;
    let (from, to) = (start_ts_ms() - 3_600_000, start_ts_ms() + 3_600_000);
    for (dev, count) in &want {
        let n = counts.get(dev).copied().unwrap_or(0);
        anyhow::ensure!(
            n == *count,
            "seed {seed}: {dev} has {n} records, want {count}"
        );
        let recs = c.api.telemetry(TENANT, dev, from, to).await?;
        let seqs: Vec<u64> = recs.iter().filter_map(|r| r["seq"].as_u64()).collect();
        let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
        anyhow::ensure!(
            seqs.len() as u64 == *count && distinct == (0..*count).collect(),
            "seed {seed}: {dev}: {} records, {} distinct seqs, want exactly 0..{count}",
            seqs.len(),
            distinct.len()
        );
    }
    Ok(())
}
