//! Central's HTTP/1.1 server: an accept loop in place of `axum::serve`, so
//! that every connection has limits (`[http]` in `central.toml`), each
//! counted in `strata_central_http_limits_total{limit=...}` when it fires:
//!
//! - `max-connections`: a connection beyond it is closed at once;
//! - `header-read-timeout`, `idle-timeout`, `max-header-bytes` (431 with
//!   the JSON error body): per connection, in [`core::ConnCore`] (sans-IO)
//!   driven by [`io::GuardedIo`];
//! - `request-timeout` (408): per request, in [`service::RequestService`];
//! - body limits (413) are per route, in [`crate::http::guard`].
//!
//! On shutdown it stops accepting, lets hyper close idle connections and
//! finish the requests in flight (each bounded by `request-timeout`), and
//! returns when every connection is gone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpConfig;
use crate::metrics::{Limit, LimitMetrics};

pub mod core;
pub mod io;
pub mod service;

#[cfg(test)]
mod tests;

use self::core::{ConnCore, ConnLimits};
use self::io::GuardedIo;
use self::service::{Activity, RequestService};

/// The limits of [`serve`], from `[http]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Per-connection limits.
    pub conn: ConnLimits,
    /// Whole-request deadline.
    pub request_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
}

impl From<&HttpConfig> for ServeLimits {
    fn from(c: &HttpConfig) -> ServeLimits {
        ServeLimits {
            conn: ConnLimits {
                header_read_timeout: c.header_read_timeout,
                idle_timeout: c.idle_timeout,
                max_header_bytes: c.max_header_bytes,
            },
            request_timeout: c.request_timeout,
            max_connections: c.max_connections,
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then drains.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ServeLimits,
    metrics: LimitMetrics,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.fired(Limit::MaxConnections);
            tracing::debug!(%peer, max = limits.max_connections, "HTTP connection refused: too many open");
            drop(stream);
            continue;
        };
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            limits,
            metrics.clone(),
            shutdown.clone(),
            slot,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Accept errors are per connection (reset before accept) or resource
/// exhaustion (no file descriptors): the latter is retried after a pause
/// rather than spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting an HTTP connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves one connection; `_slot` frees its place when it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    limits: ServeLimits,
    metrics: LimitMetrics,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    // Answers are small and whole: send them without Nagle's delay.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::default());
    let core = ConnCore::new(limits.conn, tokio::time::Instant::now());
    let io = GuardedIo::new(
        stream,
        core,
        activity.clone(),
        metrics.clone(),
        limits.conn.max_header_bytes,
    );
    let service = RequestService {
        router,
        activity,
        request_timeout: limits.request_timeout,
        metrics,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // GuardedIo enforces the head limits and timeouts; hyper's own header
    // timeout (30 s by default, which also ends idle keep-alive) is off, and
    // its header size limit is the same as ours, as a backstop for the one
    // case GuardedIo does not scan (see `core`).
    builder
        .header_read_timeout(None)
        .max_header_size(limits.conn.max_header_bytes);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
