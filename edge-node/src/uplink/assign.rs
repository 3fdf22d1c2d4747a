//! Fetching this edge's allocations and their modules from the hub leader.
//!
//! The hub announces its assignments version in every heartbeat ack; when it
//! differs from what the workload host applied, the core commands a sync and
//! the driver runs [`fetch`]: the edge's allocations (allocation id, fencing
//! token, spec, disconnect policy), then every module the host does not hold
//! yet, each checked against its sha256 before it is handed over. Nothing is
//! applied half way: a failed fetch leaves the applied version unchanged and
//! the next heartbeat ack retries. A set the leader says grants leases
//! grants them from when its request was sent.

use std::sync::Arc;
use std::time::Instant;

use strata_net::{rpc, NetError};
use strata_protocol::scheduling::EdgeAllocation;
use strata_protocol::{EdgeRequest, EdgeResponse};

/// A complete, verified allocation set for this edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentUpdate {
    /// Region assignments version it reflects.
    pub version: u64,
    /// Every allocation placed on this edge (the full desired set).
    pub allocations: Vec<EdgeAllocation>,
    /// Modules the host lacked: `(sha256, bytes)`, hashes verified.
    pub artifacts: Vec<(String, Vec<u8>)>,
    /// When the request that fetched the set was sent: the region answered
    /// after it, so leases the set grants are counted from here.
    pub requested_at: Instant,
    /// Whether the leader granted leases with this set (it does when it
    /// considers the edge up).
    pub lease_granted: bool,
}

/// Why the workload host did not apply an update (it is retried later).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Persisting the set or a module failed.
    #[error("edge {edge}: applying workload assignments: {source}")]
    Failed {
        /// This edge.
        edge: String,
        /// Cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The host is shutting down.
    #[error("edge {edge}: the workload host is shut down")]
    ShutDown {
        /// This edge.
        edge: String,
    },
}

/// The workload host, as the uplink sees it.
pub trait AssignmentTarget: Send + Sync + 'static {
    /// Version applied (persisted) so far; 0 when none, or while the host
    /// needs the set again (a module missing, a lease to be granted).
    fn applied_version(&self) -> u64;
    /// Whether the module with this hash is stored locally.
    fn has_artifact(&self, sha256: &str) -> bool;
    /// Persists and applies an update. Returns the version now applied.
    /// Blocking: call it from a blocking thread.
    fn apply(&self, update: AssignmentUpdate) -> Result<u64, ApplyError>;
    /// The leader acknowledged a heartbeat sent at `sent_at` and renewed
    /// this edge's leases (counted from the send).
    fn lease_renewed(&self, sent_at: Instant) {
        let _ = sent_at;
    }
}

/// Shared handle to the workload host.
pub type SharedTarget = Arc<dyn AssignmentTarget>;

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The request failed on the wire.
    #[error("assignment sync of edge {edge}: {source}")]
    Net {
        /// This edge.
        edge: String,
        /// Cause.
        source: NetError,
    },
    /// The hub answered something else than expected.
    #[error("assignment sync of edge {edge}: unexpected answer: {answer}")]
    Unexpected {
        /// This edge.
        edge: String,
        /// What came back.
        answer: String,
    },
    /// A module did not hash to its announced sha256.
    #[error("assignment sync of edge {edge}: module {sha256} arrived with hash {actual}")]
    HashMismatch {
        /// This edge.
        edge: String,
        /// Expected hash.
        sha256: String,
        /// Hash of the bytes received.
        actual: String,
    },
    /// The host could not persist or apply the update.
    #[error("assignment sync of edge {edge}: {source}")]
    Apply {
        /// This edge.
        edge: String,
        /// Why.
        source: ApplyError,
    },
    /// The task applying the update failed.
    #[error("assignment sync of edge {edge}: apply task: {source}")]
    Task {
        /// This edge.
        edge: String,
        /// Cause.
        source: tokio::task::JoinError,
    },
}

/// SHA-256 of `bytes` as 64 lowercase hex digits.
fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fetches the edge's assignments and missing modules over `conn`, verifies
/// them, and hands them to `target`. Returns the version applied.
pub async fn fetch(
    conn: &quinn::Connection,
    edge: &str,
    target: &SharedTarget,
) -> Result<u64, SyncError> {
    let net = |source| SyncError::Net {
        edge: edge.to_owned(),
        source,
    };
    let requested_at = Instant::now();
    let resp: EdgeResponse = rpc::call(
        conn,
        &EdgeRequest::FetchAllocations {
            edge: edge.to_owned(),
        },
    )
    .await
    .map_err(net)?;
    let (version, lease_granted, allocations) = match resp {
        EdgeResponse::Allocations {
            version,
            lease_granted,
            allocations,
        } => (version, lease_granted, allocations),
        other => {
            return Err(SyncError::Unexpected {
                edge: edge.to_owned(),
                answer: format!("{:.200}", format!("{other:?}")),
            })
        }
    };
    let mut wanted: Vec<String> = allocations
        .iter()
        .map(|a| a.spec.artifact.sha256.clone())
        .filter(|h| !target.has_artifact(h))
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut artifacts = Vec::with_capacity(wanted.len());
    for sha256 in wanted {
        let resp: EdgeResponse = rpc::call(
            conn,
            &EdgeRequest::FetchArtifact {
                sha256: sha256.clone(),
            },
        )
        .await
        .map_err(net)?;
        let bytes = match resp {
            EdgeResponse::Artifact { sha256: s, bytes } if s == sha256 => bytes,
            other => {
                return Err(SyncError::Unexpected {
                    edge: edge.to_owned(),
                    answer: format!("{:.200}", format!("{other:?}")),
                })
            }
        };
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(SyncError::HashMismatch {
                edge: edge.to_owned(),
                sha256,
                actual,
            });
        }
        artifacts.push((sha256, bytes));
    }
    let update = AssignmentUpdate {
        version,
        allocations,
        artifacts,
        requested_at,
        lease_granted,
    };
    // The host persists files: keep that off the async workers.
    let t = target.clone();
    tokio::task::spawn_blocking(move || t.apply(update))
        .await
        .map_err(|source| SyncError::Task {
            edge: edge.to_owned(),
            source,
        })?
        .map_err(|source| SyncError::Apply {
            edge: edge.to_owned(),
            source,
        })
}
