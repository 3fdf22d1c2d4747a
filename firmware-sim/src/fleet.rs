//! [`run`]: validates the config, spreads devices over connections and
//! endpoints, spawns one [`ConnectionDriver`] per connection, reports
//! progress once per second and returns the final [`Summary`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, FleetConfig};
use crate::driver::ConnectionDriver;

/// Why a fleet run failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid; lists every problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An endpoint refused a connection for good (bad credentials, not
    /// authorised, bad client id): retrying cannot help.
    #[error("endpoint {endpoint} refused connection {connection} (client id {client_id}): {code}")]
    Refused {
        /// The endpoint, `host:port`.
        endpoint: String,
        /// Connection index.
        connection: u32,
        /// MQTT client id used.
        client_id: String,
        /// CONNACK return code.
        code: String,
    },
    /// A reading could not be encoded (a bug in the simulator).
    #[error("cannot encode reading {seq} of device {device}: {detail}")]
    Encode {
        /// Device name.
        device: String,
        /// Reading index.
        seq: u64,
        /// Encoder message.
        detail: String,
    },
    /// A connection task panicked or was cancelled by the runtime.
    #[error("connection task failed: {detail}")]
    Task {
        /// Join error text.
        detail: String,
    },
}

/// Latency histogram over 1 µs ..= 1 h with 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds (low ≥ 1, high ≥ 2 * low, sigfig ≤ 5): cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Counters shared by all connections of a run.
#[derive(Debug)]
pub(crate) struct Shared {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub retransmits: AtomicU64,
    pub reconnects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub failovers: AtomicU64,
    pub dropped: AtomicU64,
    pub unknown_acks: AtomicU64,
    pub connected: AtomicU64,
    /// All PUBACK latencies of the run, µs.
    latency: Mutex<Histogram<u64>>,
    /// Latencies since the last progress line, µs.
    window: Mutex<Histogram<u64>>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            retransmits: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            unknown_acks: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
            window: Mutex::new(new_histogram()),
        }
    }

    pub(crate) fn record_latencies(&self, h: &Histogram<u64>) {
        // Same bounds everywhere, so `add` cannot fail; a poisoned lock
        // only means another connection panicked mid-add: keep counting.
        for m in [&self.latency, &self.window] {
            let _ = m.lock().unwrap_or_else(PoisonError::into_inner).add(h);
        }
    }
}

/// Live numbers, passed to the progress callback once per second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// Time since the run started.
    pub elapsed: Duration,
    /// Connections currently up.
    pub connected: u64,
    /// Connections in the run.
    pub connections: u32,
    /// Readings published (first transmissions).
    pub sent: u64,
    /// Readings acknowledged.
    pub acked: u64,
    /// Published but not yet acknowledged (QoS 1).
    pub in_flight: u64,
    /// Acked (QoS 1) or sent (QoS 0) readings per second over the last
    /// interval.
    pub rate: f64,
    /// 99th percentile PUBACK latency over the last interval, µs.
    pub p99_us: u64,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>6.1}s] conn {}/{}  sent {}  acked {}  in-flight {}  {:.0}/s  p99 {:.2}ms",
            self.elapsed.as_secs_f64(),
            self.connected,
            self.connections,
            self.sent,
            self.acked,
            self.in_flight,
            self.rate,
            self.p99_us as f64 / 1000.0
        )
    }
}

/// Callback receiving a [`Progress`] once per second.
pub type ProgressFn = Box<dyn FnMut(&Progress) + Send>;

/// PUBACK latency distribution, µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of acknowledged publishes measured.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> Self {
        LatencySummary {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Tenant simulated.
    pub tenant: String,
    /// Devices simulated.
    pub devices: u32,
    /// MQTT connections used.
    pub connections: u32,
    /// QoS of the publishes.
    pub qos: u8,
    /// Timestamp of reading 0 (ms since the epoch), to recompute readings
    /// with [`crate::model::reading`].
    pub start_ts_ms: i64,
    /// Readings published at least once (first transmissions).
    pub sent: u64,
    /// Readings acknowledged by a PUBACK (QoS 1; 0 with QoS 0).
    pub acked: u64,
    /// QoS 1 readings never acknowledged (deadline passed or aborted).
    pub unacked: u64,
    /// Publishes sent again with DUP after a reconnect.
    pub retransmits: u64,
    /// Connections re-established after a loss.
    pub reconnects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Times a connection moved to another endpoint (`failover`).
    pub failovers: u64,
    /// Readings suppressed by dropout anomalies (never sent).
    pub dropped: u64,
    /// PUBACKs for packet ids with nothing outstanding (broker bugs).
    pub unknown_acks: u64,
    /// Every connection came up, every published reading was acknowledged
    /// (QoS 1) or written (QoS 0), and, with `count`, all `count` readings
    /// of every device were generated.
    pub complete: bool,
    /// Wall time of the run, seconds.
    pub elapsed_secs: f64,
    /// Acked (QoS 1) or sent (QoS 0) readings per second.
    pub throughput: f64,
    /// PUBACK latency, µs.
    pub latency_us: LatencySummary,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        writeln!(
            f,
            "tenant {}: {} devices over {} connections, QoS {}, {:.2}s",
            self.tenant, self.devices, self.connections, self.qos, self.elapsed_secs
        )?;
        writeln!(
            f,
            "sent {}  acked {}  unacked {}  retransmits {}  reconnects {}  connect failures {}  failovers {}  dropped by anomaly {}",
            self.sent, self.acked, self.unacked, self.retransmits, self.reconnects, self.connect_failures, self.failovers, self.dropped
        )?;
        writeln!(f, "throughput {:.0} readings/s", self.throughput)?;
        writeln!(
            f,
            "ack latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        )?;
        write!(
            f,
            "{}",
            if self.complete {
                "complete"
            } else {
                "INCOMPLETE: not every reading was acknowledged"
            }
        )
    }
}

/// Which devices each connection carries: connection `c` talks to endpoint
/// `c % endpoints`, and device `d` goes to one of the connections of
/// endpoint `d % endpoints`, round-robin. Requires
/// `connections ≥ min(endpoints, devices)`, as validation ensures.
pub fn assign(devices: u32, connections: u32, endpoints: u32) -> Vec<Vec<u32>> {
    let (c_total, e_total) = (connections.max(1), endpoints.max(1));
    let mut plan = vec![Vec::new(); c_total as usize];
    for d in 0..devices {
        let e = d % e_total;
        let per_endpoint = (c_total.saturating_sub(e)).div_ceil(e_total).max(1);
        let c = e + ((d / e_total) % per_endpoint) * e_total;
        if let Some(list) = plan.get_mut(c as usize) {
            list.push(d);
        }
    }
    plan
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// Runs the fleet until `count` readings per device are acknowledged, the
/// `duration` is over or `shutdown` is cancelled (then in-flight publishes
/// are drained for up to `ack_deadline`). Calls `progress` once per second.
pub async fn run(
    cfg: FleetConfig,
    shutdown: CancellationToken,
    mut progress: Option<ProgressFn>,
) -> Result<Summary, SimError> {
    cfg.validate()?;
    let mut cfg = cfg;
    let start_ts_ms = cfg.start_ts_ms.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    });
    cfg.start_ts_ms = Some(start_ts_ms);
    let cfg = Arc::new(cfg);
    let connections = cfg.effective_connections();
    let client_prefix = cfg.client_id_prefix.clone().unwrap_or_else(|| {
        format!(
            "sim-{}-{}-{}",
            cfg.tenant,
            std::process::id(),
            RUNS.fetch_add(1, Relaxed)
        )
    });
    let shared = Arc::new(Shared::new());
    let stop = shutdown.child_token();
    let abort = CancellationToken::new();
    let started = Instant::now();
    tracing::info!(tenant = %cfg.tenant, devices = cfg.devices, connections, endpoints = ?cfg.endpoints,
        rate_per_device = cfg.rate_per_device, trace = cfg.trace.is_some(), count = ?cfg.count, qos = cfg.qos, start_ts_ms, "fleet starting");

    let mut tasks = JoinSet::new();
    let endpoints = u32::try_from(cfg.endpoints.len()).unwrap_or(u32::MAX);
    for (c, devices) in (0u32..).zip(assign(cfg.devices, connections, endpoints)) {
        let driver = ConnectionDriver::new(
            c,
            (c % endpoints) as usize,
            format!("{client_prefix}-{c}"),
            devices,
            cfg.clone(),
            shared.clone(),
            stop.clone(),
            abort.clone(),
        );
        tasks.spawn(driver.run());
    }

    let mut ticker =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = cfg.duration.map(|d| started + d);
    let end_timer = tokio::time::sleep_until(end.unwrap_or(started));
    tokio::pin!(end_timer);
    let (mut last_count, mut last_tick) = (0u64, started);
    let (mut all_finished, mut fatal) = (true, None);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(finished))) => all_finished &= finished,
                Some(Ok(Err(e))) => {
                    tracing::error!(error = %e, "fleet aborting");
                    fatal.get_or_insert(e);
                    abort.cancel();
                }
                Some(Err(e)) => {
                    fatal.get_or_insert(SimError::Task { detail: e.to_string() });
                    abort.cancel();
                }
            },
            _ = &mut end_timer, if end.is_some() && !stop.is_cancelled() => {
                tracing::info!("duration over; draining in-flight publishes");
                stop.cancel();
            }
            now = ticker.tick(), if progress.is_some() => {
                let count = if cfg.qos == 0 { shared.sent.load(Relaxed) } else { shared.acked.load(Relaxed) };
                let secs = now.duration_since(last_tick).as_secs_f64().max(1e-3);
                let p = snapshot(&shared, connections, started, (count - last_count) as f64 / secs, cfg.qos);
                (last_count, last_tick) = (count, now);
                if let Some(f) = progress.as_mut() {
                    f(&p);
                }
            }
        }
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = shared.sent.load(Relaxed);
    let acked = if cfg.qos == 0 {
        0
    } else {
        shared.acked.load(Relaxed)
    };
    let latency = LatencySummary::of(
        &shared
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let summary = Summary {
        tenant: cfg.tenant.clone(),
        devices: cfg.devices,
        connections,
        qos: cfg.qos,
        start_ts_ms,
        sent,
        acked,
        unacked: if cfg.qos == 0 { 0 } else { sent - acked },
        retransmits: shared.retransmits.load(Relaxed),
        reconnects: shared.reconnects.load(Relaxed),
        connect_failures: shared.connect_failures.load(Relaxed),
        failovers: shared.failovers.load(Relaxed),
        dropped: shared.dropped.load(Relaxed),
        unknown_acks: shared.unknown_acks.load(Relaxed),
        complete: all_finished,
        elapsed_secs: elapsed,
        throughput: if cfg.qos == 0 { sent } else { acked } as f64 / elapsed.max(1e-9),
        latency_us: latency,
    };
    tracing::info!(sent, acked, complete = summary.complete, "fleet done");
    Ok(summary)
}

fn snapshot(s: &Shared, connections: u32, started: Instant, rate: f64, qos: u8) -> Progress {
    let mut window = s.window.lock().unwrap_or_else(PoisonError::into_inner);
    let p99_us = window.value_at_quantile(0.99);
    window.reset();
    let (sent, acked) = (s.sent.load(Relaxed), s.acked.load(Relaxed));
    Progress {
        elapsed: started.elapsed(),
        connected: s.connected.load(Relaxed),
        connections,
        sent,
        acked,
        in_flight: if qos == 0 {
            0
        } else {
            sent.saturating_sub(acked)
        },
        rate,
        p99_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_respects_endpoints_and_balances() {
        for (devices, conns, eps) in [
            (10, 4, 2),
            (7, 3, 3),
            (1000, 100, 3),
            (5, 5, 1),
            (2, 2, 3),
            (9, 2, 2),
        ] {
            let plan = assign(devices, conns, eps);
            assert_eq!(plan.len(), conns as usize);
            let mut seen = vec![0u32; devices as usize];
            for (c, list) in plan.iter().enumerate() {
                for d in list {
                    assert_eq!(d % eps, c as u32 % eps, "device {d} on connection {c}");
                    seen[*d as usize] += 1;
                }
            }
            assert!(seen.iter().all(|n| *n == 1), "{devices}/{conns}/{eps}");
            let sizes: Vec<usize> = plan.iter().map(Vec::len).filter(|n| *n > 0).collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(
                hi - lo <= devices as usize / conns as usize / 2 + 2,
                "unbalanced {sizes:?}"
            );
        }
    }
}
