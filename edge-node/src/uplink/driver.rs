//! The uplink driver: runs [`UplinkCore`] against quinn, the spool and the
//! clock. It owns no policy; every decision comes from the core.
//!
//! Batches are framed straight from spool bytes (the spool stores each
//! record in its bincode wire form), so the hot path neither decodes nor
//! re-encodes records. Each batch travels on its own bidirectional stream,
//! so many are in flight at once; heartbeats use a higher stream priority so
//! a telemetry backlog cannot starve them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_protocol::liveness::{EdgeHeartbeat, CLOSE_EDGE_SHUTDOWN};
use strata_protocol::scheduling::NodeFacts;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use strata_net::{rpc, NetError, NodeTls};
use strata_protocol::{frame, EdgeRequest, EdgeResponse, EdgeStatus, NodeIdentity};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::assign::{self, SharedTarget};
use super::core::{Command, CoreConfig, CoreStats, UplinkCore};
use crate::ingress::RegionRetention;
use crate::spool::Spool;

/// `[uplink]` section of the edge config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct UplinkConfig {
    /// Most records in one batch. Default 4096.
    pub max_batch_records: u64,
    /// Most bytes of records in one batch. Default 4 MiB (must stay well
    /// under the 16 MiB frame limit).
    pub max_batch_bytes: usize,
    /// Batches awaiting the hub's commit at once. Default 16.
    pub max_inflight: usize,
    /// First reconnect delay, ms. Default 100.
    pub backoff_min_ms: u64,
    /// Longest reconnect delay, ms. Default 5000.
    pub backoff_max_ms: u64,
    /// Heartbeat period, ms. The region's failure detector suspects an
    /// edge after a few missed ones (its `liveness.suspect-after`, 600 ms
    /// by default): keep it well under that. Default 250.
    pub heartbeat_ms: u64,
    /// A hub that leaves a heartbeat unanswered this long is treated as
    /// gone and the uplink reconnects (a killed hub sends nothing, so only
    /// silence reveals it), ms. Default 2000.
    pub heartbeat_timeout_ms: u64,
    /// How long one dial (QUIC, TLS and hello) may take before the next hub
    /// is tried, ms. Default 2000.
    pub connect_timeout_ms: u64,
    /// QUIC idle timeout of the link to the hub: no packet at all for this
    /// long ends the connection, on both ends (QUIC uses the smaller of the
    /// two ends' values). Keep-alives go out every quarter of it. Short, so
    /// the hub sees a killed edge's connection end soon (a killed process
    /// sends no close) and the edge leaves a dead hub soon. Humantime,
    /// 200ms to 10m, above `heartbeat-ms`. Default "1s".
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            max_batch_records: 4096,
            max_batch_bytes: 4 * 1024 * 1024,
            max_inflight: 16,
            backoff_min_ms: 100,
            backoff_max_ms: 5_000,
            heartbeat_ms: 250,
            heartbeat_timeout_ms: 2_000,
            connect_timeout_ms: 2_000,
            idle_timeout: Duration::from_secs(1),
        }
    }
}

impl UplinkConfig {
    /// Every problem with the values, prefixed with `uplink.`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_batch_records == 0 {
            p.push("uplink.max-batch-records: must be at least 1".to_owned());
        }
        if self.max_batch_bytes < 64 * 1024 || self.max_batch_bytes > frame::MAX_FRAME_LEN / 2 {
            p.push(format!(
                "uplink.max-batch-bytes: must be between 65536 and {}",
                frame::MAX_FRAME_LEN / 2
            ));
        }
        if self.max_inflight == 0 || self.max_inflight > 512 {
            p.push("uplink.max-inflight: must be between 1 and 512".to_owned());
        }
        if self.backoff_min_ms == 0 || self.backoff_min_ms > self.backoff_max_ms {
            p.push("uplink.backoff-min-ms: must be > 0 and <= backoff-max-ms".to_owned());
        }
        if self.heartbeat_ms < 100 {
            p.push("uplink.heartbeat-ms: must be at least 100".to_owned());
        }
        if self.connect_timeout_ms < 100 {
            p.push("uplink.connect-timeout-ms: must be at least 100".to_owned());
        }
        if self.heartbeat_timeout_ms < self.heartbeat_ms {
            p.push("uplink.heartbeat-timeout-ms: must be at least heartbeat-ms".to_owned());
        }
        if self.idle_timeout < Duration::from_millis(200)
            || self.idle_timeout > Duration::from_secs(600)
            || self.idle_timeout <= Duration::from_millis(self.heartbeat_ms)
        {
            p.push(format!(
                "uplink.idle-timeout: {} must be between 200ms and 10m and longer than heartbeat-ms",
                humantime::format_duration(self.idle_timeout)
            ));
        }
        p
    }

    /// Keep-alive and idle timeout of the link to the hub.
    pub fn link_timers(&self) -> strata_net::LinkTimers {
        strata_net::LinkTimers {
            keep_alive: self.idle_timeout / 4,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// Fatal uplink errors. Link failures are not errors: the core retries them.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The local QUIC endpoint could not be created.
    #[error("uplink of edge {edge}: {source}")]
    Endpoint {
        /// This edge.
        edge: String,
        /// Cause.
        source: NetError,
    },
    /// The spool failed; the uplink cannot continue without it.
    #[error("uplink of edge {edge}: spool: {reason}")]
    Spool {
        /// This edge.
        edge: String,
        /// Cause.
        reason: String,
    },
}

/// Uplink metrics.
#[derive(Clone)]
pub struct UplinkMetrics {
    connected: Gauge,
    inflight: Gauge,
    batches_sent: Counter,
    batches_committed: Counter,
    batches_resent: Counter,
    records_committed: Counter,
    link_failures: Counter,
    redirects: Counter,
    refused_batches: Counter,
    commit_latency: Histogram,
}

impl UplinkMetrics {
    /// Registers the uplink metrics under `strata_uplink_*`.
    pub fn register(reg: &mut Registry) -> Self {
        let m = UplinkMetrics {
            connected: Gauge::default(),
            inflight: Gauge::default(),
            batches_sent: Counter::default(),
            batches_committed: Counter::default(),
            batches_resent: Counter::default(),
            records_committed: Counter::default(),
            link_failures: Counter::default(),
            redirects: Counter::default(),
            refused_batches: Counter::default(),
            // Histogram clones share their buckets, so batch tasks observe
            // into the registered one.
            commit_latency: Histogram::new([
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ]),
        };
        let r = reg.sub_registry_with_prefix("strata_uplink");
        r.register(
            "connected",
            "1 while connected to a hub",
            m.connected.clone(),
        );
        r.register(
            "inflight_batches",
            "Batches awaiting commit",
            m.inflight.clone(),
        );
        r.register(
            "batches_sent",
            "Batches sent, including resends",
            m.batches_sent.clone(),
        );
        r.register(
            "batches_committed",
            "Batches committed by the hub",
            m.batches_committed.clone(),
        );
        r.register(
            "batches_resent",
            "Batches sent again after a failure",
            m.batches_resent.clone(),
        );
        r.register(
            "records_committed",
            "Records committed by the hub",
            m.records_committed.clone(),
        );
        r.register(
            "link_failures",
            "Failed dials and lost connections",
            m.link_failures.clone(),
        );
        r.register(
            "redirects",
            "Leader redirects followed",
            m.redirects.clone(),
        );
        r.register(
            "refused_batches",
            "Batches the hub answered Unavailable or Rejected (retried)",
            m.refused_batches.clone(),
        );
        r.register_with_unit(
            "commit_latency",
            "Batch send to hub commit",
            prometheus_client::registry::Unit::Seconds,
            m.commit_latency.clone(),
        );
        m
    }

    fn sync(&self, prev: &mut CoreStats, now: &CoreStats, inflight: usize, connected: bool) {
        self.batches_sent
            .inc_by(now.batches_sent - prev.batches_sent);
        self.batches_committed
            .inc_by(now.batches_committed - prev.batches_committed);
        self.batches_resent
            .inc_by(now.batches_resent - prev.batches_resent);
        self.records_committed
            .inc_by(now.records_committed - prev.records_committed);
        self.link_failures
            .inc_by(now.link_failures - prev.link_failures);
        self.redirects.inc_by(now.redirects - prev.redirects);
        self.inflight.set(inflight as i64);
        self.connected.set(i64::from(connected));
        *prev = now.clone();
    }
}

/// Builds the heartbeat status on demand.
pub type StatusFn = Arc<dyn Fn() -> EdgeStatus + Send + Sync>;

enum Event {
    Dialed(Result<quinn::Connection, NetError>),
    Lost(u64),
    Heartbeat(u64, EdgeResponse),
    Synced(Option<u64>),
    Batch {
        conn: u64,
        first_seq: u64,
        result: Result<EdgeResponse, NetError>,
    },
}

/// Runs the uplink of one edge node.
pub struct UplinkDriver {
    cfg: UplinkConfig,
    hubs: Vec<SocketAddr>,
    me: NodeIdentity,
    tls: Arc<NodeTls>,
    spool: Spool,
    status: StatusFn,
    metrics: UplinkMetrics,
    assignments: Option<SharedTarget>,
    retention: Option<RegionRetention>,
    facts: NodeFacts,
}

impl UplinkDriver {
    /// A driver for edge `me` sending to `hubs`.
    pub fn new(
        cfg: UplinkConfig,
        hubs: Vec<SocketAddr>,
        me: NodeIdentity,
        tls: Arc<NodeTls>,
        spool: Spool,
        status: StatusFn,
        metrics: UplinkMetrics,
    ) -> Self {
        UplinkDriver {
            cfg,
            hubs,
            me,
            tls,
            spool,
            status,
            metrics,
            assignments: None,
            retention: None,
            facts: NodeFacts::default(),
        }
    }

    /// Reports `facts` (labels and pools) in every heartbeat, for placement.
    pub fn with_facts(mut self, facts: NodeFacts) -> Self {
        self.facts = facts;
        self
    }

    /// Publishes the region's store retention into `cell` (the ingress's
    /// past bound on readings follows it).
    pub fn with_region_retention(mut self, cell: RegionRetention) -> Self {
        self.retention = Some(cell);
        self
    }

    /// Keeps `target` (the workload host) in step with the region's
    /// monitor assignments.
    pub fn with_assignments(mut self, target: SharedTarget) -> Self {
        self.assignments = Some(target);
        self
    }

    /// Runs until `shutdown`. Unsent records stay in the spool for next time.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), UplinkError> {
        let edge = self.me.id.clone();
        let endpoint = strata_net::client_endpoint_with(&self.tls, self.cfg.link_timers())
            .map_err(|source| UplinkError::Endpoint {
                edge: edge.clone(),
                source,
            })?;
        let seed: u64 = rand::random();
        tracing::debug!(%edge, seed, "uplink jitter seed");
        // This process's boot id, sent in every heartbeat: the region tells
        // a restart (new id) from a partition (same id) by it.
        let boot_id = loop {
            let b: u64 = rand::random();
            if b != 0 {
                break b;
            }
        };
        tracing::info!(%edge, boot_id = %format!("{boot_id:016x}"), "uplink starting");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let start = Instant::now();
        let now = || start.elapsed().as_millis() as u64;
        let stats = self.spool.stats();
        let mut core = UplinkCore::new(
            CoreConfig {
                hubs: self.hubs.clone(),
                max_batch_records: self.cfg.max_batch_records,
                max_inflight: self.cfg.max_inflight,
                backoff_min_ms: self.cfg.backoff_min_ms,
                backoff_max_ms: self.cfg.backoff_max_ms,
                heartbeat_ms: self.cfg.heartbeat_ms,
                heartbeat_timeout_ms: self.cfg.heartbeat_timeout_ms,
            },
            stats.first_unacked_seq,
            stats.next_seq,
            now(),
        );
        if let Some(t) = &self.assignments {
            core.set_applied_assignments(t.applied_version());
        }
        let mut known_end = stats.next_seq;
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let mut conn: Option<(u64, quinn::Connection)> = None;
        let mut prev_stats = CoreStats::default();
        let epoch = self.spool.epoch();

        loop {
            while let Some(cmd) = core.poll_command() {
                match cmd {
                    Command::Connect { hub } => {
                        let (ep, me, tx) = (endpoint.clone(), self.me.clone(), tx.clone());
                        let limit = Duration::from_millis(self.cfg.connect_timeout_ms);
                        tokio::spawn(async move {
                            let r = match tokio::time::timeout(
                                limit,
                                strata_net::connect(&ep, hub, &me),
                            )
                            .await
                            {
                                Ok(r) => r.map(|(c, _)| c),
                                Err(_) => Err(NetError::HandshakeTimeout {
                                    peer: hub.to_string(),
                                }),
                            };
                            let _ = tx.send(Event::Dialed(r));
                        });
                    }
                    Command::Disconnect => {
                        if let Some((_, c)) = conn.take() {
                            c.close(0u32.into(), b"redirected or silent");
                        }
                    }
                    Command::SendBatch {
                        conn: id,
                        first_seq,
                        max_records,
                    } => {
                        let records = self
                            .spool
                            .read(first_seq, max_records as usize, self.cfg.max_batch_bytes)
                            .map_err(|e| UplinkError::Spool {
                                edge: edge.clone(),
                                reason: e.to_string(),
                            })?;
                        // The spool returns a contiguous run from first_seq.
                        let end = match records.first() {
                            Some((s, _)) if *s == first_seq => first_seq + records.len() as u64,
                            _ => first_seq,
                        };
                        core.handle_batch_cut(id, first_seq, end);
                        if end == first_seq {
                            continue;
                        }
                        let Some((cid, c)) = conn.as_ref().filter(|(cid, _)| *cid == id) else {
                            continue;
                        };
                        let framed = batch_frame(&edge, epoch, first_seq, &records);
                        let (c, tx, cid, lat) = (
                            c.clone(),
                            tx.clone(),
                            *cid,
                            self.metrics.commit_latency.clone(),
                        );
                        tokio::spawn(async move {
                            let t0 = Instant::now();
                            let result = rpc::call_raw::<EdgeResponse>(&c, &framed).await;
                            if matches!(result, Ok(EdgeResponse::Committed { .. })) {
                                lat.observe(t0.elapsed().as_secs_f64());
                            }
                            let _ = tx.send(Event::Batch {
                                conn: cid,
                                first_seq,
                                result,
                            });
                        });
                    }
                    Command::SendHeartbeat { conn: id } => {
                        if let Some((_, c)) = conn.as_ref().filter(|(cid, _)| *cid == id) {
                            let req = EdgeRequest::Pulse(EdgeHeartbeat {
                                status: (self.status)(),
                                boot_id,
                                facts: self.facts.clone(),
                            });
                            let (c, tx) = (c.clone(), tx.clone());
                            let leases = self.assignments.clone();
                            tokio::spawn(async move {
                                let Ok(framed) = frame::frame_to_vec(&req) else {
                                    return;
                                };
                                // Leases are renewed from when the heartbeat
                                // was sent: the leader answered after it.
                                let sent_at = Instant::now();
                                // Only an answer proves the hub alive; silence is
                                // judged by the core's heartbeat timeout.
                                match rpc::call_raw_with_priority::<EdgeResponse>(&c, &framed, 10)
                                    .await
                                {
                                    Ok(resp) => {
                                        if let (
                                            EdgeResponse::PulseAck {
                                                lease_renewed: true,
                                                ..
                                            },
                                            Some(t),
                                        ) = (&resp, &leases)
                                        {
                                            t.lease_renewed(sent_at);
                                        }
                                        let _ = tx.send(Event::Heartbeat(id, resp));
                                    }
                                    Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
                                }
                            });
                        }
                    }
                    Command::SyncAssignments { conn: id, version } => {
                        let target = self.assignments.clone();
                        let c = conn
                            .as_ref()
                            .filter(|(cid, _)| *cid == id)
                            .map(|(_, c)| c.clone());
                        let (Some(target), Some(c)) = (target, c) else {
                            // Nobody to apply them (or the link is gone):
                            // record the version so the core stops asking.
                            core.handle_sync_done(self.assignments.is_none().then_some(version));
                            continue;
                        };
                        let (tx, e) = (tx.clone(), edge.clone());
                        tokio::spawn(async move {
                            let r = match assign::fetch(&c, &e, &target).await {
                                Ok(v) => {
                                    tracing::info!(edge = %e, version = v, "monitor assignments applied");
                                    Some(v)
                                }
                                Err(err) => {
                                    tracing::warn!(error = %err, "monitor assignment sync failed; will retry");
                                    None
                                }
                            };
                            let _ = tx.send(Event::Synced(r));
                        });
                    }
                    Command::RegionRetention { retention_ms } => {
                        if let Some(cell) = &self.retention {
                            if cell.publish(retention_ms) {
                                tracing::info!(%edge, retention_ms, "region store retention announced; readings older than it are refused at ingress");
                            }
                        }
                    }
                    Command::Trim { upto } => {
                        self.spool.trim(upto).map_err(|e| UplinkError::Spool {
                            edge: edge.clone(),
                            reason: e.to_string(),
                        })?;
                    }
                }
            }
            self.metrics.sync(
                &mut prev_stats,
                core.stats(),
                core.inflight(),
                core.is_connected(),
            );

            let deadline = core
                .poll_timeout()
                .map(|t| start + Duration::from_millis(t))
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        Event::Dialed(Ok(c)) => {
                            let id = core.handle_connected(now());
                            if id == 0 {
                                c.close(0u32.into(), b"stale");
                                continue;
                            }
                            tracing::info!(%edge, hub = %c.remote_address(), "uplink connected");
                            let (c2, tx) = (c.clone(), tx.clone());
                            tokio::spawn(async move {
                                c2.closed().await;
                                let _ = tx.send(Event::Lost(id));
                            });
                            conn = Some((id, c));
                        }
                        Event::Dialed(Err(e)) => {
                            tracing::warn!(%edge, error = %e, "uplink dial failed");
                            core.handle_connect_failed(now(), &mut rng);
                        }
                        Event::Synced(v) => core.handle_sync_done(v),
                        Event::Heartbeat(id, resp) => {
                            // The workload host asks for its set again with
                            // version 0 (a module missing, or an instance
                            // waiting for a lease: after a reboot, or one
                            // that ran out while the hub was unreachable);
                            // only a fetched set grants a lease.
                            if let Some(t) = &self.assignments {
                                core.refresh_applied_assignments(t.applied_version());
                            }
                            core.handle_heartbeat_response(id, &resp, now(), &mut rng)
                        }
                        Event::Lost(id) => {
                            if conn.as_ref().is_some_and(|(cid, _)| *cid == id) {
                                tracing::warn!(%edge, "uplink connection lost");
                                conn = None;
                            }
                            core.handle_connection_lost(id, now(), &mut rng);
                        }
                        Event::Batch { conn: id, first_seq, result } => match result {
                            Ok(resp) => {
                                if let EdgeResponse::Unavailable { reason } | EdgeResponse::Rejected { reason } = &resp {
                                    self.metrics.refused_batches.inc();
                                    tracing::warn!(%edge, first_seq, %reason, "hub refused batch; will retry");
                                }
                                core.handle_batch_response(id, first_seq, &resp, now(), &mut rng);
                            }
                            Err(e) => {
                                tracing::warn!(%edge, first_seq, error = %e, "batch send failed");
                                if let Some((cid, c)) = conn.take() {
                                    if cid == id {
                                        c.close(0u32.into(), b"batch failed");
                                    } else {
                                        conn = Some((cid, c));
                                    }
                                }
                                core.handle_connection_lost(id, now(), &mut rng);
                            }
                        },
                    }
                }
                _ = self.spool.wait_for(known_end) => {
                    known_end = self.spool.stats().next_seq;
                    core.handle_records_available(known_end);
                }
                _ = tokio::time::sleep_until(deadline.into()) => core.handle_timeout(now(), &mut rng),
            }
        }
        if let Some((_, c)) = conn {
            // The code says "stopping on purpose": the hub declares this
            // edge down at once (classified shutdown) instead of waiting for
            // missed heartbeats.
            c.close(CLOSE_EDGE_SHUTDOWN.into(), b"edge shutting down");
        }
        endpoint.wait_idle().await;
        Ok(())
    }
}

/// Frames `EdgeRequest::Batch` from spool payloads without decoding them:
/// bincode encodes the enum tag, the batch's fields and the `Vec` length as
/// plain concatenated varints, followed by each record's own encoding, which
/// is exactly what the spool holds.
pub fn batch_frame(edge: &str, epoch: u64, first_seq: u64, records: &[(u64, Bytes)]) -> Vec<u8> {
    let body_len: usize = records.iter().map(|(_, b)| b.len()).sum();
    let mut out = Vec::with_capacity(frame::HEADER_LEN + 32 + edge.len() + body_len);
    out.extend_from_slice(&[0; frame::HEADER_LEN]);
    // Variant 0 = EdgeRequest::Batch. Writing into a Vec cannot fail.
    let _ = bincode::encode_into_std_write(
        (0u32, edge, epoch, first_seq, records.len() as u64),
        &mut out,
        bincode::config::standard(),
    );
    for (_, b) in records {
        out.extend_from_slice(b);
    }
    let len = (out.len() - frame::HEADER_LEN) as u32;
    out[..frame::HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out
}

/// Encodes a telemetry record the way the spool stores it (and
/// `batch_frame` expects): a [`strata_protocol::SpoolEntry::Telemetry`],
/// i.e. variant index 0 followed by the record, written without cloning it.
pub fn encode_record(r: &strata_protocol::TelemetryRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(0); // bincode varint of variant index 0 (SpoolEntry::Telemetry)
                 // Encoding plain owned data into a Vec cannot fail.
    let _ = bincode::encode_into_std_write(r, &mut out, bincode::config::standard());
    out
}

/// Encodes any spool entry (alerts and derived metrics from monitors).
pub fn encode_entry(e: &strata_protocol::SpoolEntry) -> Vec<u8> {
    // Encoding plain owned data into a Vec cannot fail.
    bincode::encode_to_vec(e, bincode::config::standard()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_protocol::{Metric, SpoolEntry, TelemetryBatch, TelemetryRecord};

    #[test]
    fn batch_frame_decodes_as_a_normal_batch() {
        let recs: Vec<TelemetryRecord> = (0..3)
            .map(|i| TelemetryRecord {
                tenant: "t".into(),
                device: format!("d{i}"),
                ts_ms: 1_700_000_000_000 + i,
                seq: Some(i as u64),
                metrics: vec![Metric {
                    name: "x".into(),
                    value: i as f64,
                }],
                tags: vec![],
            })
            .collect();
        let spooled: Vec<(u64, Bytes)> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| (300 + i as u64, Bytes::from(encode_record(r))))
            .collect();
        let framed = batch_frame("edge-1", 42, 300, &spooled);
        let (msg, used): (EdgeRequest, usize) = frame::decode_frame(&framed).unwrap();
        assert_eq!(used, framed.len());
        assert_eq!(
            msg,
            EdgeRequest::Batch(TelemetryBatch {
                edge: "edge-1".into(),
                epoch: 42,
                first_seq: 300,
                entries: recs.into_iter().map(SpoolEntry::Telemetry).collect(),
            })
        );
    }

    #[test]
    fn config_problems_are_all_reported() {
        let cfg = UplinkConfig {
            max_batch_records: 0,
            max_inflight: 0,
            heartbeat_ms: 1,
            ..Default::default()
        };
        assert_eq!(cfg.problems().len(), 3, "{:?}", cfg.problems());
        assert!(UplinkConfig::default().problems().is_empty());
    }
}
