//! Decoding of what older hubs wrote: Raft entries of command kinds 1 and 2
//! (protocol version 1), monitor puts of kind 6 (specs without placement,
//! pinned to one edge) and region state formats 1 to 5. A replica upgraded
//! in place replays its log after the last checkpoint, so these stay
//! readable.
//!
//! State format 6 added the monitor instances' state checkpoints after
//! the format-5 fields; a format-5 state decodes with none (instances
//! replaced after the upgrade start from their edge's local state, as
//! before).
//!
//! State format 5 added the scheduler: a monitor is no longer pinned to an
//! edge but has allocations, and a spec has a `[placement]`. A format-4
//! monitor (and a kind-6 put) becomes a workload without placement (one
//! instance, `keep`) with one allocation on the edge it was pinned to, so
//! an upgrade moves nothing: the allocation's id is derived from the
//! workload and generation (the same on every replica), its fencing token
//! comes from the region counter, and its client state is `pending` until
//! the edge reports it.
//!
//! State format 4 added each edge's liveness decision and the event log
//! after the format-3 fields; a format-3 state decodes with neither (the
//! first leader after the upgrade decides every edge afresh).
//!
//! State format 2 kept, per device, the set of device `seq`s stored; format
//! 3 keeps the exact keys of recent readings instead ([`super::dedup`]). The
//! old sets say nothing about timestamps or content, so a device's window
//! starts empty: after an upgrade, a retransmission of a reading stored
//! before it is stored a second time (never is a reading dropped). The
//! region-wide count of "seq restarts" of the old heuristic is dropped.
//!
//! The layouts below are frozen copies of the old wire types; never edit
//! them.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use strata_protocol::liveness::EdgeLiveness;
use strata_protocol::workload::{
    ArtifactRef, DeviceSelector, MonitorSpec, Placement, Resources, RestartPolicy, RuntimeKind,
};
use strata_protocol::{EdgeStatus, SpoolEntry, Tag, TelemetryBatch, TelemetryRecord};
use strata_sched::{
    AllocId, AllocStop, Allocation, ClientState, Desired, EvalId, NodeId, NodePlan, PlaceReason,
    PlacementMeta, StopReason, WorkloadId,
};
use twox_hash::XxHash3_64;

use super::alerts::AlertIndex;
use super::allocs::{AllocRecord, Scheduling};
use super::checkpoints::Checkpoints;
use super::dedup::RecentReadings;
use super::interval::IntervalSet;
use super::liveness::EventLog;
use super::plan::PlanCommit;
use super::sched_view::{workload_of, SchedChange};
use super::state::{DeviceEntry, EdgeEntry, RegionState};
use super::workloads::{ArtifactEntry, MonitorEntry, Workloads};
use super::Outcome;

/// `EdgeStatus` of protocol version 1.
#[derive(Encode, Decode)]
pub(super) struct EdgeStatusV1 {
    edge: String,
    spool_records: u64,
    spool_bytes: u64,
    ingest_rate: f64,
    connected_clients: u32,
    uptime_ms: u64,
}

impl From<EdgeStatusV1> for EdgeStatus {
    fn from(s: EdgeStatusV1) -> Self {
        EdgeStatus {
            edge: s.edge,
            spool_records: s.spool_records,
            spool_bytes: s.spool_bytes,
            ingest_rate: s.ingest_rate,
            connected_clients: s.connected_clients,
            uptime_ms: s.uptime_ms,
            ..EdgeStatus::default()
        }
    }
}

/// `TelemetryBatch` of protocol version 1 (telemetry only).
#[derive(Encode, Decode)]
pub(super) struct TelemetryBatchV1 {
    edge: String,
    epoch: u64,
    first_seq: u64,
    records: Vec<TelemetryRecord>,
}

impl From<TelemetryBatchV1> for TelemetryBatch {
    fn from(b: TelemetryBatchV1) -> Self {
        TelemetryBatch {
            edge: b.edge,
            epoch: b.epoch,
            first_seq: b.first_seq,
            entries: b.records.into_iter().map(SpoolEntry::Telemetry).collect(),
        }
    }
}

/// Body of command kind 1.
#[derive(Encode, Decode)]
pub(super) struct StoreBatchBodyV1 {
    pub(super) batch: TelemetryBatchV1,
    pub(super) received_ms: i64,
}

/// Body of command kind 2.
#[derive(Encode, Decode)]
pub(super) struct HeartbeatBodyV1 {
    pub(super) status: EdgeStatusV1,
    pub(super) received_ms: i64,
}

#[derive(Encode, Decode)]
struct EdgeEntryV1 {
    last_seen_ms: i64,
    status: EdgeStatusV1,
    records_stored: u64,
    epochs: BTreeMap<u64, IntervalSet>,
}

#[derive(Encode, Decode)]
struct DeviceEntryV1 {
    records: u64,
    first_ts_ms: i64,
    last_ts_ms: i64,
    _seqs: IntervalSet,
}

/// Region state format 1.
#[derive(Encode, Decode)]
pub(super) struct RegionStateV1 {
    applied_index: u64,
    edges: BTreeMap<String, EdgeEntryV1>,
    devices: BTreeMap<String, BTreeMap<String, DeviceEntryV1>>,
    dedup_gaps_merged: u64,
    _device_seq_restarts: u64,
}

impl From<RegionStateV1> for RegionState {
    fn from(s: RegionStateV1) -> Self {
        let edges = s
            .edges
            .into_iter()
            .map(|(k, e)| {
                (
                    k,
                    EdgeEntry {
                        last_seen_ms: e.last_seen_ms,
                        status: e.status.into(),
                        records_stored: e.records_stored,
                        resends_dropped: 0,
                        epochs: e.epochs,
                    },
                )
            })
            .collect();
        let devices = s
            .devices
            .into_iter()
            .map(|(t, devs)| {
                let devs = devs
                    .into_iter()
                    .map(|(d, e)| {
                        (
                            d,
                            DeviceEntry {
                                records: e.records,
                                first_ts_ms: e.first_ts_ms,
                                last_ts_ms: e.last_ts_ms,
                                // The seq set converts to an empty window.
                                recent: RecentReadings::default(),
                                retransmissions_dropped: 0,
                                seq_reuses: 0,
                                tags: Vec::new(),
                                edge: String::new(),
                            },
                        )
                    })
                    .collect();
                (t, devs)
            })
            .collect();
        RegionState::from_parts(
            s.applied_index,
            edges,
            devices,
            s.dedup_gaps_merged,
            AlertIndex::default(),
            Workloads::default(),
            BTreeMap::new(),
            EventLog::default(),
            Scheduling::default(),
            Checkpoints::default(),
        )
    }
}

#[derive(Decode)]
struct EdgeEntryV2 {
    last_seen_ms: i64,
    status: EdgeStatus,
    records_stored: u64,
    epochs: BTreeMap<u64, IntervalSet>,
}

#[derive(Decode)]
struct DeviceEntryV2 {
    records: u64,
    first_ts_ms: i64,
    last_ts_ms: i64,
    /// Device seqs stored: dropped on conversion (see the module doc).
    _seqs: IntervalSet,
    tags: Vec<Tag>,
    edge: String,
}

/// Region state format 2.
#[derive(Decode)]
pub(super) struct RegionStateV2 {
    applied_index: u64,
    edges: BTreeMap<String, EdgeEntryV2>,
    devices: BTreeMap<String, BTreeMap<String, DeviceEntryV2>>,
    dedup_gaps_merged: u64,
    _device_seq_restarts: u64,
    alerts: AlertIndex,
    workloads: WorkloadsV4,
}

impl From<RegionStateV2> for RegionState {
    fn from(s: RegionStateV2) -> Self {
        let edges = s
            .edges
            .into_iter()
            .map(|(k, e)| {
                let entry = EdgeEntry {
                    last_seen_ms: e.last_seen_ms,
                    status: e.status,
                    records_stored: e.records_stored,
                    resends_dropped: 0,
                    epochs: e.epochs,
                };
                (k, entry)
            })
            .collect();
        let devices = s
            .devices
            .into_iter()
            .map(|(t, devs)| {
                let devs = devs
                    .into_iter()
                    .map(|(d, e)| {
                        let entry = DeviceEntry {
                            records: e.records,
                            first_ts_ms: e.first_ts_ms,
                            last_ts_ms: e.last_ts_ms,
                            recent: RecentReadings::default(),
                            retransmissions_dropped: 0,
                            seq_reuses: 0,
                            tags: e.tags,
                            edge: e.edge,
                        };
                        (d, entry)
                    })
                    .collect();
                (t, devs)
            })
            .collect();
        upgrade(
            s.applied_index,
            edges,
            devices,
            s.dedup_gaps_merged,
            s.alerts,
            s.workloads,
            BTreeMap::new(),
            EventLog::default(),
        )
    }
}

/// Region state format 3: format 4 without edge liveness and the event
/// log. Its other parts are today's types, whose layouts have not changed
/// since (a change to one of them needs a new format anyway), but for the
/// monitors ([`WorkloadsV4`]).
#[derive(Decode)]
pub(super) struct RegionStateV3 {
    applied_index: u64,
    edges: BTreeMap<String, EdgeEntry>,
    devices: BTreeMap<String, BTreeMap<String, DeviceEntry>>,
    dedup_gaps_merged: u64,
    alerts: AlertIndex,
    workloads: WorkloadsV4,
}

impl From<RegionStateV3> for RegionState {
    fn from(s: RegionStateV3) -> Self {
        upgrade(
            s.applied_index,
            s.edges,
            s.devices,
            s.dedup_gaps_merged,
            s.alerts,
            s.workloads,
            BTreeMap::new(),
            EventLog::default(),
        )
    }
}

/// Region state format 4: format 5 before the scheduler (monitors pinned
/// to an edge, specs without placement, no allocations).
#[derive(Decode)]
pub(super) struct RegionStateV4 {
    applied_index: u64,
    edges: BTreeMap<String, EdgeEntry>,
    devices: BTreeMap<String, BTreeMap<String, DeviceEntry>>,
    dedup_gaps_merged: u64,
    alerts: AlertIndex,
    workloads: WorkloadsV4,
    liveness: BTreeMap<String, EdgeLiveness>,
    events: EventLog,
}

impl From<RegionStateV4> for RegionState {
    fn from(s: RegionStateV4) -> Self {
        upgrade(
            s.applied_index,
            s.edges,
            s.devices,
            s.dedup_gaps_merged,
            s.alerts,
            s.workloads,
            s.liveness,
            s.events,
        )
    }
}

/// Region state format 5 (before state checkpoints): format 6 without its
/// last field.
#[derive(Decode)]
pub(super) struct RegionStateV5 {
    applied_index: u64,
    edges: BTreeMap<String, EdgeEntry>,
    devices: BTreeMap<String, BTreeMap<String, DeviceEntry>>,
    dedup_gaps_merged: u64,
    alerts: AlertIndex,
    workloads: Workloads,
    liveness: BTreeMap<String, EdgeLiveness>,
    events: EventLog,
    sched: Scheduling,
}

impl From<RegionStateV5> for RegionState {
    fn from(s: RegionStateV5) -> Self {
        RegionState::from_parts(
            s.applied_index,
            s.edges,
            s.devices,
            s.dedup_gaps_merged,
            s.alerts,
            s.workloads,
            s.liveness,
            s.events,
            s.sched,
            Checkpoints::default(),
        )
    }
}

/// A pre-scheduler state with each pinned monitor given its allocation.
#[allow(clippy::too_many_arguments)]
fn upgrade(
    applied_index: u64,
    edges: BTreeMap<String, EdgeEntry>,
    devices: BTreeMap<String, BTreeMap<String, DeviceEntry>>,
    dedup_gaps_merged: u64,
    alerts: AlertIndex,
    old: WorkloadsV4,
    liveness: BTreeMap<String, EdgeLiveness>,
    events: EventLog,
) -> RegionState {
    let mut pinned = Vec::new();
    let monitors = old
        .monitors
        .into_iter()
        .map(|(t, by_name)| {
            let by_name = by_name
                .into_iter()
                .map(|(n, m)| {
                    let entry = MonitorEntry {
                        spec: m.spec.into(),
                        created_ms: m.created_ms,
                        updated_ms: m.updated_ms,
                    };
                    pinned.push((workload_of(&entry), m.edge, m.updated_ms));
                    (n, entry)
                })
                .collect();
            (t, by_name)
        })
        .collect();
    let workloads = Workloads::from_parts(
        monitors,
        old.artifacts,
        old.artifact_bytes,
        old.artifacts_evicted,
        old.assignments_version,
    );
    let mut sched = Scheduling::default();
    for (w, edge, at_ms) in pinned {
        let token = sched.take_tokens(1);
        let mut a = pinned_alloc(&w, &edge, applied_index);
        a.fencing_token = token;
        sched.upsert(AllocRecord {
            alloc: a,
            created_ms: at_ms,
            modified_ms: at_ms,
            stop_reason: None,
            replaced_by: None,
        });
    }
    RegionState::from_parts(
        applied_index,
        edges,
        devices,
        dedup_gaps_merged,
        alerts,
        workloads,
        liveness,
        events,
        sched,
        Checkpoints::default(),
    )
}

/// The allocation of a monitor pinned to `edge` by a pre-scheduler hub:
/// its id is derived from the workload and generation, so every replica
/// derives the same one.
fn pinned_alloc(w: &strata_sched::Workload, edge: &str, index: u64) -> Allocation {
    let key = format!(
        "strata-pinned\0{}\0{}\0{}",
        w.id.tenant, w.id.name, w.generation
    );
    let hi = XxHash3_64::oneshot_with_seed(1, key.as_bytes());
    let lo = XxHash3_64::oneshot_with_seed(2, key.as_bytes());
    Allocation {
        id: AllocId((u128::from(hi) << 64) | u128::from(lo)),
        workload: w.id.clone(),
        slot: 0,
        node: NodeId::from(edge),
        generation: w.generation,
        resources: w.resources,
        fencing_token: 0,
        desired: Desired::Run,
        client: ClientState::Pending,
        created_index: index,
        modified_index: index,
        lease_expires_at: None,
        previous: None,
        placement: PlacementMeta {
            eval: EvalId(0),
            reason: PlaceReason::Missing,
            score: 0.0,
            score_parts: vec![("pinned-before-upgrade".to_owned(), 0.0)],
            nodes_evaluated: 0,
            nodes_feasible: 0,
        },
    }
}

/// `MonitorSpec` before `placement` (protocol versions 2 to 4).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(super) struct MonitorSpecV1 {
    name: String,
    tenant: String,
    runtime: RuntimeKind,
    artifact: ArtifactRef,
    selector: DeviceSelector,
    params: String,
    resources: Resources,
    priority: u8,
    restart: RestartPolicy,
    target: Placement,
    generation: u64,
}

impl From<MonitorSpecV1> for MonitorSpec {
    fn from(s: MonitorSpecV1) -> Self {
        MonitorSpec {
            name: s.name,
            tenant: s.tenant,
            runtime: s.runtime,
            artifact: s.artifact,
            selector: s.selector,
            params: s.params,
            resources: s.resources,
            priority: s.priority,
            restart: s.restart,
            target: s.target,
            generation: s.generation,
            placement: Default::default(),
        }
    }
}

impl From<&MonitorSpec> for MonitorSpecV1 {
    fn from(s: &MonitorSpec) -> Self {
        MonitorSpecV1 {
            name: s.name.clone(),
            tenant: s.tenant.clone(),
            runtime: s.runtime,
            artifact: s.artifact.clone(),
            selector: s.selector.clone(),
            params: s.params.clone(),
            resources: s.resources,
            priority: s.priority,
            restart: s.restart,
            target: s.target.clone(),
            generation: s.generation,
        }
    }
}

/// Body of command kind 6.
#[derive(Encode, Decode)]
pub(super) struct PutMonitorBodyV1 {
    pub(super) spec: MonitorSpecV1,
    pub(super) edge: String,
    pub(super) now_ms: i64,
}

/// Kind-6 body bytes (only tests of old logs write it).
pub(super) fn encode_put_monitor(spec: &MonitorSpec, edge: &str, now_ms: i64) -> Vec<u8> {
    let body = PutMonitorBodyV1 {
        spec: spec.into(),
        edge: edge.to_owned(),
        now_ms,
    };
    bincode::encode_to_vec(&body, bincode::config::standard()).unwrap_or_default()
}

/// Applies a kind-6 put: the workload, then its allocation on `edge` (a
/// running one there keeps running at the new generation; one elsewhere
/// is replaced), as a plan would.
pub(super) fn put_monitor(
    state: &mut RegionState,
    spec: MonitorSpec,
    edge: String,
    now_ms: i64,
    index: u64,
    changes: &mut Vec<SchedChange>,
) -> Outcome {
    let w = WorkloadId::new(&spec.tenant, &spec.name);
    let outcome = state.put_workload(spec, now_ms, changes);
    let Some(entry) = state.workloads().monitor(&w.tenant, &w.name) else {
        return outcome;
    };
    let workload = workload_of(entry);
    let mut nodes: BTreeMap<NodeId, NodePlan> = BTreeMap::new();
    let running: Vec<(NodeId, AllocId, u64)> = state
        .sched()
        .allocs_of(&w)
        .filter(|r| r.runs())
        .map(|r| (r.alloc.node.clone(), r.alloc.id, r.alloc.generation))
        .collect();
    let here = running.iter().find(|(n, _, _)| n.0 == edge);
    match here {
        Some((n, id, generation)) if *generation != workload.generation => {
            nodes
                .entry(n.clone())
                .or_default()
                .update
                .push(strata_sched::InPlaceUpdate {
                    alloc: *id,
                    generation: workload.generation,
                    resources: workload.resources,
                });
        }
        Some(_) => {}
        None => {
            let a = pinned_alloc(&workload, &edge, index);
            for (n, id, _) in &running {
                nodes.entry(n.clone()).or_default().stop.push(AllocStop {
                    alloc: *id,
                    reason: StopReason::Replaced { by: a.id },
                });
            }
            nodes
                .entry(NodeId::from(edge.as_str()))
                .or_default()
                .place
                .push(a);
        }
    }
    if !nodes.is_empty() {
        state.apply_plan(
            PlanCommit {
                eval: EvalId(0),
                trigger: "legacy-put".to_owned(),
                workload: w,
                generation: Some(workload.generation),
                nodes,
                refused: Vec::new(),
                failure: None,
                now_ms,
            },
            index,
            changes,
        );
    }
    outcome
}

#[derive(Decode)]
struct MonitorEntryV4 {
    spec: MonitorSpecV1,
    edge: String,
    created_ms: i64,
    updated_ms: i64,
}

/// `Workloads` of state formats 2 to 4: monitors pinned to an edge.
#[derive(Decode)]
pub(super) struct WorkloadsV4 {
    monitors: BTreeMap<String, BTreeMap<String, MonitorEntryV4>>,
    artifacts: BTreeMap<String, ArtifactEntry>,
    artifact_bytes: u64,
    artifacts_evicted: u64,
    assignments_version: u64,
}
