//! QUIC plumbing shared by every Strata tier.
//!
//! Every link in Strata is QUIC (quinn) with mutual TLS 1.3: both sides
//! present a certificate issued by the cluster CA. Certificates prove
//! membership of the cluster; the [`handshake`] that opens each connection
//! then names the node, its kind and region, and checks protocol versions.
//!
//! # Layout
//! - [`pki`]: generates the cluster CA and node certificates (first start
//!   needs no external PKI) and loads them from PEM files.
//! - [`endpoint`]: builds quinn server/client endpoints with mutual TLS and
//!   transport limits tuned for many parallel request streams.
//! - [`handshake`]: the `Hello` / `HelloReply` exchange, with a timeout, a
//!   counter per failure reason and a clear refusal.
//! - [`rpc`]: framed reads and writes on QUIC streams (length checked before
//!   allocation) and one-request-one-response calls.
//! - [`metrics`]: the `/metrics` and `/health` HTTP endpoint every process
//!   serves.
//! - [`files`]: private data directories (0700) and files (0600, mode set at
//!   creation), the refusal of ones others can read, and the process umask.
//!
//! This crate holds no business logic; it must stay usable by any tier.

pub mod endpoint;
pub mod files;
pub mod handshake;
pub mod metrics;
pub mod pki;
pub mod process;
pub mod rpc;

pub use endpoint::{client_endpoint, client_endpoint_with, server_endpoint, LinkTimers};
pub use handshake::{accept, connect};
pub use pki::{NodeTls, Pki, TlsFiles};

/// Errors from the network layer. Each names the peer or file involved.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A PEM file could not be read or parsed.
    #[error("TLS material {path}: {reason}")]
    TlsFile {
        /// File involved.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation for {name}: {reason}")]
    CertGen {
        /// Node name the certificate was for.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls/quinn configuration was rejected.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// Binding a socket failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// Address we tried.
        addr: std::net::SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// Could not start a connection.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// Peer address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection failed or was closed.
    #[error("connection to {peer}: {source}")]
    Connection {
        /// Peer address or name.
        peer: String,
        /// quinn's reason.
        source: quinn::ConnectionError,
    },
    /// The peer refused our handshake.
    #[error("{peer} refused the handshake: {reason}")]
    Refused {
        /// Peer address or name.
        peer: String,
        /// Its reason.
        reason: strata_protocol::RefuseReason,
    },
    /// The handshake did not complete in time.
    #[error("handshake with {peer} timed out")]
    HandshakeTimeout {
        /// Peer address or name.
        peer: String,
    },
    /// A frame could not be read or decoded.
    #[error("frame from {peer}: {source}")]
    Frame {
        /// Peer address or name.
        peer: String,
        /// What was wrong with it.
        source: strata_protocol::FrameError,
    },
    /// Stream-level IO failed.
    #[error("stream with {peer}: {reason}")]
    Stream {
        /// Peer address or name.
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// The stream ended before a response arrived.
    #[error("{peer} closed the stream without a response")]
    NoResponse {
        /// Peer address or name.
        peer: String,
    },
    /// Plain IO (metrics listener).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A key file or the PKI directory is not private, or could not be
    /// created so.
    #[error(transparent)]
    Files(#[from] crate::files::FilesError),
}

/// The TLS server name every node certificate carries, so a client can
/// verify any cluster member without knowing its individual name.
pub const CLUSTER_SERVER_NAME: &str = "strata.cluster";

/// ALPN protocol id; a peer speaking something else fails the TLS handshake.
pub const ALPN: &[u8] = b"strata/1";
