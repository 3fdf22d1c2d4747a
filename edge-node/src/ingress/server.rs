//! [`IngressServer`]: binds the MQTT listener and runs the accept loop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::bounds::RegionRetention;
use super::driver::{run_connection, Shared};
use super::limits::{SourceKey, SourceLimits, SourceSlot};
use super::metrics::LogLimiter;
use super::router::Router;
use super::{IngestSink, IngressConfig, IngressError, IngressMetrics};

/// The embedded MQTT server for devices.
#[derive(Debug)]
pub struct IngressServer {
    listener: TcpListener,
    local: SocketAddr,
    shared: Arc<Shared>,
}

impl IngressServer {
    /// Validates `cfg`, binds the listener and registers metrics.
    pub async fn bind(cfg: IngressConfig, registry: &mut Registry) -> Result<Self, IngressError> {
        cfg.validate()?;
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| IngressError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
        let local = listener.local_addr().map_err(|source| IngressError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let metrics = IngressMetrics::register(registry);
        let shared = Arc::new(Shared {
            router: Router::new(
                metrics.subscriber_drops.clone(),
                metrics.subscribers.clone(),
            ),
            cfg,
            metrics,
            connected: Arc::new(AtomicU32::new(0)),
            open_conns: AtomicUsize::new(0),
            conn_seq: AtomicU64::new(1),
            epoch: Instant::now(),
            retention: RegionRetention::new(),
        });
        Ok(IngressServer {
            listener,
            local,
            shared,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Number of MQTT clients past CONNACK, live (for edge heartbeats).
    pub fn connected_clients(&self) -> Arc<AtomicU32> {
        self.shared.connected.clone()
    }

    /// The metric handles (shared with the server).
    pub fn metrics(&self) -> IngressMetrics {
        self.shared.metrics.clone()
    }

    /// The region's retention as this server sees it: the uplink publishes
    /// into it and every connection's past bound follows it.
    pub fn region_retention(&self) -> RegionRetention {
        self.shared.retention.clone()
    }

    /// Serves until `shutdown` is cancelled; then stops accepting, lets every
    /// connection finish its in-flight submits and send their acks (v5
    /// clients get DISCONNECT 0x8B), and returns.
    pub async fn run<S: IngestSink>(
        self,
        sink: Arc<S>,
        shutdown: CancellationToken,
    ) -> Result<(), IngressError> {
        let tracker = TaskTracker::new();
        tracing::info!(addr = %self.local, "MQTT ingress listening");
        // This loop owns the per-source table; ended connections send their
        // source back through `released` (see `limits`).
        let mut sources = SourceLimits::new(self.shared.cfg.max_connections_per_ip);
        let (released_tx, mut released) = mpsc::unbounded_channel::<SourceKey>();
        let mut refusal_log = LogLimiter::new(10, 10_000);
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(key) = released.recv() => {
                    sources.release(key);
                    continue;
                }
                r = self.listener.accept() => r,
            };
            // A client that just left must not count against its successor.
            while let Ok(key) = released.try_recv() {
                sources.release(key);
            }
            match accepted {
                Ok((stream, peer)) => {
                    let shared = &self.shared;
                    if shared.open_conns.load(Ordering::Acquire) >= shared.cfg.max_connections {
                        shared.metrics.connections_refused.inc();
                        tracing::warn!(%peer, max = shared.cfg.max_connections, "refusing MQTT connection: max-connections reached");
                        drop(stream);
                        continue;
                    }
                    let key = SourceKey::of(peer.ip());
                    if !sources.try_admit(key) {
                        shared.metrics.connections_refused_per_ip.inc();
                        let now_ms = shared.epoch.elapsed().as_millis() as u64;
                        let (allow, suppressed) = refusal_log.allow(now_ms);
                        if allow {
                            tracing::warn!(%peer, source = %key, max = shared.cfg.max_connections_per_ip, suppressed, "refusing MQTT connection: max-connections-per-ip reached");
                        }
                        drop(stream);
                        continue;
                    }
                    let slot = SourceSlot::new(key, released_tx.clone());
                    shared.open_conns.fetch_add(1, Ordering::AcqRel);
                    shared.metrics.connections.inc();
                    shared.metrics.connections_total.inc();
                    let conn = run_connection(
                        stream,
                        peer,
                        shared.clone(),
                        sink.clone(),
                        shutdown.clone(),
                    );
                    tracker.spawn(async move {
                        conn.await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Usually EMFILE or a connection reset before accept:
                    // transient. Back off briefly instead of spinning.
                    tracing::warn!(addr = %self.local, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(self.listener);
        tracker.close();
        tracker.wait().await;
        tracing::info!(addr = %self.local, "MQTT ingress stopped");
        Ok(())
    }
}
