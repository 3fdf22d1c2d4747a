//! quinn endpoints with mutual TLS 1.3 and Strata's transport limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::server::WebPkiClientVerifier;

use crate::pki::NodeTls;
use crate::{NetError, ALPN};

/// Concurrent bidirectional streams a peer may open: many telemetry batches
/// are in flight at once, each on its own stream.
const MAX_BIDI_STREAMS: u32 = 1024;
/// A connection with no traffic (not even keep-alives) for this long is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Keep-alive interval: well under the idle timeout, so a quiet link stays up.
const KEEP_ALIVE: Duration = Duration::from_secs(1);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> NetError {
    NetError::TlsConfig(e.to_string())
}

fn roots(tls: &NodeTls) -> Result<Arc<rustls::RootCertStore>, NetError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in &tls.ca {
        roots.add(ca.clone()).map_err(tls_err)?;
    }
    Ok(Arc::new(roots))
}

/// Keep-alive interval and idle timeout of a link. QUIC uses the smaller
/// idle timeout of the two ends, so a client that asks for a short one
/// shortens it for the server too: the edge's uplink does, so that the hub
/// sees a silent edge's connection end soon (a killed process sends no
/// close; only silence reveals it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTimers {
    /// PING interval when nothing else is sent; well under `idle_timeout`.
    pub keep_alive: Duration,
    /// No packet at all for this long ends the connection.
    pub idle_timeout: Duration,
}

impl Default for LinkTimers {
    fn default() -> Self {
        LinkTimers {
            keep_alive: KEEP_ALIVE,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

fn transport() -> Arc<quinn::TransportConfig> {
    transport_with(LinkTimers::default())
}

fn transport_with(timers: LinkTimers) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(MAX_BIDI_STREAMS.into())
        .max_concurrent_uni_streams(64u32.into())
        .keep_alive_interval(Some(timers.keep_alive))
        // Larger windows than quinn's defaults: a batch of thousands of
        // records should not stall on flow control over a fast link.
        .stream_receive_window((8u32 * 1024 * 1024).into())
        .receive_window((64u32 * 1024 * 1024).into())
        .send_window(64 * 1024 * 1024);
    if let Ok(idle) = timers.idle_timeout.try_into() {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

/// Client configuration presenting this node's certificate and trusting the
/// cluster CA only.
pub fn client_config(tls: &NodeTls) -> Result<quinn::ClientConfig, NetError> {
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_root_certificates(roots(tls)?)
        .with_client_auth_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(tls_err)?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(crypto).map_err(tls_err)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// Server configuration requiring a client certificate from the cluster CA.
pub fn server_config(tls: &NodeTls) -> Result<quinn::ServerConfig, NetError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(tls)?, provider())
        .build()
        .map_err(tls_err)?;
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(tls_err)?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(crypto).map_err(tls_err)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// An endpoint that accepts connections on `bind` and can also dial out.
pub fn server_endpoint(bind: SocketAddr, tls: &NodeTls) -> Result<quinn::Endpoint, NetError> {
    let mut ep = quinn::Endpoint::server(server_config(tls)?, bind)
        .map_err(|source| NetError::Bind { addr: bind, source })?;
    ep.set_default_client_config(client_config(tls)?);
    Ok(ep)
}

/// A dial-only endpoint on an ephemeral local port.
pub fn client_endpoint(tls: &NodeTls) -> Result<quinn::Endpoint, NetError> {
    client_endpoint_with(tls, LinkTimers::default())
}

/// [`client_endpoint`] whose connections use `timers`.
pub fn client_endpoint_with(
    tls: &NodeTls,
    timers: LinkTimers,
) -> Result<quinn::Endpoint, NetError> {
    let bind: SocketAddr = ([0, 0, 0, 0], 0).into();
    let mut ep =
        quinn::Endpoint::client(bind).map_err(|source| NetError::Bind { addr: bind, source })?;
    let mut cfg = client_config(tls)?;
    cfg.transport_config(transport_with(timers));
    ep.set_default_client_config(cfg);
    Ok(ep)
}
