//! Wiring: opens the spool, starts the workload host (persisted monitors
//! run before any hub is reachable), binds the MQTT server, starts the
//! uplink and the metrics endpoint, and shuts them down in an order that
//! loses nothing: ingress, then the workload host (drains into the spool),
//! then the uplink, then the spool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strata_net::NodeTls;
use strata_protocol::scheduling::NodeFacts;
use strata_protocol::{EdgeStatus, NodeIdentity, NodeKind, TelemetryRecord};
use tokio_util::sync::CancellationToken;

use crate::config::EdgeConfig;
use crate::ingress::{run_bridge, BridgeMetrics, IngestSink, IngressServer, SinkError};
use crate::spool::Spool;
use crate::sync_lag::LagClock;
use crate::uplink::driver::{encode_record, StatusFn};
use crate::uplink::{UplinkDriver, UplinkMetrics};
use crate::workload::{HostOptions, WorkloadHost, WorkloadMetrics};

/// Shortest window the reported ingest rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Why the edge node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The config is invalid; every problem is listed.
    #[error("edge {edge}: invalid config:\n  - {}", problems.join("\n  - "))]
    Config {
        /// Edge name.
        edge: String,
        /// One line per problem.
        problems: Vec<String>,
    },
    /// The data directory (or the spool directory, when it lies outside
    /// it) could not be created private, or others can access it.
    #[error("edge {edge}: data directory: {source}")]
    DataDir {
        /// Edge name.
        edge: String,
        /// Cause; names the path and, for an open directory, the fix.
        source: strata_net::files::FilesError,
    },
    /// The spool could not be opened.
    #[error("edge {edge}: spool: {source}")]
    Spool {
        /// Edge name.
        edge: String,
        /// Cause.
        source: crate::spool::SpoolError,
    },
    /// TLS material or endpoints failed.
    #[error("edge {edge}: {source}")]
    Net {
        /// Edge name.
        edge: String,
        /// Cause.
        source: strata_net::NetError,
    },
    /// The MQTT server or bridge failed.
    #[error("edge {edge}: ingress: {source}")]
    Ingress {
        /// Edge name.
        edge: String,
        /// Cause.
        source: crate::ingress::IngressError,
    },
    /// The uplink failed fatally.
    #[error(transparent)]
    Uplink(#[from] crate::uplink::UplinkError),
    /// The workload host could not start.
    #[error(transparent)]
    Workload(#[from] crate::workload::WorkloadError),
}

/// The ingest sink: records become spool payloads in their wire encoding,
/// so the uplink can frame them without re-encoding. Once durable, the batch
/// is routed to the monitor instances that select it (never blocking).
struct SpoolSink {
    spool: Spool,
    accepted: Arc<AtomicU64>,
    monitors: WorkloadHost,
}

impl IngestSink for SpoolSink {
    fn submit(
        &self,
        records: Vec<TelemetryRecord>,
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        let payloads: Vec<Vec<u8>> = records.iter().map(encode_record).collect();
        let n = payloads.len() as u64;
        async move {
            self.spool
                .append(payloads)
                .await
                .map_err(|e| SinkError::Failed(e.to_string()))?;
            self.accepted.fetch_add(n, Ordering::Relaxed);
            self.monitors.route_owned(records);
            Ok(())
        }
    }
}

/// A started edge node: everything is bound, nothing runs yet.
pub struct EdgeNode {
    cfg: EdgeConfig,
    registry: Registry,
    spool: Spool,
    tls: Arc<NodeTls>,
    ingress: Option<IngressServer>,
    monitors: WorkloadHost,
}

impl EdgeNode {
    /// Validates the config, opens the spool (replaying it), starts the
    /// monitor host with the persisted assignments (no hub needed) and binds
    /// the MQTT listener, so callers learn bound addresses before [`run`].
    ///
    /// [`run`]: EdgeNode::run
    pub async fn start(cfg: EdgeConfig) -> Result<EdgeNode, EdgeError> {
        let edge = cfg.name.clone();
        let problems = cfg.problems();
        if !problems.is_empty() {
            return Err(EdgeError::Config { edge, problems });
        }
        let mut registry = Registry::default();
        // Everything below lives in private directories: device data,
        // monitor state. Directories inside a checked one are made 0700.
        for dir in cfg.private_dirs() {
            strata_net::files::ensure_private_dir(&dir).map_err(|source| EdgeError::DataDir {
                edge: edge.clone(),
                source,
            })?;
        }
        let tls = NodeTls::load(&cfg.tls).map_err(|source| EdgeError::Net {
            edge: edge.clone(),
            source,
        })?;
        let spool = Spool::open_std(cfg.spool_config())
            .await
            .map_err(|source| EdgeError::Spool {
                edge: edge.clone(),
                source,
            })?;
        let stats = spool.stats();
        tracing::info!(
            %edge,
            backlog = stats.records,
            first_unacked = stats.first_unacked_seq,
            next_seq = stats.next_seq,
            "spool open"
        );
        let data_dir = cfg.data_dir.clone();
        let mut sampler = crate::sysinfo::NodeSampler::new(&data_dir);
        let monitors = WorkloadHost::start(HostOptions {
            edge: edge.clone(),
            dir: cfg.monitors_dir(),
            cfg: cfg.monitors.clone(),
            spool: spool.clone(),
            sampler: Box::new(move |now| sampler.sample(now)),
            metrics: WorkloadMetrics::register(&mut registry),
        })
        .await?;
        let ingress = if cfg.serve_mqtt {
            match IngressServer::bind(cfg.ingress_config(), &mut registry).await {
                Ok(i) => Some(i),
                Err(source) => {
                    monitors.shutdown().await;
                    return Err(EdgeError::Ingress {
                        edge: edge.clone(),
                        source,
                    });
                }
            }
        } else {
            None
        };
        Ok(EdgeNode {
            cfg,
            registry,
            spool,
            tls,
            ingress,
            monitors,
        })
    }

    /// The workload host (status, routing; tests read instance status
    /// through it).
    pub fn monitors(&self) -> &WorkloadHost {
        &self.monitors
    }

    /// The MQTT address devices connect to, when serving MQTT.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.ingress.as_ref().map(|i| i.local_addr())
    }

    /// Runs until `shutdown`, then stops the ingress first (in-flight
    /// publishes finish and are acknowledged), then drains the monitor host
    /// (kv state persisted, pending alerts and metrics spooled), then the
    /// uplink, then closes the spool. `on_ready` is called once the metrics
    /// address is known.
    pub async fn run_with(
        mut self,
        shutdown: CancellationToken,
        on_ready: impl FnOnce(Option<SocketAddr>, Option<SocketAddr>),
    ) -> Result<(), EdgeError> {
        let edge = self.cfg.name.clone();
        let accepted = Arc::new(AtomicU64::new(0));
        let sink = Arc::new(SpoolSink {
            spool: self.spool.clone(),
            accepted: accepted.clone(),
            monitors: self.monitors.clone(),
        });
        let clients = self
            .ingress
            .as_ref()
            .map(|i| i.connected_clients())
            .unwrap_or_else(|| Arc::new(AtomicU32::new(0)));
        // The uplink writes the region's retention; the MQTT server and the
        // bridge bound readings by it.
        let retention = self
            .ingress
            .as_ref()
            .map(|i| i.region_retention())
            .unwrap_or_default();
        let uplink_metrics = UplinkMetrics::register(&mut self.registry);
        let spool_gauges = SpoolGauges::register(&mut self.registry);
        let bridge_metrics = BridgeMetrics::register(&mut self.registry);
        let registry = Arc::new(std::mem::take(&mut self.registry));

        let metrics_addr = match self.cfg.metrics_listen {
            Some(addr) => {
                match strata_net::metrics::serve(addr, registry, shutdown.clone()).await {
                    Ok(a) => Some(a),
                    Err(source) => {
                        self.monitors.shutdown().await;
                        self.spool.close().await;
                        return Err(EdgeError::Net {
                            edge: edge.clone(),
                            source,
                        });
                    }
                }
            }
            None => None,
        };
        on_ready(self.mqtt_addr(), metrics_addr);

        let ingress_stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(ingress) = self.ingress.take() {
            let (sink, stop) = (sink.clone(), ingress_stop.clone());
            let e = edge.clone();
            tasks.spawn(async move {
                ingress
                    .run(sink, stop)
                    .await
                    .map_err(|source| EdgeError::Ingress { edge: e, source })
            });
        }
        if let Some(bridge) = self.cfg.bridge.clone() {
            let (sink, stop) = (sink.clone(), ingress_stop.clone());
            let e = edge.clone();
            let bounds = self.cfg.ingress.live_bounds(retention.clone());
            tasks.spawn(async move {
                run_bridge(bridge, sink, bridge_metrics, bounds, stop)
                    .await
                    .map_err(|source| EdgeError::Ingress { edge: e, source })
            });
        }

        let status = status_fn(
            &edge,
            self.tls.expires_ms(),
            self.spool.clone(),
            accepted,
            clients,
            self.monitors.clone(),
        );
        let uplink = UplinkDriver::new(
            self.cfg.uplink.clone(),
            self.cfg.hub_addrs(),
            NodeIdentity {
                kind: NodeKind::Edge,
                id: edge.clone(),
                region: self.cfg.region.clone(),
            },
            self.tls.clone(),
            self.spool.clone(),
            status,
            uplink_metrics,
        )
        .with_assignments(Arc::new(self.monitors.clone()))
        .with_facts(NodeFacts {
            labels: self.cfg.monitors.labels.clone(),
            pools: self.cfg.monitors.pools.clone(),
        })
        .with_region_retention(retention);
        let uplink_stop = CancellationToken::new();
        let uplink_task = tokio::spawn(uplink.run(uplink_stop.clone()));

        let gauges_spool = self.spool.clone();
        let gauges_stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = gauges_stop.cancelled() => break,
                    _ = tick.tick() => spool_gauges.update(&gauges_spool),
                }
            }
        });

        // Wait for shutdown, or for a component to fail.
        let mut result = Ok(());
        tokio::select! {
            _ = shutdown.cancelled() => {}
            Some(r) = tasks.join_next() => {
                if let Ok(Err(e)) = r {
                    tracing::error!(%edge, error = %e, "ingress stopped");
                    result = Err(e);
                }
            }
        }
        ingress_stop.cancel();
        while let Some(r) = tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(%edge, error = %e, "ingress stopped with error");
            }
        }
        // Ingress is stopped: nothing more is routed. Let the monitors finish
        // what is queued and put their outputs into the spool while the
        // uplink still runs.
        self.monitors.shutdown().await;
        uplink_stop.cancel();
        match uplink_task.await {
            Ok(Err(e)) => result = result.and(Err(e.into())),
            Err(e) => tracing::error!(%edge, error = %e, "uplink task panicked"),
            Ok(Ok(())) => {}
        }
        self.spool.close().await;
        tracing::info!(%edge, "edge node stopped");
        result
    }

    /// [`EdgeNode::run_with`] without a readiness callback.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), EdgeError> {
        self.run_with(shutdown, |_, _| {}).await
    }
}

/// Starts and runs an edge node until `shutdown`.
pub async fn run(cfg: EdgeConfig, shutdown: CancellationToken) -> Result<(), EdgeError> {
    EdgeNode::start(cfg).await?.run(shutdown).await
}

fn status_fn(
    edge: &str,
    cert_expires_ms: Option<i64>,
    spool: Spool,
    accepted: Arc<AtomicU64>,
    clients: Arc<AtomicU32>,
    monitors: WorkloadHost,
) -> StatusFn {
    let edge = edge.to_owned();
    let started = Instant::now();
    // (time, accepted) at the previous heartbeat, for the ingest rate.
    // (window start, records accepted then, the last full window's rate).
    // Status is read at every heartbeat and on demand, and devices publish
    // in bursts: a rate over the time since the previous read would swing
    // between 0 and a multiple of the truth, so it is measured over
    // windows of at least RATE_WINDOW.
    let last = Mutex::new((Instant::now(), 0u64, None::<f64>));
    let lag = Mutex::new(LagClock::default());
    Arc::new(move || {
        let s = spool.stats();
        let now = Instant::now();
        let sync_lag_ms = match lag.lock() {
            Ok(mut l) => l.observe(
                started.elapsed().as_millis() as u64,
                s.first_unacked_seq,
                s.next_seq,
            ),
            Err(_) => 0,
        };
        let total = accepted.load(Ordering::Relaxed);
        let rate = match last.lock() {
            Ok(mut l) => {
                let dt = now.duration_since(l.0).as_secs_f64();
                let running = (dt > 0.0).then(|| total.saturating_sub(l.1) as f64 / dt);
                if dt >= RATE_WINDOW.as_secs_f64() {
                    *l = (now, total, running);
                }
                // Before the first full window: what there is so far.
                l.2.or(running).unwrap_or(0.0)
            }
            Err(_) => 0.0,
        };
        let m = monitors.status();
        EdgeStatus {
            edge: edge.clone(),
            capacity: m.capacity,
            reserved: m.reserved,
            node: m.node,
            instances: m.instances,
            assignments_version: m.assignments_version,
            spool_records: s.records,
            spool_bytes: s.bytes_on_disk,
            ingest_rate: rate,
            connected_clients: clients.load(Ordering::Relaxed),
            uptime_ms: started.elapsed().as_millis() as u64,
            sync_lag_ms,
            cert_expires_ms,
        }
    })
}

/// Spool depth as gauges, refreshed every second.
struct SpoolGauges {
    records: Gauge,
    bytes: Gauge,
    segments: Gauge,
    full: Gauge,
    fsyncs: Gauge,
    appended: Gauge,
}

impl SpoolGauges {
    fn register(reg: &mut Registry) -> Self {
        let g = SpoolGauges {
            records: Gauge::default(),
            bytes: Gauge::default(),
            segments: Gauge::default(),
            full: Gauge::default(),
            fsyncs: Gauge::default(),
            appended: Gauge::default(),
        };
        let r = reg.sub_registry_with_prefix("strata_spool");
        r.register(
            "records",
            "Records not yet committed by the hub",
            g.records.clone(),
        );
        r.register("bytes", "Bytes on disk", g.bytes.clone());
        r.register("segments", "Segment files", g.segments.clone());
        r.register(
            "full",
            "1 while appends wait for space (backpressure)",
            g.full.clone(),
        );
        r.register("fsyncs", "Group commits (fsyncs) so far", g.fsyncs.clone());
        r.register("appended", "Records appended so far", g.appended.clone());
        g
    }

    fn update(&self, spool: &Spool) {
        let s = spool.stats();
        self.records.set(s.records as i64);
        self.bytes.set(s.bytes_on_disk as i64);
        self.segments.set(s.segments as i64);
        self.full.set(i64::from(s.full));
        self.fsyncs.set(s.fsyncs as i64);
        self.appended.set(s.appended_total as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A data directory others can enter is refused before anything is
    /// opened, with the path and the fix in the error.
    #[tokio::test]
    async fn an_open_data_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = strata_net::Pki::ensure(&tmp.path().join("pki")).unwrap();
        let data = tmp.path().join("edge-1");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cfg = EdgeConfig {
            name: "edge-1".into(),
            data_dir: data.clone(),
            hubs: vec!["127.0.0.1:1".into()],
            tls: pki.node("edge-1").unwrap(),
            ..EdgeConfig::default()
        };
        cfg.ingress.listen = "127.0.0.1:0".parse().unwrap();
        let err = EdgeNode::start(cfg).await.err().unwrap();
        let msg = err.to_string();
        assert!(matches!(err, EdgeError::DataDir { .. }), "{msg}");
        assert!(
            msg.contains(&data.display().to_string()) && msg.contains("chmod -R go-rwx"),
            "{msg}"
        );
        assert_eq!(
            std::fs::read_dir(&data).unwrap().count(),
            0,
            "nothing created"
        );
    }
}
