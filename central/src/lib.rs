//! Strata central: federates the regions and serves the HTTP JSON API that
//! users, `strata` and tests use to see the cluster, read telemetry, submit
//! device monitors (modules and specs) and read their alerts.
//!
//! Central's replicas form their own Raft group (`strata-consensus`, the
//! glue the hubs run; a group of one by default) holding what central
//! itself owns: the operator token's digest, the region registry and
//! tenants ([`state`], [`replica`]). Any replica serves the API; writes go
//! through the leader, reads are linearizable unless `?stale=true`.
//!
//! Everything about the regions' data comes from their hubs, dialed over
//! mutual-TLS QUIC. Reads go to each region's Raft leader (or, with no
//! leader, to any replica, marked `stale`); status fans out to every
//! replica, and an unreachable one is listed, not fatal.
//!
//! Every `/api/v1` route needs the operator token (`Authorization: Bearer`,
//! created on first start in `<data-dir>/operator.token`, mode 0600);
//! `/health` is open, `/metrics` open unless configured otherwise.
//!
//! # Layout
//! - [`config`]: `central.toml` (listen address, TLS, regions, timeouts,
//!   data dir, `[auth]`, `[http]` limits, `[cluster]`), validated with every
//!   problem reported at once.
//! - [`state`]: the replicated state and its pure `apply`.
//! - [`replica`]: the Raft machine (state file checkpoints), starting the
//!   replica, the [`replica::Cluster`] handle (writes through the leader,
//!   ReadIndex reads) and the bootstrap of the operator digest and regions.
//! - [`auth`]: principals, actions and the pure policy; the token file and
//!   `Bearer` parsing.
//! - [`region`]: the [`region::RegionApi`] trait the HTTP layer talks to, its
//!   QUIC implementation [`region::RegionClient`], and the sans-IO leader
//!   tracker / request router it drives ([`region::tracker`]).
//! - [`http`]: [`http::app`] builds the axum router from an
//!   [`http::AppState`]: the route table with each route's action, the
//!   per-route guard, JSON error body, query parsing, views.
//! - [`serve`]: the HTTP/1.1 accept loop with connection limits (header and
//!   idle timeouts, connection cap, 431) and the request timeout.
//! - [`metrics`]: Prometheus metrics (HTTP requests, refused requests,
//!   limits that fired, hub latency and errors).
//! - `main.rs`: the thin `central --config central.toml` binary.
//!
//! This crate must not depend on `region-hub` or `edge-node`: it speaks to
//! hubs only through `strata-protocol` messages over `strata-net`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub mod auth;
pub mod config;
pub mod console;
pub mod global;
pub mod http;
pub mod metrics;
pub mod region;
pub mod replica;
pub mod serve;
pub mod state;

pub use config::{AuthConfig, CentralConfig, ConfigError, HttpConfig, RegionConfig};
pub use http::{app, AppError, AppState};
pub use region::{RegionApi, RegionClient, RegionError};

/// How long shutdown waits for hub connections to close cleanly.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Errors starting or running the central server.
#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS material could not be loaded or the QUIC endpoint not created.
    #[error("central TLS / QUIC setup: {0}")]
    Net(#[from] strata_net::NetError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen for HTTP on {addr}: {error}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// OS error.
        error: std::io::Error,
    },
    /// The data dir or the operator token file could not be set up.
    #[error(transparent)]
    Token(#[from] auth::TokenError),
    /// Central's replica could not start or stopped on a fatal error.
    #[error(transparent)]
    Replica(#[from] replica::StartError),
}

/// A bound, not yet serving, central server.
pub struct Central {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: axum::Router,
    limits: serve::ServeLimits,
    limit_metrics: metrics::LimitMetrics,
    token_file: std::path::PathBuf,
    endpoint: quinn::Endpoint,
    clients: Vec<Arc<RegionClient>>,
    /// Ends the event streams on shutdown.
    streams: CancellationToken,
    /// The Raft peer listener's address.
    peer_addr: SocketAddr,
    /// Stops the replica (after the API drained).
    cluster_stop: CancellationToken,
    /// Resolves when the replica's node stopped.
    cluster_done: tokio::sync::oneshot::Receiver<Result<(), strata_consensus::NodeError>>,
}

/// Validates `cfg`, sets up the data dir and operator token, loads TLS,
/// creates the QUIC endpoint and the region clients, and binds the HTTP
/// listener. Hubs are dialed lazily, so central starts even while every hub
/// is down.
pub async fn bind(cfg: CentralConfig) -> Result<Central, CentralError> {
    bind_on(cfg, Listeners::default()).await
}

/// Sockets bound before [`bind_on`] (e.g. to port 0, by a test that needs
/// every replica's addresses before starting any); `None` binds the
/// configured address.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The HTTP API listener instead of `listen`.
    pub http: Option<std::net::TcpListener>,
    /// The Raft peer socket instead of `cluster.peer-listen`.
    pub peer: Option<std::net::UdpSocket>,
}

/// [`bind`] on sockets already bound.
pub async fn bind_on(cfg: CentralConfig, listeners: Listeners) -> Result<Central, CentralError> {
    cfg.validate()?;
    let auth = auth::setup(&cfg)?;
    match auth.origin {
        auth::TokenOrigin::Created => {
            tracing::info!(token_file = %auth.token_file.display(), "created the operator token")
        }
        auth::TokenOrigin::Loaded => {
            tracing::info!(token_file = %auth.token_file.display(), "operator token loaded")
        }
    }
    if cfg.auth.allow_anonymous {
        tracing::warn!(
            "auth.allow-anonymous = true: central's API serves requests without a token as the \
             operator; use this only in a lab"
        );
    }
    let tls = strata_net::NodeTls::load(&cfg.tls)?;
    let endpoint = strata_net::client_endpoint(&tls)?;
    let mut registry = Registry::default();
    let hub_metrics = metrics::HubMetrics::register(&mut registry);
    let raft_metrics = strata_consensus::RaftMetrics::default();
    raft_metrics.register_in(registry.sub_registry_with_prefix("strata_central"));
    let handshakes = strata_net::handshake::HandshakeMetrics::register(&mut registry);
    let timeouts = region::client::Timeouts {
        request: cfg.request_timeout(),
        connect: cfg.connect_timeout(),
        membership: cfg.membership_timeout,
    };
    let clients: Vec<Arc<RegionClient>> = cfg
        .regions
        .iter()
        .map(|r| {
            Arc::new(RegionClient::new(
                &r.name,
                r.hubs.clone(),
                endpoint.clone(),
                timeouts,
                hub_metrics.clone(),
            ))
        })
        .collect();
    let regions: Vec<Arc<dyn RegionApi>> = clients
        .iter()
        .map(|c| c.clone() as Arc<dyn RegionApi>)
        .collect();
    let bind_err = |error| CentralError::Bind {
        addr: cfg.listen,
        error,
    };
    let listener = match listeners.http {
        None => tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(bind_err)?,
        Some(l) => {
            l.set_nonblocking(true).map_err(bind_err)?;
            tokio::net::TcpListener::from_std(l).map_err(bind_err)?
        }
    };
    let addr = listener.local_addr().map_err(|error| CentralError::Bind {
        addr: cfg.listen,
        error,
    })?;
    let cluster_stop = CancellationToken::new();
    let peer_ep = match listeners.peer {
        None => strata_net::server_endpoint(cfg.cluster.peer_listen, &tls)?,
        Some(socket) => endpoint_on(socket, &tls)?,
    };
    let peer_addr = peer_ep.local_addr().map_err(|error| CentralError::Bind {
        addr: cfg.listen,
        error,
    })?;
    let members = if cfg.cluster.replicas.is_empty() {
        vec![strata_protocol::ReplicaInfo {
            id: cfg.cluster.id,
            peer_addr: peer_addr.to_string(),
            client_addr: addr.to_string(),
            voter: true,
        }]
    } else {
        cfg.cluster
            .replicas
            .iter()
            .map(|r| strata_protocol::ReplicaInfo {
                id: r.id,
                peer_addr: r.peer_addr.clone(),
                client_addr: r.http_addr.clone(),
                voter: true,
            })
            .collect()
    };
    let settings = replica::ClusterSettings {
        id: cfg.cluster.id,
        members,
        dir: cfg.data_dir.join("cluster"),
        tick: std::time::Duration::from_millis(cfg.cluster.tick_ms),
        election_ticks: cfg.cluster.election_ticks,
        heartbeat_ticks: cfg.cluster.heartbeat_ticks,
        checkpoint_every: cfg.cluster.checkpoint_every,
        request_timeout: cfg.request_timeout(),
    };
    let parts = replica::start(
        settings,
        peer_ep,
        handshakes,
        raft_metrics,
        cluster_stop.clone(),
    )
    .await?;
    let cluster = parts.cluster;
    tokio::spawn(replica::bootstrap(
        cluster.clone(),
        auth.token.digest().bytes(),
        cfg.regions
            .iter()
            .map(|r| (r.name.clone(), r.hubs.clone()))
            .collect(),
        http::system_clock(),
        cluster_stop.clone(),
    ));
    let streams = CancellationToken::new();
    let access = auth::Access::replicated(
        &auth.token,
        cluster.published(),
        auth.access.policy().clone(),
    );
    let options = http::AppOptions {
        access,
        max_body_bytes: cfg.http.max_body_bytes,
        // A long poll is one request: its wait plus the hub call's own
        // deadline must end before `http.request-timeout` answers 408.
        events_max_wait: cfg
            .http
            .request_timeout
            .saturating_sub(cfg.request_timeout() + std::time::Duration::from_secs(1))
            .min(std::time::Duration::from_secs(30)),
        stream_keep_alive: (cfg.http.idle_timeout / 2).min(std::time::Duration::from_secs(15)),
        console_tick: http::stream::TICK,
        streams: streams.clone(),
        cluster: Some(cluster.clone()),
    };
    let global_metrics = metrics::GlobalMetrics::register(&mut registry);
    let seed = cfg.global.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    tokio::spawn(
        global::GlobalDriver::new(
            cluster.clone(),
            regions.clone(),
            global::GlobalSettings {
                interval: cfg.global.interval,
                summary_interval: cfg.global.summary_interval,
                stale_after: strata_sched::global::GlobalConfig::default().stale_after,
                seed,
                forecast: cfg.global.forecast.predictor(),
            },
            http::system_clock(),
            global_metrics,
        )
        .run(cluster_stop.clone()),
    );
    let state = AppState::with_options(regions, registry, http::system_clock(), options);
    let limit_metrics = state.limit_metrics().clone();
    Ok(Central {
        listener,
        addr,
        router: app(state),
        limits: serve::ServeLimits::from(&cfg.http),
        limit_metrics,
        token_file: auth.token_file,
        endpoint,
        clients,
        streams,
        peer_addr,
        cluster_stop,
        cluster_done: parts.done,
    })
}

impl Central {
    /// The bound HTTP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Raft peer listener's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The operator token file (its path; never log the token).
    pub fn token_file(&self) -> &std::path::Path {
        &self.token_file
    }

    /// Serves the API until `shutdown` is cancelled, drains the requests in
    /// flight, then closes the hub connections.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), CentralError> {
        let addr = self.addr;
        tracing::info!(%addr, peer = %self.peer_addr, regions = self.clients.len(), "central API listening");
        // Event streams never end by themselves; shutdown waits for every
        // response, so they must end when it starts.
        let (streams, stop) = (self.streams.clone(), shutdown.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            streams.cancel();
        });
        serve::serve(
            self.listener,
            self.router,
            self.limits,
            self.limit_metrics,
            shutdown,
        )
        .await;
        self.cluster_stop.cancel();
        match (&mut self.cluster_done).await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(e)) => return Err(CentralError::Replica(replica::StartError::Node(e))),
        }
        for c in &self.clients {
            c.close();
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
        tracing::info!(%addr, "central stopped");
        Ok(())
    }
}

/// A QUIC server endpoint (dialing too) on an already bound socket.
fn endpoint_on(
    socket: std::net::UdpSocket,
    tls: &strata_net::NodeTls,
) -> Result<quinn::Endpoint, CentralError> {
    let addr = socket.local_addr().map_err(|error| CentralError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        error,
    })?;
    let runtime = quinn::default_runtime().ok_or_else(|| CentralError::Bind {
        addr,
        error: std::io::Error::other("no async runtime"),
    })?;
    let server = strata_net::endpoint::server_config(tls)?;
    let mut ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        runtime,
    )
    .map_err(|error| CentralError::Bind { addr, error })?;
    ep.set_default_client_config(strata_net::endpoint::client_config(tls)?);
    Ok(ep)
}

/// [`bind`] then [`Central::run`].
pub async fn run(cfg: CentralConfig, shutdown: CancellationToken) -> Result<(), CentralError> {
    bind(cfg).await?.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_health_and_metrics_on_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let pki = strata_net::Pki::ensure(dir.path()).unwrap();
        let cfg = CentralConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("central"),
            tls: pki.node("central").unwrap(),
            regions: vec![RegionConfig {
                name: "west".into(),
                hubs: vec!["127.0.0.1:9".into()],
            }],
            ..CentralConfig::default()
        };
        let central = bind(cfg).await.unwrap();
        let addr = central.local_addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(
            central.token_file(),
            dir.path().join("central/operator.token")
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(central.run(shutdown.clone()));

        let client = reqwest::Client::new();
        let health = client
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        let body: serde_json::Value = health.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"status": "ok"}));

        let metrics = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), 200);
        let text = metrics.text().await.unwrap();
        assert!(
            text.contains(
                r#"strata_central_http_requests_total{method="GET",route="/health",status="200"} 1"#
            ),
            "{text}"
        );

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn bind_reports_invalid_config() {
        let err = bind(CentralConfig::default()).await.err().unwrap();
        assert!(matches!(err, CentralError::Config(_)), "{err}");
        assert!(err.to_string().contains("at least one region"), "{err}");
    }
}
