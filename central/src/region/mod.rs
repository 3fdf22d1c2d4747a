//! Talking to one region: the [`RegionApi`] trait the HTTP layer uses, and
//! its QUIC implementation [`RegionClient`].
//!
//! The trait keeps the HTTP handlers testable without hubs: tests plug in an
//! in-memory region, production plugs in a [`RegionClient`].
//!
//! - [`tracker`]: the sans-IO leader tracker and per-request route planner.
//! - [`client`]: the QUIC driver (connections, timeouts, metrics).
//! - [`health`]: healthy / degraded / unavailable, with the problems, from
//!   one status fan-out.

use std::time::Duration;

use futures::future::BoxFuture;
use strata_protocol::liveness::EventPage;
use strata_protocol::monitoring::{AlertQuery, MonitorInfo};
use strata_protocol::workload::{MonitorSpec, SpecErrors};
use strata_protocol::{
    AlertRecord, DeviceInfo, DevicePage, DeviceSearch, EdgeInfo, HubStatus, MembershipRefusal,
    QueryResult, RegionSummary, ReplicaInfo, TelemetryQuery, WorkloadId,
};

pub mod client;
pub mod health;
pub mod tracker;

#[cfg(test)]
mod client_tests;

pub use client::RegionClient;

/// A value read from a region, with who served it.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<T> {
    /// The answer.
    pub value: T,
    /// Address of the replica that answered.
    pub addr: String,
    /// True when no leader could be reached and a follower answered: the
    /// data may miss the latest committed writes.
    pub stale: bool,
}

/// One replica as seen by a status fan-out.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStatus {
    /// Address central dialed.
    pub addr: String,
    /// The replica's own status, or why it could not be had.
    pub status: Result<HubStatus, String>,
}

/// Status of every replica of a region. Never an error: unreachable
/// replicas are listed with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionStatus {
    /// Region name.
    pub region: String,
    /// Raft id of the replica that reports itself leader (highest term wins
    /// if a deposed leader has not noticed yet).
    pub leader: Option<u64>,
    /// Every known replica, reachable ones by id first, then unreachable
    /// ones by address.
    pub replicas: Vec<ReplicaStatus>,
}

impl RegionStatus {
    /// Builds the summary from per-replica results: dedups replicas reached
    /// under two addresses and picks the leader.
    pub fn from_replicas(region: String, mut replicas: Vec<ReplicaStatus>) -> RegionStatus {
        let mut seen = std::collections::BTreeSet::new();
        replicas.retain(|r| match &r.status {
            Ok(s) => seen.insert(s.id),
            Err(_) => true,
        });
        replicas.sort_by(|a, b| match (&a.status, &b.status) {
            (Ok(x), Ok(y)) => x.id.cmp(&y.id),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(_), Err(_)) => a.addr.cmp(&b.addr),
        });
        let leader = replicas
            .iter()
            .filter_map(|r| r.status.as_ref().ok())
            .filter(|s| s.role == strata_protocol::RaftRole::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id);
        RegionStatus {
            region,
            leader,
            replicas,
        }
    }
}

impl RegionStatus {
    /// The leader's id and its view of the membership, when a leader
    /// answered with a non-empty membership.
    pub fn leader_members(&self) -> Option<(u64, &[ReplicaInfo])> {
        let leader = self.leader?;
        self.replicas
            .iter()
            .filter_map(|r| r.status.as_ref().ok())
            .find(|s| s.id == leader && !s.replicas.is_empty())
            .map(|s| (leader, s.replicas.as_slice()))
    }
}

/// Why a region operation failed. Each variant names the region.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegionError {
    /// No replica of the region answered.
    #[error("region {region}: no hub reachable ({})", .errors.join("; "))]
    Unreachable {
        /// Region name.
        region: String,
        /// One message per replica tried.
        errors: Vec<String>,
    },
    /// Replicas answered but none is leader, and the operation needs one.
    #[error("region {region}: no leader (election in progress or no quorum)")]
    NoLeader {
        /// Region name.
        region: String,
    },
    /// A hub answered with an error.
    #[error("region {region}: hub {addr}: {message}")]
    Hub {
        /// Region name.
        region: String,
        /// Hub that answered.
        addr: String,
        /// The hub's message.
        message: String,
    },
    /// A hub answered with a response that does not fit the request.
    #[error("region {region}: hub {addr} sent an unexpected {got} response")]
    Protocol {
        /// Region name.
        region: String,
        /// Hub that answered.
        addr: String,
        /// Kind of response received.
        got: &'static str,
    },
    /// The operation did not finish within the request timeout.
    #[error("region {region}: no answer within {timeout_ms} ms")]
    Timeout {
        /// Region name.
        region: String,
        /// The configured deadline.
        timeout_ms: u64,
    },
    /// The hub refused a monitor spec or module; every bad field is listed.
    #[error("region {region}: {errors}")]
    Invalid {
        /// Region name.
        region: String,
        /// The hub's field errors.
        errors: SpecErrors,
    },
    /// The hub does not know the named object (a monitor).
    #[error("region {region}: {what} not found")]
    NotFound {
        /// Region name.
        region: String,
        /// What was not found, as the hub named it.
        what: String,
    },
    /// The leader refused a membership change; the refusal names the
    /// replica and says why (never answered, too far behind, busy, …).
    #[error("region {region}: {refusal}")]
    Refused {
        /// Region name.
        region: String,
        /// The hub's reason.
        refusal: MembershipRefusal,
    },
}

/// A module stored by a region ([`RegionApi::put_artifact`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactStored {
    /// Its sha256, 64 lowercase hex digits.
    pub sha256: String,
    /// Its size, bytes.
    pub size_bytes: u64,
    /// False when the region already had it.
    pub created: bool,
}

/// Everything the HTTP API needs from one region.
///
/// Futures are boxed so the trait stays object-safe: the app holds
/// `Arc<dyn RegionApi>` for each region.
pub trait RegionApi: Send + Sync {
    /// Region name.
    fn name(&self) -> &str;
    /// Status of every replica (fan-out; unreachable replicas are listed).
    fn status(&self) -> BoxFuture<'_, RegionStatus>;
    /// Edge nodes of the region, read from the leader.
    fn edges(&self) -> BoxFuture<'_, Result<Served<Vec<EdgeInfo>>, RegionError>>;
    /// Devices of the region, optionally of one tenant, read from the leader.
    fn devices(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'_, Result<Served<Vec<DeviceInfo>>, RegionError>>;
    /// The first matches of a device search and the counts of all of them
    /// (per edge), searched by the leader: only the page crosses the
    /// network.
    fn search_devices(
        &self,
        search: DeviceSearch,
    ) -> BoxFuture<'_, Result<Served<DevicePage>, RegionError>>;
    /// Telemetry read, from the leader.
    fn query(
        &self,
        query: TelemetryQuery,
    ) -> BoxFuture<'_, Result<Served<QueryResult>, RegionError>>;
    /// Adds a replica through the leader, which makes it a learner and
    /// promotes it once caught up (or refuses: [`RegionError::Refused`]);
    /// returns the new membership.
    fn add_replica(
        &self,
        replica: ReplicaInfo,
    ) -> BoxFuture<'_, Result<Vec<ReplicaInfo>, RegionError>>;
    /// Removes a replica through the leader; returns the new membership.
    fn remove_replica(&self, id: u64) -> BoxFuture<'_, Result<Vec<ReplicaInfo>, RegionError>>;
    /// Stores a module through the leader (validated by the hub;
    /// [`RegionError::Invalid`] names the field `artifact`).
    fn put_artifact(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<ArtifactStored, RegionError>>;
    /// Creates or updates a monitor through the leader.
    fn submit_monitor(&self, spec: MonitorSpec) -> BoxFuture<'_, Result<MonitorInfo, RegionError>>;
    /// Monitors of the region, optionally of one tenant, read from the leader.
    fn monitors(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'_, Result<Served<Vec<MonitorInfo>>, RegionError>>;
    /// One monitor, read from the leader ([`RegionError::NotFound`] if unknown).
    fn monitor(
        &self,
        tenant: String,
        name: String,
    ) -> BoxFuture<'_, Result<Served<MonitorInfo>, RegionError>>;
    /// Deletes a monitor through the leader ([`RegionError::NotFound`] if unknown).
    fn delete_monitor(
        &self,
        tenant: String,
        name: String,
    ) -> BoxFuture<'_, Result<(), RegionError>>;
    /// Alerts matching `query`, newest first, read from the leader.
    fn alerts(
        &self,
        query: AlertQuery,
    ) -> BoxFuture<'_, Result<Served<Vec<AlertRecord>>, RegionError>>;
    /// What retention dropped, per tenant (optionally one), read from the
    /// leader (each replica counts its own; they agree but for drops near
    /// the retention bound).
    fn retention(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'_, Result<Served<strata_protocol::RetentionReport>, RegionError>>;
    /// The region's event log from `from_seq` (at most `limit` events),
    /// read from the leader (any replica holds the log). When none exists
    /// yet, the hub waits up to `wait` for one (a long poll; the operation's
    /// deadline grows by `wait`).
    fn events(
        &self,
        from_seq: u64,
        limit: u32,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Served<EventPage>, RegionError>>;
    /// The region's capacity summary from its leader (only the leader
    /// answers; without one, [`RegionError::NoLeader`]): what it can still
    /// take, per pool, counted per edge; per tenant, the devices reporting
    /// through it; and the live instances it runs of each of `global`. Its
    /// health is the leader's own view (`ok` or `degraded`, stamped with
    /// the region's clock); central should replace it with its own verdict.
    fn summary(&self, global: Vec<WorkloadId>)
        -> BoxFuture<'_, Result<RegionSummary, RegionError>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_protocol::RaftRole;

    fn reached(addr: &str, id: u64, role: RaftRole, term: u64) -> ReplicaStatus {
        ReplicaStatus {
            addr: addr.into(),
            status: Ok(HubStatus {
                region: "west".into(),
                id,
                role,
                term,
                leader: None,
                commit_index: 0,
                applied_index: 0,
                last_index: 0,
                replicas: vec![],
                stored_records: 0,
                peers: vec![],
                cert_expires_ms: None,
            }),
        }
    }

    #[test]
    fn leader_members_come_from_the_leader_only() {
        let member = |id| ReplicaInfo {
            id,
            peer_addr: format!("p{id}:1"),
            client_addr: format!("c{id}:1"),
            voter: true,
        };
        let mut follower = reached("b:1", 2, RaftRole::Follower, 5);
        if let Ok(s) = &mut follower.status {
            s.replicas = vec![member(1), member(2)];
        }
        let mut leader = reached("a:1", 1, RaftRole::Leader, 5);
        if let Ok(s) = &mut leader.status {
            s.replicas = vec![member(1), member(2), member(3)];
        }
        let s = RegionStatus::from_replicas("west".into(), vec![follower.clone(), leader]);
        let (id, members) = s.leader_members().unwrap();
        assert_eq!(id, 1);
        assert_eq!(members.len(), 3);
        // Without a leader the membership is unknown.
        let s = RegionStatus::from_replicas("west".into(), vec![follower]);
        assert!(s.leader_members().is_none());
        // So it is when the leader lists none.
        let s = RegionStatus::from_replicas(
            "west".into(),
            vec![reached("a:1", 1, RaftRole::Leader, 5)],
        );
        assert!(s.leader_members().is_none());
    }

    #[test]
    fn summary_dedups_sorts_and_prefers_the_newest_leader() {
        let s = RegionStatus::from_replicas(
            "west".into(),
            vec![
                ReplicaStatus {
                    addr: "z:1".into(),
                    status: Err("down".into()),
                },
                reached("c:1", 3, RaftRole::Leader, 4),
                reached("a:1", 1, RaftRole::Leader, 5),
                // Replica 1 again, reached under a learned address.
                reached("localhost:1", 1, RaftRole::Leader, 5),
                ReplicaStatus {
                    addr: "b:1".into(),
                    status: Err("down".into()),
                },
            ],
        );
        let addrs: Vec<&str> = s.replicas.iter().map(|r| r.addr.as_str()).collect();
        assert_eq!(addrs, vec!["a:1", "c:1", "b:1", "z:1"]);
        assert_eq!(s.leader, Some(1));
    }
}
