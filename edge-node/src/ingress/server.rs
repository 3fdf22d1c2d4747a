//! [`IngressServer`]: binds the MQTT listener (and the optional MQTT-over-TLS
//! listener), loads the device credentials, and runs the accept loop and the
//! credentials reload loop.

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

use super::auth::AuthState;
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
    /// The MQTT-over-TLS listener, its address and acceptor.
    tls: Option<TlsListener>,
}

/// The MQTT-over-TLS listener, its address and acceptor.
struct TlsListener(TcpListener, SocketAddr, tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TlsListener").field(&self.1).finish()
    }
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
        let tls = match cfg.tls_listen {
            Some(addr) => {
                let acceptor = super::auth::tls::acceptor(&cfg.tls)?;
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| IngressError::Bind { addr, source })?;
                let local = l
                    .local_addr()
                    .map_err(|source| IngressError::Bind { addr, source })?;
                Some(TlsListener(l, local, acceptor))
            }
            None => None,
        };
        let metrics = IngressMetrics::register(registry);
        let auth = AuthState::new(&cfg.auth, registry, metrics.rejects.clone())?;
        let shared = Arc::new(Shared {
            auth,
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
            tls,
        })
    }

    /// The bound MQTT-over-TLS address, when `tls-listen` is set.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|t| t.1)
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
        tracker.spawn(
            self.shared
                .auth
                .store
                .clone()
                .run(self.shared.cfg.auth.reload_interval, shutdown.clone()),
        );
        if let Some(TlsListener(_, addr, _)) = &self.tls {
            tracing::info!(%addr, client_certs = ?self.shared.cfg.tls.client_certs, "MQTT-over-TLS ingress listening");
        }
        loop {
            let mut tls = None;
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(key) = released.recv() => {
                    sources.release(key);
                    continue;
                }
                r = self.listener.accept() => r,
                r = accept_tls(&self.tls) => r.map(|(s, p, a)| {
                    tls = Some(a);
                    (s, p)
                }),
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
                    let (shared, sink, shutdown) = (shared.clone(), sink.clone(), shutdown.clone());
                    let conn = async move {
                        match tls {
                            Some(acceptor) => {
                                super::auth::tls::run_tls_connection(
                                    acceptor, stream, peer, shared, sink, shutdown,
                                )
                                .await
                            }
                            None => run_connection(stream, peer, shared, sink, shutdown).await,
                        }
                    };
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
        drop(self.tls);
        tracker.close();
        tracker.wait().await;
        tracing::info!(addr = %self.local, "MQTT ingress stopped");
        Ok(())
    }
}

/// Accepts on the TLS listener, or never resolves without one.
async fn accept_tls(
    tls: &Option<TlsListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr, tokio_rustls::TlsAcceptor)> {
    match tls {
        Some(TlsListener(l, _, a)) => l.accept().await.map(|(s, p)| (s, p, a.clone())),
        None => std::future::pending().await,
    }
}
