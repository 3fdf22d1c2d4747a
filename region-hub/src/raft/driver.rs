//! The hub's handle on its running Raft node (`strata_consensus::spawn`
//! runs it): proposals, membership, status, reads of the region state on
//! the Raft thread, and store reads beside it, never on it.

use std::sync::Arc;

use strata_consensus::{Handle, MemberChange, ProposeError, RaftNode};
use strata_protocol::{HubResponse, HubStatus, LeaderHint, ReplicaInfo, RetentionReport};

pub use strata_consensus::{now_ms, INBOX_CAPACITY};

use super::machine::{HubMachine, ReadRequest};
use super::store::{read, HubStore, StoreReader};
use crate::fsm::{add_device_dedup, Outcome, RegionState};
use crate::store::TelemetryStore;

/// The hub's Raft node type over its store.
pub type HubNode<S> = RaftNode<HubMachine<S>>;

/// What a [`NodeHandle::with_state`] function sees: the applied region
/// state and this replica's role, on the Raft thread.
#[derive(Clone, Copy)]
pub struct StateView<'a> {
    /// Region name.
    pub region: &'a str,
    /// The region state as of the applied index.
    pub state: &'a RegionState,
    /// True while this replica leads (writes may be proposed here).
    pub is_leader: bool,
    /// Where the leader is, when known (for `NotLeader` answers).
    pub leader: Option<&'a LeaderHint>,
}

/// A cheap, cloneable handle to a running hub node.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Handle<HubMachine<TelemetryStore>>,
    reader: Arc<dyn StoreReader>,
    region: String,
}

/// This replica's status at `now`, as the hub reports it.
pub fn hub_status<S: HubStore>(n: &HubNode<S>, now: std::time::Instant) -> HubStatus {
    let s = n.status(now);
    let m = n.machine();
    HubStatus {
        region: m.region().to_owned(),
        id: s.id,
        role: s.role,
        term: s.term,
        leader: s.leader,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        last_index: s.last_index,
        replicas: s.replicas,
        // Only the Raft thread writes, so this read never waits long.
        stored_records: read(&m.store()).stored_records(),
        peers: s.peers,
        // Filled in by the service, which holds the TLS material.
        cert_expires_ms: None,
    }
}

/// Answers a read from a replica's applied state (followers too: their
/// data may lag the leader by the replication delay). For tests; the
/// service reads the store from its own threads.
pub fn read_local<S: HubStore>(n: &HubNode<S>, req: ReadRequest) -> HubResponse {
    let m = n.machine();
    match req {
        ReadRequest::ListEdges => HubResponse::Edges(m.state().edges()),
        ReadRequest::ListDevices { tenant } => {
            HubResponse::Devices(read(&m.store()).devices(tenant.as_deref()))
        }
        ReadRequest::SearchDevices(search) => {
            let mut devices = read(&m.store()).devices(search.tenant.as_deref());
            add_device_dedup(
                &mut devices,
                &m.state().device_facts(search.tenant.as_deref()),
            );
            HubResponse::DevicePage(search.page(devices))
        }
        ReadRequest::Query(q) => match read(&m.store()).query(&q) {
            Ok(r) => HubResponse::Telemetry(r),
            Err(e) => HubResponse::Error {
                message: e.to_string(),
            },
        },
    }
}

impl NodeHandle {
    /// Wraps a node's handle and its store (for reads that must not run on
    /// the Raft thread).
    pub fn new(
        inner: Handle<HubMachine<TelemetryStore>>,
        reader: Arc<dyn StoreReader>,
        region: String,
    ) -> Self {
        NodeHandle {
            inner,
            reader,
            region,
        }
    }

    /// Proposes an encoded command; resolves after it is applied.
    pub async fn propose(&self, data: Vec<u8>) -> Result<Outcome, ProposeError> {
        self.inner.propose(data).await
    }

    /// Proposes a membership change; resolves after it is applied.
    pub async fn change(&self, change: MemberChange) -> Result<Vec<ReplicaInfo>, ProposeError> {
        self.inner.change(change).await
    }

    /// The replica's status.
    pub async fn status(&self) -> Result<HubStatus, ProposeError> {
        self.inner.with(hub_status).await
    }

    /// Runs `f` on the Raft thread over the applied region state and
    /// returns its result. `f` must be quick: the Raft loop waits for it.
    pub async fn with_state<R: Send + 'static>(
        &self,
        f: impl FnOnce(StateView<'_>) -> R + Send + 'static,
    ) -> Result<R, ProposeError> {
        self.inner
            .with(move |n, _| {
                let leader = n.leader_hint();
                let m = n.machine();
                f(StateView {
                    region: m.region(),
                    state: m.state(),
                    is_leader: n.is_leader(),
                    leader: leader.as_ref(),
                })
            })
            .await
    }

    /// A read from the replica's local state. Store reads run on the
    /// blocking pool, beside the Raft thread, never on it.
    pub async fn read(&self, req: ReadRequest) -> Result<HubResponse, ProposeError> {
        let reader = self.reader.clone();
        let job = match req {
            ReadRequest::ListEdges => {
                return self
                    .with_state(|v| HubResponse::Edges(v.state.edges()))
                    .await
            }
            ReadRequest::ListDevices { tenant } => {
                // The store knows what is stored; the region state what
                // dedup dropped and which edge each device reports
                // through (replicated): merge them.
                let filter = tenant.clone();
                let counts = self
                    .with_state(move |v| v.state.device_facts(filter.as_deref()))
                    .await?;
                tokio::task::spawn_blocking(move || {
                    let mut devices = reader.devices(tenant.as_deref());
                    add_device_dedup(&mut devices, &counts);
                    HubResponse::Devices(devices)
                })
            }
            ReadRequest::SearchDevices(search) => {
                // As a list, then searched here: only the page and the
                // counts leave the replica.
                let filter = search.tenant.clone();
                let counts = self
                    .with_state(move |v| v.state.device_facts(filter.as_deref()))
                    .await?;
                tokio::task::spawn_blocking(move || {
                    let mut devices = reader.devices(search.tenant.as_deref());
                    add_device_dedup(&mut devices, &counts);
                    HubResponse::DevicePage(search.page(devices))
                })
            }
            ReadRequest::Query(q) => tokio::task::spawn_blocking(move || match reader.query(&q) {
                Ok(r) => HubResponse::Telemetry(r),
                Err(message) => HubResponse::Error { message },
            }),
        };
        job.await.map_err(|e| ProposeError::Unavailable {
            group: self.region.clone(),
            reason: format!("read failed: {e}"),
        })
    }

    /// What this replica's retention dropped, per tenant (optionally one).
    /// A store read: on the blocking pool, not the Raft thread.
    pub async fn retention(&self, tenant: Option<String>) -> Result<RetentionReport, ProposeError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || reader.retention(tenant.as_deref()))
            .await
            .map_err(|e| ProposeError::Unavailable {
                group: self.region.clone(),
                reason: format!("read failed: {e}"),
            })
    }
}
