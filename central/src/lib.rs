//! Strata central: federates the regions and serves the HTTP JSON API that
//! users, `strata` and tests use to see the cluster, read telemetry, submit
//! device monitors (modules and specs) and read their alerts.
//!
//! Central holds no state of its own: every answer comes from the regions'
//! hubs, dialed over mutual-TLS QUIC. Reads go to each region's Raft leader
//! (or, with no leader, to any replica, marked `stale`); status fans out to
//! every replica, and an unreachable one is listed, not fatal.
//!
//! # Layout
//! - [`config`]: `central.toml` (listen address, TLS, regions, timeouts),
//!   validated with every problem reported at once.
//! - [`region`]: the [`region::RegionApi`] trait the HTTP layer talks to, its
//!   QUIC implementation [`region::RegionClient`], and the sans-IO leader
//!   tracker / request router it drives ([`region::tracker`]).
//! - [`http`]: [`http::app`] builds the axum router from an
//!   [`http::AppState`]: routes, JSON error body, query parsing, views.
//! - [`metrics`]: Prometheus metrics (HTTP requests, hub latency and errors).
//! - `main.rs`: the thin `central --config central.toml` binary.
//!
//! This crate must not depend on `region-hub` or `edge-node`: it speaks to
//! hubs only through `strata-protocol` messages over `strata-net`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub mod config;
pub mod http;
pub mod metrics;
pub mod region;

pub use config::{CentralConfig, ConfigError, RegionConfig};
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
    /// The HTTP server failed while running.
    #[error("HTTP server on {addr}: {error}")]
    Serve {
        /// The bound address.
        addr: SocketAddr,
        /// OS error.
        error: std::io::Error,
    },
}

/// A bound, not yet serving, central server.
pub struct Central {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: axum::Router,
    endpoint: quinn::Endpoint,
    clients: Vec<Arc<RegionClient>>,
}

/// Validates `cfg`, loads TLS, creates the QUIC endpoint and the region
/// clients, and binds the HTTP listener. Hubs are dialed lazily, so central
/// starts even while every hub is down.
pub async fn bind(cfg: CentralConfig) -> Result<Central, CentralError> {
    cfg.validate()?;
    let tls = strata_net::NodeTls::load(&cfg.tls)?;
    let endpoint = strata_net::client_endpoint(&tls)?;
    let mut registry = Registry::default();
    let hub_metrics = metrics::HubMetrics::register(&mut registry);
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
    let state = AppState::new(regions, registry);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|error| CentralError::Bind {
            addr: cfg.listen,
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| CentralError::Bind {
        addr: cfg.listen,
        error,
    })?;
    Ok(Central {
        listener,
        addr,
        router: app(state),
        endpoint,
        clients,
    })
}

impl Central {
    /// The bound HTTP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the API until `shutdown` is cancelled, then closes the hub
    /// connections.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), CentralError> {
        let addr = self.addr;
        tracing::info!(%addr, regions = self.clients.len(), "central API listening");
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        for c in &self.clients {
            c.close();
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
        served.map_err(|error| CentralError::Serve { addr, error })?;
        tracing::info!(%addr, "central stopped");
        Ok(())
    }
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
