//! Device authentication and topic ACLs for the embedded MQTT server.
//!
//! Every MQTT client proves an identity from the edge's local credentials
//! file (so the edge enforces all of this offline): a username and
//! password (argon2id hash in the file), or a TLS client certificate whose
//! subject CN names the identity. Each identity is bound to one tenant and
//! a device glob: it may publish only to `strata/<tenant>/<device>/…` for
//! devices the glob matches, and subscribe only to filters under
//! `strata/<tenant>/`. A client id in use can be taken over only by the
//! same identity. The file is hot-reloaded; a connection whose identity is
//! removed or changed is disconnected at the next reload (v5: DISCONNECT
//! 0x87). `allow-anonymous = true` restores the open lab behaviour.
//!
//! # Layout
//! - [`config`]: `[ingress.auth]` and `[ingress.tls]`.
//! - [`credentials`]: the file format, validation, the [`Credentials`]
//!   snapshot and argon2id hashing.
//! - [`file`]: atomic 0600 writes of the file (`strata device`, `strata up`).
//! - [`acl`]: pure publish / subscribe checks.
//! - [`connect`]: the pure CONNECT decision ([`connect::plan`] /
//!   [`connect::finish`]).
//! - [`verify`]: bounded, cached, single-flight password verification off
//!   the runtime.
//! - [`store`]: the credentials in force and the reload loop.
//! - [`tls`]: the TLS listener's rustls config and client-certificate CN.
//! - [`metrics`]: login, hash and reload counters.
//!
//! Refusals are counted in `strata_ingress_rejects_total{reason}` with the
//! labels of [`connect::REFUSAL_REASONS`] and [`metrics::ACL_REASONS`], and
//! logged at most a few lines per window for the whole server.

pub mod acl;
pub mod config;
pub mod connect;
pub mod credentials;
pub mod file;
pub mod metrics;
pub mod store;
pub mod tls;
pub mod verify;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

pub use config::{AuthConfig, ClientCerts, TlsConfig};
pub use connect::{CertIdentity, Principal, Refused};
pub use credentials::{Credentials, CredentialsFile, Identity, IdentityEntry};
pub use metrics::AuthMetrics;
pub use store::CredentialStore;

use super::codec::Login;
use super::metrics::{LogLimiter, ReasonLabel};
use connect::Plan;
use credentials::AuthMethod;
use metrics::KindLabel;
use verify::PasswordVerifier;

/// Why credentials could not be read, parsed, validated or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file exists but cannot be read.
    #[error("cannot read credentials file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML of the expected shape.
    #[error("credentials file {path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        detail: String,
    },
    /// Entries are invalid; every problem is listed, naming the entry.
    #[error("credentials file {path}:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// The file.
        path: String,
        /// One line per problem.
        problems: Vec<String>,
    },
    /// The file or its directory could not be written.
    #[error("cannot write credentials file {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Hashing a password failed.
    #[error("cannot hash the password: {detail}")]
    Hash {
        /// What argon2 said.
        detail: String,
    },
    /// `add` of a username that exists.
    #[error("identity {username:?} already exists (remove it first to replace it)")]
    Exists {
        /// The username.
        username: String,
    },
    /// `remove` of a username that does not exist.
    #[error("no identity {username:?}")]
    NotFound {
        /// The username.
        username: String,
    },
}

/// Refusal log lines for the whole server per window: a flood of bad
/// logins opens a new connection each time, so a per-connection limiter
/// would not bound it.
const LOG_BURST: u32 = 20;
const LOG_WINDOW_MS: u64 = 10_000;

/// Authentication state shared by every connection of one server.
#[derive(Debug)]
pub struct AuthState {
    /// Accept clients without credentials (no ACLs for them).
    pub allow_anonymous: bool,
    /// The credentials in force.
    pub store: Arc<CredentialStore>,
    /// Password checks.
    pub verifier: PasswordVerifier,
    /// Counters.
    pub metrics: AuthMetrics,
    rejects: Family<ReasonLabel, Counter>,
    log: Mutex<LogLimiter>,
}

impl AuthState {
    /// Loads the credentials and registers the metrics. `rejects` is the
    /// server's reject counter family.
    pub fn new(
        cfg: &AuthConfig,
        registry: &mut Registry,
        rejects: Family<ReasonLabel, Counter>,
    ) -> Result<Self, CredentialsError> {
        let metrics = AuthMetrics::register(registry, Some(&rejects));
        let store = Arc::new(CredentialStore::open(
            cfg.credentials.clone(),
            metrics.clone(),
        )?);
        if cfg.allow_anonymous {
            tracing::warn!(
                "ingress.auth.allow-anonymous = true: MQTT clients without credentials may publish as any device of any tenant and read every tenant's data; use this only in a lab"
            );
        }
        Ok(AuthState {
            allow_anonymous: cfg.allow_anonymous,
            verifier: PasswordVerifier::new(
                cfg.max_concurrent_verifications,
                cfg.verified_cache_entries,
                metrics.clone(),
            ),
            store,
            metrics,
            rejects,
            log: Mutex::new(LogLimiter::new(LOG_BURST, LOG_WINDOW_MS)),
        })
    }

    /// Authenticates a CONNECT: `Ok(None)` is an allowed anonymous client.
    /// Password checks give up with `Busy` at `deadline`.
    pub async fn authenticate(
        &self,
        login: Option<&Login>,
        cert: Option<&CertIdentity>,
        deadline: Instant,
    ) -> Result<Option<Principal>, Refused> {
        let creds = self.store.current();
        let principal = match connect::plan(&creds, self.allow_anonymous, login, cert) {
            Plan::Accept(p) => p,
            Plan::Refuse(r) => return Err(r),
            Plan::Verify { identity, password } => {
                let v = self.verifier.verify(&identity, password, deadline).await;
                Some(connect::finish(identity, v)?)
            }
        };
        let kind = match principal.as_ref().map(|p| p.method) {
            None => "anonymous",
            Some(AuthMethod::Password) => "password",
            Some(AuthMethod::Certificate) => "certificate",
        };
        self.metrics.logins.get_or_create(&KindLabel { kind }).inc();
        Ok(principal)
    }

    /// Counts a refusal and logs it, rate-limited server-wide.
    pub fn refused(
        &self,
        peer: SocketAddr,
        client: &str,
        reason: &'static str,
        detail: &str,
        now_ms: u64,
    ) {
        self.rejects.get_or_create(&ReasonLabel { reason }).inc();
        let (allow, suppressed) = self
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(now_ms);
        if suppressed > 0 {
            tracing::warn!(
                suppressed,
                "suppressed further MQTT login refusal log lines"
            );
        }
        if allow {
            tracing::warn!(%peer, client, reason, "MQTT login refused: {detail}");
        }
    }
}
