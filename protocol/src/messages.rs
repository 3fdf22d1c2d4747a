//! Versioned messages for every link.
//!
//! Each QUIC connection starts with a handshake on its first bidirectional
//! stream: the client sends [`Hello`], the server answers [`HelloReply`].
//! After that:
//! - **edge → hub**: one bidirectional stream per request, carrying one
//!   [`EdgeRequest`] frame and answered by one [`EdgeResponse`] frame. Many
//!   batches are in flight at once on parallel streams.
//! - **hub → hub**: one long-lived unidirectional stream per peer carrying
//!   [`PeerFrame`]s (Raft messages, protobuf-encoded by the hub).
//! - **central / CLI → hub**: one bidirectional stream per [`HubRequest`],
//!   answered by one [`HubResponse`].
//!
//! Enums only ever grow at the end, so older decoders fail cleanly
//! (`Malformed`) on variants they do not know instead of misreading them.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::liveness::{EdgeHeartbeat, EdgeLiveness, EventPage};
use crate::membership::{MembershipRefusal, PeerProgress};
use crate::monitoring::{
    AlertQuery, AlertRecord, InstanceStatus, MonitorCapacity, MonitorInfo, NodeResources,
    SpoolEntry,
};
use crate::scheduling::EdgeAllocation;
use crate::telemetry::TelemetryRecord;
use crate::workload::{MonitorSpec, SpecErrors};
// The region summary's vocabulary, named here so that a client (central)
// needs no direct dependency on the scheduler crate to speak it.
pub use strata_sched::global::RegionSummary;
pub use strata_sched::WorkloadId;

/// What kind of process is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub enum NodeKind {
    /// An edge node.
    Edge,
    /// A region hub replica.
    Hub,
    /// The central federation server.
    Central,
    /// A command-line tool or test harness.
    Tool,
}

/// Who a peer says it is. The TLS certificate proves membership of the
/// cluster; this names the node inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
pub struct NodeIdentity {
    /// Kind of process.
    pub kind: NodeKind,
    /// Node id: an edge name, a hub replica id as a string, `central`, ….
    pub id: String,
    /// Region the node belongs to (empty for central and tools).
    pub region: String,
}

/// First frame of every connection, client → server.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    /// The client's [`crate::PROTOCOL_VERSION`].
    pub version: u16,
    /// The client's identity.
    pub node: NodeIdentity,
    /// Random per process start: a peer that dials again with another boot
    /// id restarted, so links to it from before are dead even if they have
    /// not timed out yet (a killed process sends no close).
    pub boot: u64,
}

/// Why a handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum RefuseReason {
    /// The peers speak different protocol versions.
    #[error("protocol version mismatch: server speaks {server}, client speaks {client}")]
    VersionMismatch {
        /// Server's version.
        server: u16,
        /// Client's version.
        client: u16,
    },
    /// The client belongs to another region than this hub.
    #[error(
        "node {node} is in region {client_region:?}, this server serves region {server_region:?}"
    )]
    WrongRegion {
        /// The client's node id.
        node: String,
        /// Region the client claimed.
        client_region: String,
        /// Region this server serves.
        server_region: String,
    },
    /// This kind of node may not open this kind of connection here.
    #[error("a {kind:?} node may not connect here")]
    KindNotAllowed {
        /// The refused kind.
        kind: NodeKind,
    },
}

/// Server's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum HelloReply {
    /// Accepted; carries the server's identity.
    Welcome {
        /// The server's identity.
        server: NodeIdentity,
    },
    /// Refused; the connection is closed after this frame.
    Refused(RefuseReason),
}

/// A run of spool entries from one edge. Entry `i` of `entries` has edge
/// sequence number `first_seq + i`. `(edge, epoch, seq)` identifies a record
/// exactly, so a hub stores each at most once however often it is resent.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct TelemetryBatch {
    /// Sending edge node.
    pub edge: String,
    /// The edge spool's incarnation: random, fixed when the spool is created,
    /// so a wiped edge that restarts its sequence numbers is not mistaken for
    /// a resend.
    pub epoch: u64,
    /// Spool sequence number of the first record.
    pub first_seq: u64,
    /// Telemetry, alerts and derived metrics, in spool order.
    pub entries: Vec<SpoolEntry>,
}

impl TelemetryBatch {
    /// One past the last sequence number in the batch.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64
    }
}

/// What an edge reports about itself with each heartbeat.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Encode, Decode)]
pub struct EdgeStatus {
    /// Edge node name.
    pub edge: String,
    /// Records in the spool not yet acknowledged by the hub.
    pub spool_records: u64,
    /// Bytes on disk in the spool.
    pub spool_bytes: u64,
    /// Records accepted from devices per second, recent average.
    pub ingest_rate: f64,
    /// Devices currently connected over MQTT.
    pub connected_clients: u32,
    /// Milliseconds since the edge process started.
    pub uptime_ms: u64,
    /// CPU and memory set aside for monitors.
    pub capacity: MonitorCapacity,
    /// Budgets of the instances that hold capacity.
    pub reserved: MonitorCapacity,
    /// Measured use of the machine.
    pub node: NodeResources,
    /// Every monitor instance assigned to the edge.
    pub instances: Vec<InstanceStatus>,
    /// Region assignments version the edge has applied.
    pub assignments_version: u64,
    /// Sync lag: how long ago the oldest record the region has not yet
    /// acknowledged was made durable here, ms (0 with nothing unacknowledged;
    /// measured at heartbeat resolution, and from the process start for
    /// records left over from before a restart). Protocol version 8.
    #[serde(default)]
    pub sync_lag_ms: u64,
    /// When the edge's own certificate expires, ms since the Unix epoch;
    /// `None` if it could not be read. Protocol version 8.
    #[serde(default)]
    pub cert_expires_ms: Option<i64>,
}

/// Edge → hub request.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum EdgeRequest {
    /// Store these records.
    Batch(TelemetryBatch),
    /// Liveness and backlog report.
    Heartbeat(EdgeStatus),
    /// The monitors assigned to `edge`.
    FetchAssignments {
        /// Edge node name.
        edge: String,
    },
    /// A module's bytes.
    FetchArtifact {
        /// Its sha256 (64 lowercase hex digits).
        sha256: String,
    },
    /// Liveness and backlog report with the edge process's boot id
    /// (protocol version 4; replaces `Heartbeat`, which hubs still answer).
    /// Answered with [`EdgeResponse::PulseAck`] since protocol version 5.
    Pulse(EdgeHeartbeat),
    /// The allocations placed on `edge` (protocol version 5; replaces
    /// `FetchAssignments`). Answered by the leader only, with
    /// [`EdgeResponse::Allocations`].
    FetchAllocations {
        /// Edge node name.
        edge: String,
    },
}

/// Where the current Raft leader can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct LeaderHint {
    /// Raft id of the leader replica.
    pub hub_id: u64,
    /// Its edge-facing QUIC address (`host:port`).
    pub addr: String,
}

/// Hub → edge response.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum EdgeResponse {
    /// The batch is committed by the Raft group (possibly earlier, if this
    /// was a resend); the edge may trim it from its spool.
    Committed {
        /// Echo of the batch's first sequence number.
        first_seq: u64,
        /// Echo of its record count.
        count: u32,
    },
    /// The heartbeat was recorded.
    HeartbeatAck {
        /// The region's current assignments version; an edge whose applied
        /// version differs fetches its assignments.
        assignments_version: u64,
        /// The answering hub's telemetry store retention, ms (0: keeps data
        /// for ever). The edge refuses readings older than this at ingress,
        /// since the hub would drop them right after they were acknowledged.
        store_retention_ms: u64,
    },
    /// This replica is not the leader; retry at `leader` when known.
    NotLeader {
        /// The leader, if this replica knows one.
        leader: Option<LeaderHint>,
    },
    /// The hub cannot take writes right now (no quorum, shutting down, …);
    /// retry later with backoff.
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The request itself is invalid; retrying it will not help.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Answer to [`EdgeRequest::FetchAssignments`].
    Assignments {
        /// Region assignments version these reflect.
        version: u64,
        /// Specs of the monitors assigned to the edge.
        monitors: Vec<MonitorSpec>,
    },
    /// Answer to [`EdgeRequest::FetchArtifact`].
    Artifact {
        /// Its sha256.
        sha256: String,
        /// The module bytes.
        bytes: Vec<u8>,
    },
    /// Answer to [`EdgeRequest::Pulse`]: `HeartbeatAck` plus whether the
    /// leader renewed the edge's leases.
    PulseAck {
        /// The region's current assignments version; an edge whose applied
        /// version differs fetches its allocations.
        assignments_version: u64,
        /// The answering hub's telemetry store retention, ms (0: for ever).
        store_retention_ms: u64,
        /// The leader renewed every lease the edge holds, counted from when
        /// the edge *sent* this heartbeat. False when the region does not
        /// (yet) consider the edge up: its `replace-after` instances may be
        /// replaced elsewhere, so their leases must run out.
        lease_renewed: bool,
    },
    /// Answer to [`EdgeRequest::FetchAllocations`].
    Allocations {
        /// Region assignments version these reflect.
        version: u64,
        /// Whether this set grants leases to its `replace-after`
        /// allocations (from when the edge sent the request). False when
        /// the region does not consider the edge up.
        lease_granted: bool,
        /// Every allocation the edge must run.
        allocations: Vec<EdgeAllocation>,
    },
}

/// Replica ↔ replica frame on the Raft peer connection (a region's hubs,
/// central's replicas).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum PeerFrame {
    /// Raft messages, each protobuf-encoded `eraftpb::Message`.
    Raft(Vec<Vec<u8>>),
    /// A follower asks the leader to propose an encoded command (on its own
    /// bidirectional stream; answered by [`PeerFrame::Forwarded`]).
    Forward(Vec<u8>),
    /// The answer to a [`PeerFrame::Forward`].
    Forwarded(ForwardReply),
}

/// How a forwarded proposal went on the replica it was sent to.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ForwardReply {
    /// Applied: the machine's encoded outcome.
    Applied(Vec<u8>),
    /// That replica is not the leader (any more).
    NotLeader {
        /// Where the leader is, when known.
        leader: Option<LeaderHint>,
    },
    /// May or may not have been committed; retry (commands are idempotent).
    Unavailable(String),
    /// Invalid; retrying will not help.
    Rejected(String),
}

/// Raft role of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub enum RaftRole {
    /// Following a leader.
    Follower,
    /// Campaigning.
    Candidate,
    /// Pre-campaigning.
    PreCandidate,
    /// Leading the group.
    Leader,
}

/// One member of a region's Raft group as seen by a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ReplicaInfo {
    /// Raft id.
    pub id: u64,
    /// Peer (hub ↔ hub) QUIC address.
    pub peer_addr: String,
    /// Client (edge / central) QUIC address.
    pub client_addr: String,
    /// True for a voter, false for a learner.
    pub voter: bool,
}

/// A replica's view of itself and its group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub struct HubStatus {
    /// Region name.
    pub region: String,
    /// This replica's Raft id.
    pub id: u64,
    /// Raft role.
    pub role: RaftRole,
    /// Current term.
    pub term: u64,
    /// Known leader id, if any.
    pub leader: Option<u64>,
    /// Highest log index known committed.
    pub commit_index: u64,
    /// Highest log index applied to the state machine.
    pub applied_index: u64,
    /// Last log index in this replica's log.
    pub last_index: u64,
    /// Group membership.
    pub replicas: Vec<ReplicaInfo>,
    /// Records stored by this replica's telemetry store.
    pub stored_records: u64,
    /// The leader's view of every member (reachability, replication lag,
    /// voter or learner); empty unless this replica leads.
    pub peers: Vec<PeerProgress>,
    /// When this replica's certificate expires, ms since the Unix epoch;
    /// `None` if it could not be read. Protocol version 8.
    #[serde(default)]
    pub cert_expires_ms: Option<i64>,
}

/// One edge node as recorded in replicated region state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub struct EdgeInfo {
    /// Edge node name.
    pub edge: String,
    /// Hub time of its last heartbeat or batch, ms since the Unix epoch.
    pub last_seen_ms: i64,
    /// Last reported status.
    pub status: EdgeStatus,
    /// Records from this edge stored in the region.
    pub records_stored: u64,
    /// Records from this edge dropped because it had sent them before
    /// (resent or re-cut batches; the region stored them once).
    #[serde(default)]
    pub resends_dropped: u64,
    /// What the region's failure detector thinks of the edge: the leader's
    /// current view, or the last replicated decision when a follower
    /// answers. `None` before any decision.
    #[serde(default)]
    pub liveness: Option<EdgeLiveness>,
    /// Leases of the `replace-after` instances placed on the edge.
    #[serde(default)]
    pub leases: Vec<crate::scheduling::EdgeLease>,
    /// Whether the leader renews the edge's leases now (it leads, has
    /// decided the edge is up, not held for flapping, and that decision is
    /// in the log). `None` when a follower answers.
    #[serde(default)]
    pub renewing_leases: Option<bool>,
}

/// One device known to the region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct DeviceInfo {
    /// Tenant.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// Records stored.
    pub records: u64,
    /// Earliest reading, ms since the Unix epoch.
    pub first_ts_ms: i64,
    /// Latest reading, ms since the Unix epoch.
    pub last_ts_ms: i64,
    /// Readings dropped because the region had already stored the same
    /// reading (same seq, timestamp and content): MQTT retransmissions.
    #[serde(default)]
    pub retransmissions_dropped: u64,
    /// Readings stored although their seq had recently been used by another
    /// reading of the device (counter restart, clock jump or spoofing).
    #[serde(default)]
    pub seq_reuses: u64,
    /// The edge its latest stored reading came through (protocol version
    /// 8); `None` for devices stored before.
    #[serde(default)]
    pub edge: Option<String>,
}

/// Records of one tenant that a replica's retention dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct TenantRetention {
    /// Tenant.
    pub tenant: String,
    /// Records that reached the region for a time partition retention had
    /// already dropped (older than retention on arrival): acknowledged by
    /// the edge, never stored.
    pub expired_on_arrival: u64,
    /// Records dropped with their time partition when it expired.
    pub expired: u64,
}

/// Answer to [`HubRequest::Retention`]: what retention dropped on the
/// replica that answers, per tenant, since its store was created (counts
/// are checkpointed with the store, and come with a Raft snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct RetentionReport {
    /// The replica's `store.retention-ms` (0 keeps data for ever).
    pub retention_ms: u64,
    /// Readings before this time (ms since the Unix epoch) are dropped on
    /// arrival; `None` until retention first ran since the replica started.
    pub retained_from_ms: Option<i64>,
    /// Tenants with drops, sorted.
    pub tenants: Vec<TenantRetention>,
}

/// A telemetry read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct TelemetryQuery {
    /// Tenant.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// Inclusive start, ms since the Unix epoch.
    pub from_ms: i64,
    /// Exclusive end, ms since the Unix epoch.
    pub to_ms: i64,
    /// Bucket width in ms for a downsampled result; `None` for raw records.
    pub step_ms: Option<u64>,
    /// Most raw records or buckets to return.
    pub limit: u32,
}

/// One downsampled bucket of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub struct Bucket {
    /// Metric name.
    pub metric: String,
    /// Bucket start, ms since the Unix epoch.
    pub start_ms: i64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub avg: f64,
    /// Number of values.
    pub count: u64,
}

/// Result of a [`TelemetryQuery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "data")]
pub enum QueryResult {
    /// Raw records in time order.
    Raw(Vec<TelemetryRecord>),
    /// Buckets ordered by metric, then start time.
    Downsampled(Vec<Bucket>),
}

/// Central / CLI → hub request.
// One short-lived value per request: boxing the spec would cost every
// caller an indirection for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum HubRequest {
    /// This replica's [`HubStatus`].
    Status,
    /// Edge nodes in the region.
    ListEdges,
    /// Devices in the region, optionally of one tenant.
    ListDevices {
        /// Restrict to this tenant.
        tenant: Option<String>,
    },
    /// Read telemetry.
    Query(TelemetryQuery),
    /// Add a replica as a voter, through a Raft conf change. Leader only.
    /// It joins as a learner and is promoted once it has caught up; the
    /// answer (`ConfChanged`, or `MembershipRefused` with the reason) comes
    /// only then.
    AddReplica(ReplicaInfo),
    /// Remove a replica through a Raft conf change. Leader only.
    RemoveReplica {
        /// Raft id to remove.
        id: u64,
    },
    /// Store a module (validated first). Leader only.
    PutArtifact {
        /// Module bytes.
        bytes: Vec<u8>,
    },
    /// Create or update a monitor (validated, placed, replicated). Leader only.
    SubmitMonitor(MonitorSpec),
    /// Monitors in the region, optionally of one tenant.
    ListMonitors {
        /// Restrict to this tenant.
        tenant: Option<String>,
    },
    /// One monitor.
    GetMonitor {
        /// Tenant.
        tenant: String,
        /// Monitor name.
        name: String,
    },
    /// Delete a monitor. Leader only.
    DeleteMonitor {
        /// Tenant.
        tenant: String,
        /// Monitor name.
        name: String,
    },
    /// Read alerts.
    QueryAlerts(AlertQuery),
    /// What this replica's retention dropped, optionally of one tenant.
    Retention {
        /// Restrict to this tenant.
        tenant: Option<String>,
    },
    /// The region's event log from `from_seq` on. Any replica answers from
    /// its applied state (the log is replicated).
    Events {
        /// First sequence number wanted (1 for the oldest held).
        from_seq: u64,
        /// Most events returned (the hub caps it).
        limit: u32,
        /// When no event at or after `from_seq` exists yet, wait up to this
        /// long (ms; the hub caps it) for one before answering an empty page.
        wait_ms: u32,
    },
    /// The region's capacity summary for central's global scheduler: what
    /// it can still take (fit counts summed per edge, per pool), whose
    /// devices report through it, and how many live instances it runs of
    /// each of `global`. Leader only (the leader's applied state is the
    /// freshest the region has).
    RegionSummary {
        /// The workloads central manages globally: the summary's `placed`
        /// counts the live instances of each (their region workloads have
        /// the same ids).
        global: Vec<WorkloadId>,
    },
    /// The first matches of a device search, with the match count per edge
    /// (protocol version 8): what a console page needs without the whole
    /// device list crossing the network.
    SearchDevices(DeviceSearch),
}

/// A search over a region's devices ([`HubRequest::SearchDevices`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct DeviceSearch {
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// Only devices whose tenant, id or edge contains this, ignoring ASCII
    /// case; `None` or empty: every device.
    pub contains: Option<String>,
    /// Most devices returned: the first matches in (tenant, device) order.
    /// 0 returns only the counts.
    pub limit: u32,
}

impl DeviceSearch {
    /// Whether `d` matches.
    pub fn matches(&self, d: &DeviceInfo) -> bool {
        let Some(want) = self.contains.as_deref().filter(|w| !w.is_empty()) else {
            return true;
        };
        contains_ignoring_case(&d.tenant, want)
            || contains_ignoring_case(&d.device, want)
            || d.edge
                .as_deref()
                .is_some_and(|e| contains_ignoring_case(e, want))
    }

    /// The page this search selects of `devices` (sorted by tenant then
    /// device, as a region lists them): the first `limit` matches, in
    /// order, and the counts of all of them.
    pub fn page(&self, devices: Vec<DeviceInfo>) -> DevicePage {
        let mut page = DevicePage::default();
        let mut by_edge: std::collections::BTreeMap<String, u64> =
            std::collections::BTreeMap::new();
        for d in devices {
            if !self.matches(&d) {
                continue;
            }
            page.matched += 1;
            *by_edge
                .entry(d.edge.clone().unwrap_or_default())
                .or_default() += 1;
            if page.devices.len() < self.limit as usize {
                page.devices.push(d);
            }
        }
        page.by_edge = by_edge.into_iter().collect();
        page
    }
}

/// Whether `hay` contains `needle`, ignoring ASCII case, without
/// allocating (device and tenant names are ASCII).
fn contains_ignoring_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Answer to a [`DeviceSearch`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct DevicePage {
    /// The first matches, sorted by tenant then device.
    pub devices: Vec<DeviceInfo>,
    /// Every match, counted.
    pub matched: u64,
    /// Matches by the edge they report through (empty name: not known),
    /// sorted by edge.
    pub by_edge: Vec<(String, u64)>,
}

/// Hub → central / CLI response.
// One short-lived value per request, never stored in bulk: boxing the large
// monitor variant would cost every caller an indirection for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum HubResponse {
    /// Answer to [`HubRequest::Status`].
    Status(HubStatus),
    /// Answer to [`HubRequest::ListEdges`].
    Edges(Vec<EdgeInfo>),
    /// Answer to [`HubRequest::ListDevices`].
    Devices(Vec<DeviceInfo>),
    /// Answer to [`HubRequest::Query`].
    Telemetry(QueryResult),
    /// A conf change was committed.
    ConfChanged {
        /// Membership after the change.
        replicas: Vec<ReplicaInfo>,
    },
    /// Not the leader; ask `leader`.
    NotLeader {
        /// The leader, if known.
        leader: Option<LeaderHint>,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
    /// Answer to [`HubRequest::PutArtifact`].
    ArtifactStored {
        /// Its sha256.
        sha256: String,
        /// Its size, bytes.
        size_bytes: u64,
        /// False when it was already stored.
        created: bool,
    },
    /// The spec or module is invalid; every bad field is listed.
    Invalid(SpecErrors),
    /// Answer to [`HubRequest::SubmitMonitor`] and [`HubRequest::GetMonitor`].
    Monitor(MonitorInfo),
    /// Answer to [`HubRequest::ListMonitors`].
    Monitors(Vec<MonitorInfo>),
    /// Answer to [`HubRequest::DeleteMonitor`].
    MonitorDeleted,
    /// The named monitor does not exist.
    NotFound {
        /// What was not found.
        what: String,
    },
    /// Answer to [`HubRequest::QueryAlerts`], newest first.
    Alerts(Vec<AlertRecord>),
    /// A membership change was refused, with the reason.
    MembershipRefused(MembershipRefusal),
    /// Answer to [`HubRequest::Retention`].
    Retention(RetentionReport),
    /// Answer to [`HubRequest::Events`].
    Events(EventPage),
    /// Answer to [`HubRequest::RegionSummary`]. Boxed: the shape central's
    /// global scheduler is written against (not needed for the enum's size).
    RegionSummary(Box<RegionSummary>),
    /// Answer to [`HubRequest::SearchDevices`].
    DevicePage(DevicePage),
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_sched::global::STANDARD_SIZES;
    use strata_sched::{ClusterSnapshot, Node, Resources, SchedulerConfig, Timestamp};

    use super::*;
    use crate::frame::{bincode_config, decode_body};

    fn device(tenant: &str, id: &str, edge: Option<&str>) -> DeviceInfo {
        DeviceInfo {
            tenant: tenant.into(),
            device: id.into(),
            records: 1,
            first_ts_ms: 0,
            last_ts_ms: 0,
            retransmissions_dropped: 0,
            seq_reuses: 0,
            edge: edge.map(Into::into),
        }
    }

    /// A search keeps the list's order, returns the first `limit` matches
    /// and counts all of them, per edge; it matches tenant, id or edge,
    /// ignoring case.
    #[test]
    fn a_device_search_pages_and_counts_every_match() {
        let list = vec![
            device("acme", "Pump-1", Some("edge-1")),
            device("acme", "pump-2", Some("edge-2")),
            device("acme", "valve-1", Some("edge-1")),
            device("zeta", "pump-3", None),
        ];
        let search = |contains: Option<&str>, limit| DeviceSearch {
            tenant: None,
            contains: contains.map(Into::into),
            limit,
        };
        let p = search(Some("pump"), 2).page(list.clone());
        let ids: Vec<&str> = p.devices.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(ids, ["Pump-1", "pump-2"]);
        assert_eq!(p.matched, 3);
        assert_eq!(
            p.by_edge,
            vec![("".into(), 1), ("edge-1".into(), 1), ("edge-2".into(), 1)]
        );
        let p = search(Some("EDGE-1"), 10).page(list.clone());
        assert_eq!(p.matched, 2, "by the edge a device reports through");
        let p = search(Some("zet"), 10).page(list.clone());
        assert_eq!(p.matched, 1, "by tenant");
        let p = search(None, 0).page(list.clone());
        assert_eq!((p.devices.len(), p.matched), (0, 4), "counts only");
        let p = search(Some(""), 1).page(list);
        assert_eq!((p.devices.len(), p.matched), (1, 4), "empty matches all");
    }

    fn body<T: Encode>(msg: &T) -> Vec<u8> {
        bincode::encode_to_vec(msg, bincode_config()).unwrap()
    }

    #[test]
    fn the_region_summary_is_appended_and_round_trips() {
        // Appended: every earlier variant keeps its discriminant, so older
        // peers decode them unchanged (bincode's varint tag is the first
        // byte; 14 and 17 are the counts of the variants before).
        let req = HubRequest::RegionSummary {
            global: vec![WorkloadId::new("acme", "watch")],
        };
        let bytes = body(&req);
        assert_eq!(bytes[0], 14, "HubRequest::RegionSummary is appended");
        assert_eq!(decode_body::<HubRequest>(&bytes).unwrap(), req);

        let snap = ClusterSnapshot::from_parts(
            1,
            SchedulerConfig::default(),
            vec![Node::new("e1", Resources::new(1000, 1 << 30))],
            vec![],
            vec![],
        );
        let summary = RegionSummary::from_snapshot(
            "west",
            &snap,
            &STANDARD_SIZES,
            BTreeMap::from([("acme".to_owned(), 3)]),
            &[],
            Timestamp(5),
        );
        let resp = HubResponse::RegionSummary(Box::new(summary));
        let bytes = body(&resp);
        assert_eq!(bytes[0], 17, "HubResponse::RegionSummary is appended");
        assert_eq!(decode_body::<HubResponse>(&bytes).unwrap(), resp);
    }
}
