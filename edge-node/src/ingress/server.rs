//! [`IngressServer`]: binds the MQTT listener and runs the accept loop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::driver::{run_connection, Shared};
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
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.listener.accept() => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let shared = &self.shared;
                    if shared.open_conns.load(Ordering::Acquire) >= shared.cfg.max_connections {
                        shared.metrics.connections_refused.inc();
                        tracing::warn!(%peer, max = shared.cfg.max_connections, "refusing MQTT connection: max-connections reached");
                        drop(stream);
                        continue;
                    }
                    shared.open_conns.fetch_add(1, Ordering::AcqRel);
                    shared.metrics.connections.inc();
                    shared.metrics.connections_total.inc();
                    tracker.spawn(run_connection(
                        stream,
                        peer,
                        shared.clone(),
                        sink.clone(),
                        shutdown.clone(),
                    ));
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
