//! JSON shapes of the API responses (kebab-case keys throughout, like the
//! config file and request bodies). Kept apart from the wire types so the
//! protocol can evolve without silently changing the public API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_protocol::liveness::EdgeLiveness;
use strata_protocol::monitoring::{InstanceStatus, MonitorCapacity, NodeResources};
use strata_protocol::scheduling::EdgeLease;
use strata_protocol::{
    Bucket, DeviceInfo, EdgeInfo, HubStatus, PeerProgress, RaftRole, ReplicaInfo, TelemetryRecord,
};

use crate::region::health::{assess, leader_status, Health};
use crate::region::{RegionStatus, ReplicaStatus};

/// One replica in `GET /api/v1/regions`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ReplicaView {
    /// Address central dialed.
    pub addr: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Why not, when unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Raft id.
    pub id: Option<u64>,
    /// Raft role.
    #[schema(value_type = Option<String>)]
    pub role: Option<RaftRole>,
    /// Current term.
    pub term: Option<u64>,
    /// The leader this replica knows.
    pub leader: Option<u64>,
    /// Highest committed log index.
    pub commit_index: Option<u64>,
    /// Highest applied log index.
    pub applied_index: Option<u64>,
    /// Last log index.
    pub last_index: Option<u64>,
    /// Records in its telemetry store.
    pub stored_records: Option<u64>,
    /// When its certificate expires, ms since the epoch (null when
    /// unreachable or not reported).
    #[serde(default)]
    pub cert_expires_ms: Option<i64>,
}

impl From<ReplicaStatus> for ReplicaView {
    fn from(r: ReplicaStatus) -> ReplicaView {
        match r.status {
            Ok(s) => ReplicaView::reached(r.addr, s),
            Err(error) => ReplicaView {
                addr: r.addr,
                reachable: false,
                error: Some(error),
                id: None,
                role: None,
                term: None,
                leader: None,
                commit_index: None,
                applied_index: None,
                last_index: None,
                stored_records: None,
                cert_expires_ms: None,
            },
        }
    }
}

impl ReplicaView {
    fn reached(addr: String, s: HubStatus) -> ReplicaView {
        ReplicaView {
            addr,
            reachable: true,
            error: None,
            id: Some(s.id),
            role: Some(s.role),
            term: Some(s.term),
            leader: s.leader,
            commit_index: Some(s.commit_index),
            applied_index: Some(s.applied_index),
            last_index: Some(s.last_index),
            stored_records: Some(s.stored_records),
            cert_expires_ms: s.cert_expires_ms,
        }
    }
}

/// One member as the leader sees it, in `GET /api/v1/regions`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct PeerView {
    /// Client-facing address (empty if the leader knows none).
    pub client_addr: String,
    /// The leader's view of it (id, voter, reachable, silent-ms, matched,
    /// lag, lagging, joining).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub progress: PeerProgress,
}

impl PeerView {
    fn new(p: PeerProgress, members: &[ReplicaInfo]) -> PeerView {
        PeerView {
            client_addr: members
                .iter()
                .find(|m| m.id == p.id)
                .map(|m| m.client_addr.clone())
                .unwrap_or_default(),
            progress: p,
        }
    }
}

/// One region in `GET /api/v1/regions`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct RegionView {
    /// Region name.
    pub name: String,
    /// Raft id of the leader, if a replica reports itself leader.
    pub leader: Option<u64>,
    /// `healthy`, `degraded` (a leader, but a member is unreachable,
    /// lagging or a learner) or `unavailable` (no leader: no writes).
    pub status: Health,
    /// True only when `status` is `healthy`.
    pub healthy: bool,
    /// Why the region is not healthy, one sentence per replica.
    pub problems: Vec<String>,
    /// Replicas that answered / total known.
    pub reachable_replicas: usize,
    /// Every known replica, as central reached it.
    pub replicas: Vec<ReplicaView>,
    /// Every member as the leader sees it (empty without a leader).
    pub members: Vec<PeerView>,
}

impl From<RegionStatus> for RegionView {
    fn from(s: RegionStatus) -> RegionView {
        let assessment = assess(&s);
        let members = leader_status(&s)
            .map(|l| {
                l.peers
                    .iter()
                    .map(|p| PeerView::new(p.clone(), &l.replicas))
                    .collect()
            })
            .unwrap_or_default();
        let replicas: Vec<ReplicaView> = s.replicas.into_iter().map(Into::into).collect();
        RegionView {
            name: s.region,
            leader: s.leader,
            status: assessment.health,
            healthy: assessment.health == Health::Healthy,
            problems: assessment.problems,
            reachable_replicas: replicas.iter().filter(|r| r.reachable).count(),
            replicas,
            members,
        }
    }
}

/// A region that could not answer a federated read.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct RegionFailure {
    /// Region name.
    pub region: String,
    /// Error code, as in the error body.
    pub code: std::borrow::Cow<'static, str>,
    /// What went wrong.
    pub message: String,
}

/// One edge in `GET /api/v1/edges`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct EdgeView {
    /// Region of the edge.
    pub region: String,
    /// Edge node name.
    pub name: String,
    /// Hub time of the last heartbeat or batch, ms since the epoch.
    pub last_seen_ms: i64,
    /// Milliseconds since then, by central's clock.
    pub age_ms: i64,
    /// Records waiting in the edge spool.
    pub spool_records: u64,
    /// Bytes of the edge spool.
    pub spool_bytes: u64,
    /// Records accepted per second, recent average.
    pub ingest_rate: f64,
    /// Devices connected over MQTT.
    pub connected_clients: u32,
    /// Records from this edge stored in the region.
    pub records_stored: u64,
    /// Records from this edge the region dropped because it had sent them
    /// before (resent batches; stored once).
    pub resends_dropped: u64,
    /// Edge process uptime, ms.
    pub uptime_ms: u64,
    /// Sync lag: how long ago the oldest record the region has not yet
    /// acknowledged was made durable on the edge, ms (0: caught up). To a
    /// heartbeat's resolution, as the edge last reported it.
    #[serde(default)]
    pub sync_lag_ms: u64,
    /// When the edge's certificate expires, ms since the epoch; null when
    /// the edge did not report it (older edges).
    #[serde(default)]
    pub cert_expires_ms: Option<i64>,
    /// CPU and memory the edge sets aside for monitors.
    #[schema(value_type = Object)]
    pub monitor_capacity: MonitorCapacity,
    /// Budgets of the monitor instances holding capacity.
    #[schema(value_type = Object)]
    pub monitor_reserved: MonitorCapacity,
    /// Measured use of the machine (CPU, memory, disk, network, process RSS).
    #[schema(value_type = Object)]
    pub node: NodeResources,
    /// Monitor instances assigned to the edge, as it last reported them.
    #[schema(value_type = Vec<Object>)]
    pub instances: Vec<InstanceStatus>,
    /// What the region's failure detector thinks of it: `state` (`up`,
    /// `suspect`, `down`, `unknown`), `classification` of the last failure
    /// (`undetermined`, `shutdown`, `crash`, `edge-failure`, `partition`),
    /// `evidence`, `boot-id`, `since-ms`, `last-heartbeat-ms`,
    /// `detection-ms`, `event-seq`. Null before any decision.
    #[schema(value_type = Option<Object>)]
    pub liveness: Option<EdgeLiveness>,
    /// Leases of its `replace-after` monitor instances: `tenant`,
    /// `workload`, `slot`, `allocation`, `fencing-token`, `expires-ms` (until
    /// when the region counts the lease, margin included, as of its last
    /// recorded grant).
    #[schema(value_type = Vec<Object>)]
    pub leases: Vec<EdgeLease>,
    /// Whether the region's leader renews the edge's leases now (it has
    /// decided the edge is up and replicated that); null when a follower
    /// answered.
    pub renewing_leases: Option<bool>,
}

impl EdgeView {
    /// View of `e` in `region` at `now_ms`.
    pub fn new(region: &str, e: EdgeInfo, now_ms: i64) -> EdgeView {
        EdgeView {
            region: region.to_owned(),
            name: e.edge,
            last_seen_ms: e.last_seen_ms,
            age_ms: now_ms.saturating_sub(e.last_seen_ms).max(0),
            spool_records: e.status.spool_records,
            spool_bytes: e.status.spool_bytes,
            ingest_rate: e.status.ingest_rate,
            connected_clients: e.status.connected_clients,
            records_stored: e.records_stored,
            resends_dropped: e.resends_dropped,
            uptime_ms: e.status.uptime_ms,
            sync_lag_ms: e.status.sync_lag_ms,
            cert_expires_ms: e.status.cert_expires_ms,
            monitor_capacity: e.status.capacity,
            monitor_reserved: e.status.reserved,
            node: e.status.node,
            instances: e.status.instances,
            liveness: e.liveness,
            leases: e.leases,
            renewing_leases: e.renewing_leases,
        }
    }
}

/// One device in `GET /api/v1/devices`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct DeviceView {
    /// Region holding the device's data.
    pub region: String,
    /// Tenant.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// Records stored.
    pub records: u64,
    /// Earliest reading, ms since the epoch.
    pub first_ts_ms: i64,
    /// Latest reading, ms since the epoch.
    pub last_ts_ms: i64,
    /// Readings dropped because the region had already stored the same
    /// reading (same seq, time and content): MQTT retransmissions.
    pub retransmissions_dropped: u64,
    /// Readings stored although their seq had recently been used by another
    /// reading of the device: a counter restart, a clock jump or spoofing.
    pub seq_reuses: u64,
    /// The edge its latest stored reading came through; null when the
    /// region does not know (data stored before it recorded edges).
    #[serde(default)]
    pub edge: Option<String>,
}

impl DeviceView {
    /// View of `d` in `region`.
    pub fn new(region: &str, d: DeviceInfo) -> DeviceView {
        DeviceView {
            region: region.to_owned(),
            tenant: d.tenant,
            device: d.device,
            records: d.records,
            first_ts_ms: d.first_ts_ms,
            last_ts_ms: d.last_ts_ms,
            retransmissions_dropped: d.retransmissions_dropped,
            seq_reuses: d.seq_reuses,
            edge: d.edge,
        }
    }
}

/// `GET /api/v1/regions/{region}/retention`: what retention dropped.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct RetentionView {
    /// Region.
    pub region: String,
    /// Replica that answered (each counts its own drops).
    pub served_by: String,
    /// True when no leader could be reached and a follower answered.
    pub stale: bool,
    /// The replica's `store.retention-ms` (0 keeps data for ever).
    pub retention_ms: u64,
    /// Readings before this (ms since the epoch) are dropped on arrival;
    /// null until retention first ran since the replica started.
    pub retained_from_ms: Option<i64>,
    /// Tenants with drops, sorted.
    pub tenants: Vec<TenantRetentionView>,
}

/// One tenant in [`RetentionView`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct TenantRetentionView {
    /// Tenant.
    pub tenant: String,
    /// Acknowledged readings that reached the region already older than
    /// retention: never stored.
    pub expired_on_arrival: u64,
    /// Readings dropped when their time partition expired.
    pub expired: u64,
}

impl RetentionView {
    /// View of `r`, served by `served_by` of `region`.
    pub fn new(
        region: &str,
        served: crate::region::Served<strata_protocol::RetentionReport>,
    ) -> RetentionView {
        let r = served.value;
        RetentionView {
            region: region.to_owned(),
            served_by: served.addr,
            stale: served.stale,
            retention_ms: r.retention_ms,
            retained_from_ms: r.retained_from_ms,
            tenants: r
                .tenants
                .into_iter()
                .map(|t| TenantRetentionView {
                    tenant: t.tenant,
                    expired_on_arrival: t.expired_on_arrival,
                    expired: t.expired,
                })
                .collect(),
        }
    }
}

/// `GET /api/v1/edges`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct EdgesView {
    /// Edges, region by region.
    pub edges: Vec<EdgeView>,
    /// True when some region answered from a follower without a leader.
    pub stale: bool,
    /// Regions that could not answer; their edges are missing.
    pub errors: Vec<RegionFailure>,
}

/// `GET /api/v1/devices`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct DevicesView {
    /// Devices, region by region (one page of them with `limit`/`offset`).
    pub devices: Vec<DeviceView>,
    /// Devices that matched, before paging.
    #[serde(default)]
    pub total: u64,
    /// True when some region answered from a follower without a leader.
    pub stale: bool,
    /// Regions that could not answer; their devices are missing.
    pub errors: Vec<RegionFailure>,
}

/// One raw record in a telemetry read.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct RecordView {
    /// Reading time, ms since the epoch.
    pub ts_ms: i64,
    /// Device sequence number, if it sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Metric name → value.
    pub metrics: BTreeMap<String, f64>,
    /// Tag key → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl From<TelemetryRecord> for RecordView {
    fn from(r: TelemetryRecord) -> RecordView {
        RecordView {
            ts_ms: r.ts_ms,
            seq: r.seq,
            metrics: r.metrics.into_iter().map(|m| (m.name, m.value)).collect(),
            tags: r.tags.into_iter().map(|t| (t.key, t.value)).collect(),
        }
    }
}

/// One downsampled bucket.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct BucketView {
    /// Metric name.
    pub metric: String,
    /// Bucket start, ms since the epoch.
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

impl From<Bucket> for BucketView {
    fn from(b: Bucket) -> BucketView {
        BucketView {
            metric: b.metric,
            start_ms: b.start_ms,
            min: b.min,
            max: b.max,
            avg: b.avg,
            count: b.count,
        }
    }
}

/// The data of a telemetry read.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TelemetryData {
    /// Raw records in time order.
    Raw {
        /// The records.
        records: Vec<RecordView>,
    },
    /// Buckets by metric, then start time.
    Downsampled {
        /// The buckets.
        buckets: Vec<BucketView>,
    },
}

/// `GET /api/v1/telemetry/{tenant}/{device}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct TelemetryView {
    /// Region the data came from.
    pub region: String,
    /// Tenant.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// Inclusive start, ms.
    pub from_ms: i64,
    /// Exclusive end, ms.
    pub to_ms: i64,
    /// Bucket width, ms, for a downsampled read.
    pub step_ms: Option<u64>,
    /// The limit applied.
    pub limit: u32,
    /// Records or buckets returned.
    pub count: usize,
    /// True when `count` reached `limit`: there may be more.
    pub truncated: bool,
    /// True when served by a follower without a leader.
    pub stale: bool,
    /// Hub address that answered.
    pub served_by: String,
    /// `kind` plus `records` or `buckets`.
    #[serde(flatten)]
    pub data: TelemetryData,
}

/// Body of `POST /api/v1/regions/{region}/replicas`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AddReplicaBody {
    /// Raft id of the new replica (non-zero, unused in the group).
    pub id: u64,
    /// Its hub ↔ hub QUIC address, `host:port`.
    pub peer_addr: String,
    /// Its client-facing QUIC address, `host:port`.
    pub client_addr: String,
}

/// One member in a membership answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct MemberView {
    /// Raft id.
    pub id: u64,
    /// Hub ↔ hub address.
    pub peer_addr: String,
    /// Client-facing address.
    pub client_addr: String,
    /// Voter (true) or learner.
    pub voter: bool,
}

impl From<ReplicaInfo> for MemberView {
    fn from(r: ReplicaInfo) -> MemberView {
        MemberView {
            id: r.id,
            peer_addr: r.peer_addr,
            client_addr: r.client_addr,
            voter: r.voter,
        }
    }
}

/// Answer to a membership change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct MembershipView {
    /// Region name.
    pub region: String,
    /// Membership after the change.
    pub replicas: Vec<MemberView>,
}
