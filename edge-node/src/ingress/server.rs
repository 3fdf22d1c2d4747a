//! [`IngressServer`]: binds the MQTT listener (and the optional MQTT-over-TLS
//! listener), loads the device credentials, and runs the accept loop and the
//! credentials reload loop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::AuthState;
use super::driver::{run_connection, Shared};
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
                r = self.listener.accept() => r,
                r = accept_tls(&self.tls) => r.map(|(s, p, a)| {
                    tls = Some(a);
                    (s, p)
                }),
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
                    if let Some(acceptor) = tls {
                        tracker.spawn(super::auth::tls::run_tls_connection(
                            acceptor,
                            stream,
                            peer,
                            shared.clone(),
                            sink.clone(),
                            shutdown.clone(),
                        ));
                        continue;
                    }
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
