//! [`RegionState`]: what every replica of a region agrees on besides the
//! telemetry itself — edges, devices (with their last tags), the dedup
//! state that makes the telemetry store exactly-once (layer 1 here, layer 2
//! in [`dedup`](super::dedup)) with what it dropped, alerts
//! ([`AlertIndex`]), monitors with their artifacts ([`Workloads`]), each
//! edge's last liveness decision and the region's event log
//! ([`liveness`](super::liveness)), and the scheduler's allocations,
//! fencing tokens, evaluations and edge facts ([`Scheduling`]).
//!
//! Maps are `BTreeMap`s so the encoded state (snapshots, checkpoints) is
//! byte-identical across replicas, which makes divergence easy to detect.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use strata_protocol::liveness::{EdgeEventDetail, EdgeLiveness, EventKind, LivenessState};
use strata_protocol::scheduling::{EdgeAllocation, EdgeLease, NodeFacts};
use strata_protocol::workload::{KnownDevice, MonitorSpec};
use strata_protocol::{
    monitoring::{MonitorInfo, StateCheckpoint},
    DeviceInfo, EdgeInfo, EdgeStatus, SpoolEntry, Tag, TelemetryBatch, TelemetryRecord,
};
use strata_sched::{Cardinality, ClientState, DisconnectPolicy, WorkloadId};

use super::alerts::AlertIndex;
use super::allocs::{FenceCheck, Scheduling};
use super::checkpoints::{CheckpointCounts, CheckpointKey, CheckpointLimits, Checkpoints, Verdict};
use super::dedup::{Admission, ReadingKey, RecentReadings};
use super::interval::IntervalSet;
use super::liveness::{EdgeTransition, EventLog};
use super::plan::{self, PlanApplied, PlanCommit, PlanParts};
use super::sched_view::{workload_of, SchedChange};
use super::workloads::{MonitorEntry, Workloads};
use super::{Applied, FsmError, Outcome};

/// Most intervals kept per edge epoch's dedup set. See
/// [`IntervalSet::enforce_cap`] for what is traded when it is exceeded: with
/// in-order spools and a bounded number of batches in flight an edge set
/// stays at one or two intervals, so 1024 is only reached by a broken sender.
pub const DEDUP_MAX_INTERVALS: usize = 1024;

/// Most tags remembered per device (the rest of a longer list is cut).
pub const MAX_DEVICE_TAGS: usize = 32;

/// Format byte leading [`RegionState::encode`]; bump on incompatible change.
/// Formats 1 (before monitors and alerts), 2 (device seq sets, before
/// exact dedup), 3 (before edge liveness and the event log) and 4 (before
/// the scheduler: monitors pinned to one edge, specs without placement)
/// are still read, see `legacy.rs`, and so is 5 (before state
/// checkpoints).
const STATE_FORMAT: u8 = 6;
const STATE_FORMAT_V1: u8 = 1;
const STATE_FORMAT_V2: u8 = 2;
const STATE_FORMAT_V3: u8 = 3;
const STATE_FORMAT_V4: u8 = 4;
const STATE_FORMAT_V5: u8 = 5;

/// Allocation limit when decoding state (1 GiB): state is local or comes
/// from a peer's CRC-checked snapshot, but a bound keeps a corrupt length
/// field from aborting the process. The state's big parts are bounded far
/// below it: artifacts by `MAX_ARTIFACT_STORE_BYTES` (64 MiB), alerts by
/// `MAX_ALERT_BYTES` (64 MiB).
const MAX_STATE_BYTES: usize = 1 << 30;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub(super) struct EdgeEntry {
    pub(super) last_seen_ms: i64,
    pub(super) status: EdgeStatus,
    pub(super) records_stored: u64,
    /// Entries dropped by layer 1: this edge had stored them already
    /// (batches resent or re-cut).
    pub(super) resends_dropped: u64,
    /// Edge sequence numbers stored, per spool epoch. Epochs are kept for
    /// ever: an edge gets a new one only when its spool is wiped, which is
    /// rare, and each costs a few dozen bytes.
    pub(super) epochs: BTreeMap<u64, IntervalSet>,
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub(super) struct DeviceEntry {
    pub(super) records: u64,
    pub(super) first_ts_ms: i64,
    pub(super) last_ts_ms: i64,
    /// Keys of the device's most recent stored readings (layer 2).
    pub(super) recent: RecentReadings,
    /// Readings dropped because the region had stored the same reading.
    pub(super) retransmissions_dropped: u64,
    /// Readings stored although their seq was in the window with another
    /// timestamp or content (counter restarts, clock jumps, spoofing).
    pub(super) seq_reuses: u64,
    /// Tags of the newest tagged reading (at most [`MAX_DEVICE_TAGS`]), so
    /// monitor selectors can be checked against known devices.
    pub(super) tags: Vec<Tag>,
    /// Edge whose batch last carried a reading of the device: where a
    /// monitor watching it must run to see its telemetry.
    pub(super) edge: String,
}

/// The replicated region state. Encoded with [`RegionState::encode`] into
/// snapshots and store checkpoints.
#[derive(Debug, Default, Clone, PartialEq, Encode, Decode)]
pub struct RegionState {
    applied_index: u64,
    edges: BTreeMap<String, EdgeEntry>,
    /// tenant → device → entry; nested so lookups by `&str` do not allocate.
    devices: BTreeMap<String, BTreeMap<String, DeviceEntry>>,
    dedup_gaps_merged: u64,
    alerts: AlertIndex,
    workloads: Workloads,
    /// Each edge's last liveness decision.
    liveness: BTreeMap<String, EdgeLiveness>,
    /// The region's event log.
    events: EventLog,
    /// Allocations, fencing tokens, evaluations, edge facts.
    sched: Scheduling,
    /// The last state checkpoint of each monitor instance (format 6).
    checkpoints: Checkpoints,
}

/// Devices whose readings arrived through `to` after arriving through
/// `from` (in one applied batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMove {
    /// The edge they used to report through.
    pub from: String,
    /// The edge they report through now.
    pub to: String,
    /// How many devices.
    pub devices: u32,
}

/// What layer 2 dropped and noticed for one device, and where it reports
/// through ([`RegionState::device_dedup`]): what the replicated state adds
/// to the store's device list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceDedup {
    /// Readings dropped because the region had stored the same reading.
    pub retransmissions_dropped: u64,
    /// Readings stored although their seq was recently used by another
    /// reading of the device.
    pub seq_reuses: u64,
    /// The edge whose batch last carried a reading of it.
    pub edge: String,
}

/// One edge as placement and validation see it.
#[derive(Debug, Clone, Copy)]
pub struct EdgeView<'a> {
    /// Edge name.
    pub edge: &'a str,
    /// Hub time of its last heartbeat or batch, ms since the Unix epoch.
    pub last_seen_ms: i64,
    /// Its last reported status.
    pub status: &'a EdgeStatus,
    /// Whether new work may be placed on it: the failure detector has not
    /// found it suspect or down (see [`EdgeView::placeable`]).
    pub live: bool,
}

impl EdgeView<'_> {
    /// Whether an edge in `state` may take new work: up, or not decided
    /// yet (a new leader has not heard from it); never suspect or down.
    pub fn placeable(state: LivenessState) -> bool {
        matches!(state, LivenessState::Up | LivenessState::Unknown)
    }
}

impl RegionState {
    /// A state from its parts (decoding older formats): one argument per
    /// field.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn from_parts(
        applied_index: u64,
        edges: BTreeMap<String, EdgeEntry>,
        devices: BTreeMap<String, BTreeMap<String, DeviceEntry>>,
        dedup_gaps_merged: u64,
        alerts: AlertIndex,
        workloads: Workloads,
        liveness: BTreeMap<String, EdgeLiveness>,
        events: EventLog,
        sched: Scheduling,
        checkpoints: Checkpoints,
    ) -> Self {
        RegionState {
            applied_index,
            edges,
            devices,
            dedup_gaps_merged,
            alerts,
            workloads,
            liveness,
            events,
            sched,
            checkpoints,
        }
    }

    /// The last state checkpoint of each monitor instance.
    pub fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
    }

    /// Allocations, fencing tokens, evaluations and edge facts.
    pub fn sched(&self) -> &Scheduling {
        &self.sched
    }

    /// The region's event log.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// An edge's last replicated liveness decision.
    pub fn liveness(&self, edge: &str) -> Option<&EdgeLiveness> {
        self.liveness.get(edge)
    }

    /// Every edge's last replicated liveness decision, by name.
    pub fn liveness_table(&self) -> &BTreeMap<String, EdgeLiveness> {
        &self.liveness
    }

    /// Applies a liveness decision: records it for the edge and appends its
    /// event. Returns the event's sequence number.
    pub(super) fn record_transition(&mut self, t: EdgeTransition) -> u64 {
        let EdgeTransition {
            edge,
            kind,
            from,
            at_ms,
            mut liveness,
            message,
        } = t;
        liveness.event_seq = self.events.end_seq();
        let seq = self.events.append(
            at_ms,
            kind,
            edge.clone(),
            message,
            Some(EdgeEventDetail {
                from,
                liveness: liveness.clone(),
            }),
            Vec::new(),
        );
        self.liveness.insert(edge, liveness);
        seq
    }

    /// Whether the replicated decision lets new work go to `edge` (no
    /// decision yet counts as placeable).
    fn replicated_live(&self, edge: &str) -> bool {
        self.liveness
            .get(edge)
            .is_none_or(|l| EdgeView::placeable(l.state))
    }

    /// The alert index.
    pub fn alerts(&self) -> &AlertIndex {
        &self.alerts
    }

    /// Monitors, artifacts and the assignments version.
    pub fn workloads(&self) -> &Workloads {
        &self.workloads
    }

    pub(super) fn workloads_mut(&mut self) -> &mut Workloads {
        &mut self.workloads
    }

    /// Every edge with its last replicated status and liveness, sorted by
    /// name (the leader overlays its soft state: `crate::liveness::views`).
    pub fn edge_views(&self) -> impl Iterator<Item = EdgeView<'_>> {
        self.edges.iter().map(|(edge, e)| EdgeView {
            edge,
            last_seen_ms: e.last_seen_ms,
            status: &e.status,
            live: self.replicated_live(edge),
        })
    }

    /// One edge.
    pub fn edge_view(&self, edge: &str) -> Option<EdgeView<'_>> {
        self.edges.get_key_value(edge).map(|(edge, e)| EdgeView {
            edge,
            last_seen_ms: e.last_seen_ms,
            status: &e.status,
            live: self.replicated_live(edge),
        })
    }

    /// Tenants with at least one device in the region, sorted.
    pub fn tenants(&self) -> Vec<String> {
        self.devices.keys().cloned().collect()
    }

    /// Devices of `tenant` with their last tags, for selector validation.
    pub fn known_devices<'a>(&'a self, tenant: &'a str) -> Vec<KnownDevice<'a>> {
        self.devices
            .get_key_value(tenant)
            .into_iter()
            .flat_map(|(t, devs)| {
                devs.iter().map(move |(d, e)| KnownDevice {
                    tenant: t,
                    device: d,
                    tags: &e.tags,
                })
            })
            .collect()
    }

    /// Per edge, how many of `tenant`'s devices matching `selects` last sent
    /// their telemetry through it.
    pub fn device_edges(
        &self,
        tenant: &str,
        selects: impl Fn(&str, &[Tag]) -> bool,
    ) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (d, e) in self.devices.get(tenant).into_iter().flatten() {
            if !e.edge.is_empty() && selects(d, &e.tags) {
                *out.entry(e.edge.clone()).or_insert(0) += 1;
            }
        }
        out
    }

    /// A stored monitor as clients see it: its allocations (running ones
    /// first) and evaluations, and the instance status the edge of its
    /// first running allocation last reported — in `report` (the leader's
    /// soft state, looked up by edge) when given, else the last replicated
    /// report.
    pub fn monitor_info<'a>(
        &'a self,
        region: &str,
        m: &MonitorEntry,
        report: impl Fn(&str) -> Option<&'a EdgeStatus>,
    ) -> MonitorInfo {
        let w = WorkloadId::new(&m.spec.tenant, &m.spec.name);
        let mut allocs: Vec<_> = self.sched.allocs_of(&w).collect();
        // Running first (running, then pending), then stopped newest first.
        allocs.sort_by_key(|r| {
            (
                !r.runs(),
                r.alloc.client != ClientState::Running,
                std::cmp::Reverse(r.alloc.modified_index),
                r.alloc.slot,
            )
        });
        let first = allocs.iter().find(|r| r.runs());
        let edge = first.map(|r| r.alloc.node.0.clone()).unwrap_or_default();
        let status = first
            .and_then(|r| {
                report(&r.alloc.node.0)
                    .or_else(|| self.edges.get(&r.alloc.node.0).map(|e| &e.status))
            })
            .and_then(|s| {
                s.instances
                    .iter()
                    .find(|i| i.tenant == m.spec.tenant && i.name == m.spec.name)
                    .cloned()
            });
        let wanted = match m.spec.intent().cardinality() {
            Cardinality::Count(n) => n,
            Cardinality::PerNode => u32::try_from(self.carriers_of(m).len()).unwrap_or(u32::MAX),
        };
        let placed = allocs
            .iter()
            .filter(|r| r.runs() && !r.alloc.client.is_terminal())
            .count();
        MonitorInfo {
            spec: m.spec.clone(),
            region: region.to_owned(),
            edge,
            created_ms: m.created_ms,
            updated_ms: m.updated_ms,
            status,
            wanted,
            placed: u32::try_from(placed).unwrap_or(u32::MAX),
            allocations: allocs.iter().map(|r| r.info()).collect(),
            evaluations: self.sched.evals_of(&w).cloned().collect(),
        }
    }

    /// The leases of the `replace-after` allocations desired to run on
    /// `edge`, as the region counts them.
    pub fn edge_leases(&self, edge: &str) -> Vec<EdgeLease> {
        self.sched
            .running_on(edge)
            .filter_map(|r| {
                let w = &r.alloc.workload;
                let m = self.workloads.monitor(&w.tenant, &w.name)?;
                matches!(
                    m.spec.intent().disconnect_policy(),
                    DisconnectPolicy::ReplaceAfter(_)
                )
                .then(|| EdgeLease {
                    tenant: w.tenant.clone(),
                    workload: w.name.clone(),
                    slot: r.alloc.slot,
                    allocation: r.alloc.id,
                    fencing_token: r.alloc.fencing_token,
                    expires_ms: r.alloc.lease_expires_at.map(|t| t.as_millis()),
                })
            })
            .collect()
    }

    /// What `edge` must run: its allocations desired to run, with their
    /// specs and disconnect policies.
    pub fn edge_allocations(&self, edge: &str) -> Vec<EdgeAllocation> {
        self.sched
            .running_on(edge)
            .filter_map(|r| {
                let w = &r.alloc.workload;
                let m = self.workloads.monitor(&w.tenant, &w.name)?;
                let mut spec: MonitorSpec = m.spec.clone();
                // An in-place update moved the allocation to the stored
                // generation; an older allocation keeps its own number
                // until a plan updates or replaces it.
                spec.generation = r.alloc.generation;
                let intent = spec.intent();
                let replace_after_ms = match intent.disconnect_policy() {
                    DisconnectPolicy::Keep => None,
                    DisconnectPolicy::ReplaceAfter(d) => Some(d.as_millis() as u64),
                };
                let previous = r.alloc.previous.and_then(|p| self.sched.alloc(p));
                let checkpoint = self
                    .checkpoints
                    .for_allocation(r, previous, intent.cardinality())
                    .cloned();
                Some(EdgeAllocation {
                    id: r.alloc.id,
                    fencing_token: r.alloc.fencing_token,
                    slot: r.alloc.slot,
                    spec,
                    replace_after_ms,
                    previous: r.alloc.previous,
                    checkpoint,
                })
            })
            .collect()
    }

    /// Applies a workload put (see [`Workloads`]), with its event.
    pub(super) fn put_workload(
        &mut self,
        spec: MonitorSpec,
        now_ms: i64,
        changes: &mut Vec<SchedChange>,
    ) -> Outcome {
        let (t, n) = (spec.tenant.clone(), spec.name.clone());
        let outcome = self.workloads.put_monitor(spec, now_ms);
        if let Outcome::MonitorPut {
            changed: true,
            created,
            generation,
            ..
        } = outcome
        {
            if let Some(m) = self.workloads.monitor(&t, &n) {
                changes.push(SchedChange::Workload(Box::new(workload_of(m))));
                let verb = if created { "submitted" } else { "updated" };
                self.events.append(
                    now_ms,
                    EventKind::WorkloadSubmitted,
                    format!("{t}/{n}"),
                    format!("{t}/{n} {verb} (generation {generation})"),
                    None,
                    Vec::new(),
                );
            }
        }
        outcome
    }

    /// Applies a workload delete, with its event. Its allocations keep
    /// running until the scheduler's plan stops them.
    pub(super) fn delete_workload(
        &mut self,
        tenant: &str,
        name: &str,
        now_ms: i64,
        changes: &mut Vec<SchedChange>,
    ) -> Outcome {
        let outcome = self.workloads.delete_monitor(tenant, name);
        if let Outcome::MonitorDeleted { existed: true } = outcome {
            let w = WorkloadId::new(tenant, name);
            self.checkpoints.remove_workload(&w);
            let removed = self.sched.collect(&w, false);
            if !removed.is_empty() {
                changes.push(SchedChange::AllocsRemoved(removed));
            }
            changes.push(SchedChange::WorkloadRemoved(w));
            self.events.append(
                now_ms,
                EventKind::WorkloadDeleted,
                format!("{tenant}/{name}"),
                format!("{tenant}/{name} deleted; its instances are stopped"),
                None,
                Vec::new(),
            );
        }
        outcome
    }

    /// Applies a plan (see [`plan`]).
    pub(super) fn apply_plan(
        &mut self,
        c: PlanCommit,
        index: u64,
        changes: &mut Vec<SchedChange>,
    ) -> PlanApplied {
        let (workload, eval) = (c.workload.clone(), c.eval);
        let mut parts = PlanParts {
            workloads: &mut self.workloads,
            sched: &mut self.sched,
            liveness: &self.liveness,
            events: &mut self.events,
        };
        let applied = plan::apply_plan(&mut parts, c, index);
        if !applied.changed.is_empty() {
            changes.push(SchedChange::Allocs(applied.changed.clone()));
        }
        if !applied.removed.is_empty() {
            changes.push(SchedChange::AllocsRemoved(applied.removed.clone()));
        }
        changes.push(SchedChange::Plan {
            workload,
            eval,
            refused: u32::try_from(applied.refused.len()).unwrap_or(u32::MAX),
        });
        applied
    }

    /// Highest Raft index applied (0 when new).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub(super) fn set_applied_index(&mut self, index: u64) {
        self.applied_index = index;
    }

    /// Edges known to the region (a stored batch or report, or a liveness
    /// decision), sorted by name, with their last replicated report and
    /// liveness decision.
    pub fn edges(&self) -> Vec<EdgeInfo> {
        let mut out: Vec<EdgeInfo> = self
            .edges
            .iter()
            .map(|(edge, e)| EdgeInfo {
                edge: edge.clone(),
                last_seen_ms: e.last_seen_ms,
                status: e.status.clone(),
                records_stored: e.records_stored,
                resends_dropped: e.resends_dropped,
                liveness: self.liveness.get(edge).cloned(),
                leases: self.edge_leases(edge),
                renewing_leases: None,
            })
            .collect();
        for (edge, l) in &self.liveness {
            if !self.edges.contains_key(edge) {
                out.push(EdgeInfo {
                    edge: edge.clone(),
                    last_seen_ms: l.last_heartbeat_ms,
                    status: EdgeStatus {
                        edge: edge.clone(),
                        ..EdgeStatus::default()
                    },
                    records_stored: 0,
                    resends_dropped: 0,
                    liveness: Some(l.clone()),
                    leases: self.edge_leases(edge),
                    renewing_leases: None,
                });
            }
        }
        out.sort_by(|a, b| a.edge.cmp(&b.edge));
        out
    }

    /// Devices with at least one stored record, optionally of one tenant,
    /// sorted by tenant then device.
    pub fn devices(&self, tenant: Option<&str>) -> Vec<DeviceInfo> {
        self.devices
            .iter()
            .filter(|(t, _)| tenant.is_none_or(|want| want == t.as_str()))
            .flat_map(|(t, devs)| {
                devs.iter().map(move |(d, e)| DeviceInfo {
                    tenant: t.clone(),
                    device: d.clone(),
                    records: e.records,
                    first_ts_ms: e.first_ts_ms,
                    last_ts_ms: e.last_ts_ms,
                    retransmissions_dropped: e.retransmissions_dropped,
                    seq_reuses: e.seq_reuses,
                    edge: (!e.edge.is_empty()).then(|| e.edge.clone()),
                })
            })
            .collect()
    }

    /// What layer 2 dropped and noticed for one device (`None` when the
    /// region has no reading of it).
    pub fn device_dedup(&self, tenant: &str, device: &str) -> Option<DeviceDedup> {
        self.devices.get(tenant)?.get(device).map(|e| DeviceDedup {
            retransmissions_dropped: e.retransmissions_dropped,
            seq_reuses: e.seq_reuses,
            edge: e.edge.clone(),
        })
    }

    /// [`RegionState::device_dedup`] of every device (optionally of one
    /// tenant), sorted by tenant then device: what a device list needs to
    /// add to the store's view. One pass over the devices on the Raft
    /// thread, a list already as long as the answer it serves.
    pub fn device_facts(&self, tenant: Option<&str>) -> Vec<((String, String), DeviceDedup)> {
        let mut out = Vec::new();
        for (t, devs) in &self.devices {
            if tenant.is_some_and(|want| want != t) {
                continue;
            }
            for (d, e) in devs {
                out.push((
                    (t.clone(), d.clone()),
                    DeviceDedup {
                        retransmissions_dropped: e.retransmissions_dropped,
                        seq_reuses: e.seq_reuses,
                        edge: e.edge.clone(),
                    },
                ));
            }
        }
        out
    }

    /// Number of devices with at least one stored record.
    pub fn device_count(&self) -> usize {
        self.devices.values().map(BTreeMap::len).sum()
    }

    /// Gaps filled in edge dedup sets to bound their size (see
    /// [`IntervalSet::enforce_cap`]); non-zero means an edge sent so
    /// scattered a set of spool sequence numbers that a very late record of
    /// it may have been dropped as a resend.
    pub fn dedup_gaps_merged(&self) -> u64 {
        self.dedup_gaps_merged
    }

    /// Versioned bytes for snapshots and checkpoints.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![STATE_FORMAT];
        // Encoding plain data into a Vec cannot fail.
        let _ = bincode::encode_into_std_write(self, &mut out, bincode::config::standard());
        out
    }

    /// Inverse of [`RegionState::encode`]. Empty bytes decode to the empty
    /// state (a brand-new store has no state yet).
    pub fn decode(bytes: &[u8]) -> Result<RegionState, FsmError> {
        let Some((&format, body)) = bytes.split_first() else {
            return Ok(RegionState::default());
        };
        if format == STATE_FORMAT_V1 {
            return decode_body::<super::legacy::RegionStateV1>(body).map(RegionState::from);
        }
        if format == STATE_FORMAT_V2 {
            return decode_body::<super::legacy::RegionStateV2>(body).map(RegionState::from);
        }
        if format == STATE_FORMAT_V3 {
            return decode_body::<super::legacy::RegionStateV3>(body).map(RegionState::from);
        }
        if format == STATE_FORMAT_V4 {
            return decode_body::<super::legacy::RegionStateV4>(body).map(RegionState::from);
        }
        if format == STATE_FORMAT_V5 {
            return decode_body::<super::legacy::RegionStateV5>(body).map(RegionState::from);
        }
        if format != STATE_FORMAT {
            return Err(FsmError::CorruptState {
                detail: format!(
                    "state format {format} is not supported (this build reads {STATE_FORMAT})"
                ),
            });
        }
        decode_body(body)
    }

    /// Applies an edge's report (and its facts, when it carries them): the
    /// edge's status, then the instance states onto its allocations.
    pub(super) fn record_heartbeat(
        &mut self,
        status: EdgeStatus,
        facts: Option<NodeFacts>,
        received_ms: i64,
        index: u64,
        changes: &mut Vec<SchedChange>,
    ) {
        let edge = status.edge.clone();
        let e = edge_entry(&mut self.edges, edge.clone());
        // max: a new leader's clock may be slightly behind the old one's.
        e.last_seen_ms = e.last_seen_ms.max(received_ms);
        e.status = status;
        if let Some(f) = facts {
            self.sched.set_facts(&edge, f);
        }
        let e = &self.edges[&edge];
        let moved = self
            .sched
            .client_states(&edge, &e.status.instances, received_ms, index);
        if !moved.is_empty() {
            changes.push(SchedChange::Allocs(moved));
        }
        // Measured use changes with every report: the node always goes to
        // the scheduler, which updates its snapshot and decides whether
        // capacity or facts changed.
        changes.push(SchedChange::Node(Box::new(self.sched_node(&edge))));
    }

    /// Layer 1 (edge seq) dedup for every entry, then per kind: telemetry
    /// through layer 2 (the device's recent readings) into the store,
    /// derived metrics into the store as telemetry (they have no device
    /// seq; layer 1 covers them), alerts into the alert index.
    pub(super) fn store_batch(
        &mut self,
        batch: TelemetryBatch,
        received_ms: i64,
        limits: CheckpointLimits,
    ) -> Applied {
        let TelemetryBatch {
            edge,
            epoch,
            first_seq,
            entries,
        } = batch;
        let count = entries.len();
        // Saturating: a batch reaching past u64::MAX cannot come from a real
        // spool; records beyond it bypass edge dedup (stored, never dropped).
        let end = first_seq.saturating_add(count as u64);
        let representable = (end - first_seq) as usize;

        let RegionState {
            edges,
            devices,
            dedup_gaps_merged,
            alerts,
            sched,
            workloads,
            checkpoints,
            ..
        } = self;
        let mut device_moves: Vec<DeviceMove> = Vec::new();
        let edge_name = edge.clone();
        let e = edge_entry(edges, edge);
        e.last_seen_ms = e.last_seen_ms.max(received_ms);
        let set = e.epochs.entry(epoch).or_default();
        let new_ranges = set.insert(first_seq..end);
        *dedup_gaps_merged += set.enforce_cap(DEDUP_MAX_INTERVALS);

        let new_at_edge: u64 = new_ranges.iter().map(|r| r.end - r.start).sum();
        let mut out = Vec::with_capacity(new_at_edge as usize + (count - representable));
        let mut next_range = new_ranges.iter().peekable();
        let (mut new_entries, mut new_alerts, mut new_metrics) = (0usize, 0u32, 0u32);
        let (mut retransmissions, mut seq_reuses) = (0u32, 0u32);
        // Monitor outputs of a replaced allocation (refused, counted).
        let mut stale_fences = 0u32;
        let mut ckpts = CheckpointCounts::default();
        // Reused for every fingerprint of the batch.
        let mut scratch = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            if i < representable {
                let seq = first_seq + i as u64;
                while next_range.peek().is_some_and(|r| r.end <= seq) {
                    next_range.next();
                }
                if next_range.peek().is_none_or(|r| r.start > seq) {
                    continue; // layer 1: this edge already stored it
                }
            }
            match entry {
                SpoolEntry::Telemetry(rec) => {
                    match device_accepts(devices, &rec, &edge_name, &mut scratch, &mut device_moves)
                    {
                        Admission::Retransmission => {
                            retransmissions += 1;
                            continue;
                        }
                        Admission::SeqReuse => seq_reuses += 1,
                        Admission::New => {}
                    }
                    out.push(rec);
                    new_entries += 1;
                }
                SpoolEntry::Metric(m) => {
                    out.push(m.to_telemetry());
                    new_entries += 1;
                    new_metrics += 1;
                }
                SpoolEntry::Alert(a) => {
                    alerts.insert(a);
                    new_entries += 1;
                    new_alerts += 1;
                }
                SpoolEntry::FencedMetric { metric, fence } => {
                    if sched.check_fence(&fence) == FenceCheck::Stale {
                        stale_fences += 1;
                        continue;
                    }
                    out.push(metric.to_telemetry());
                    new_entries += 1;
                    new_metrics += 1;
                }
                SpoolEntry::FencedAlert { alert, fence } => {
                    if sched.check_fence(&fence) == FenceCheck::Stale {
                        stale_fences += 1;
                        continue;
                    }
                    alerts.insert(alert);
                    new_entries += 1;
                    new_alerts += 1;
                }
                SpoolEntry::Checkpoint(c) => {
                    match store_checkpoint(sched, workloads, checkpoints, c, limits, &mut ckpts) {
                        Verdict::Stored => {
                            new_entries += 1;
                            ckpts.stored += 1;
                        }
                        Verdict::Stale | Verdict::Older => stale_fences += 1,
                        Verdict::TooLarge => ckpts.too_large += 1,
                        Verdict::RegionFull => ckpts.region_full += 1,
                        Verdict::Unknown => ckpts.unknown += 1,
                    }
                }
            }
        }
        // Everything not stored, not a device retransmission, not a stale
        // output and not a refused checkpoint was a resend.
        let edge_resends =
            (count - new_entries) as u32 - retransmissions - stale_fences - ckpts.refused();
        e.records_stored += new_entries as u64;
        e.resends_dropped += u64::from(edge_resends);
        Applied {
            outcome: Outcome::Committed {
                first_seq,
                count: count as u32,
                new_records: new_entries as u32,
                edge_resends,
                device_retransmissions: retransmissions,
                seq_reuses,
                new_alerts,
                new_metrics,
                stale_fences,
                checkpoints: ckpts,
            },
            records: out,
            device_moves,
            changes: Vec::new(),
        }
    }
}

/// Judges one checkpoint (see [`super::checkpoints`]) and stores it when
/// it is current and within bounds.
fn store_checkpoint(
    sched: &mut Scheduling,
    workloads: &Workloads,
    checkpoints: &mut Checkpoints,
    c: StateCheckpoint,
    limits: CheckpointLimits,
    counts: &mut CheckpointCounts,
) -> Verdict {
    match sched.check_fence(&c.fence) {
        FenceCheck::Stale => return Verdict::Stale,
        FenceCheck::Unknown => return Verdict::Unknown,
        FenceCheck::Current => {}
    }
    let w = WorkloadId::new(&c.tenant, &c.workload);
    let (Some(r), Some(m)) = (
        strata_sched::AllocId::parse(&c.fence.allocation).and_then(|id| sched.alloc(id)),
        workloads.monitor(&c.tenant, &c.workload),
    ) else {
        return Verdict::Unknown;
    };
    if r.alloc.workload != w {
        return Verdict::Unknown;
    }
    let key = CheckpointKey::of(r, m.spec.intent().cardinality());
    let mut verdict = checkpoints.judge(&w, &key, &c, limits);
    if verdict == Verdict::RegionFull {
        // Room from checkpoints nothing runs under any more, then again.
        let old = checkpoints
            .get(&w, &key)
            .map_or(0, |o| o.state.len() as u64);
        let need = (c.state.len() as u64).saturating_sub(old);
        let in_use = |w: &WorkloadId, k: &CheckpointKey| {
            let Some(m) = workloads.monitor(&w.tenant, &w.name) else {
                return false;
            };
            let card = m.spec.intent().cardinality();
            sched
                .allocs_of(w)
                .any(|r| r.runs() && CheckpointKey::of(r, card) == *k)
        };
        let evicted = checkpoints.evict_orphans(need, limits.max_region_bytes, in_use);
        if evicted > 0 {
            counts.evicted += evicted;
            verdict = checkpoints.judge(&w, &key, &c, limits);
        }
    }
    if verdict == Verdict::Stored {
        checkpoints.put(&w, key, c);
    }
    if verdict == Verdict::Older {
        sched.count_stale();
    }
    verdict
}

/// Fills the dedup counters and the edge of `devices` (sorted by tenant
/// then device, as the store lists them) from
/// [`RegionState::device_facts`]: a merge of two sorted lists, no lookups.
pub fn add_device_dedup(devices: &mut [DeviceInfo], counts: &[((String, String), DeviceDedup)]) {
    let mut counts = counts.iter().peekable();
    for d in devices.iter_mut() {
        let me = (d.tenant.as_str(), d.device.as_str());
        while counts
            .peek()
            .is_some_and(|((t, dev), _)| (t.as_str(), dev.as_str()) < me)
        {
            counts.next();
        }
        if let Some(((t, dev), c)) = counts.peek() {
            if (t.as_str(), dev.as_str()) == me {
                d.retransmissions_dropped = c.retransmissions_dropped;
                d.seq_reuses = c.seq_reuses;
                d.edge = (!c.edge.is_empty()).then(|| c.edge.clone());
            }
        }
    }
}

fn edge_entry(edges: &mut BTreeMap<String, EdgeEntry>, edge: String) -> &mut EdgeEntry {
    edges.entry(edge).or_insert_with_key(|edge| EdgeEntry {
        last_seen_ms: i64::MIN,
        status: EdgeStatus {
            edge: edge.clone(),
            ..EdgeStatus::default()
        },
        records_stored: 0,
        resends_dropped: 0,
        epochs: BTreeMap::new(),
    })
}

/// Layer 2: drops the reading if the region stored the same one recently
/// (see [`super::dedup`]), else updates the device's stats.
fn device_accepts(
    devices: &mut BTreeMap<String, BTreeMap<String, DeviceEntry>>,
    rec: &TelemetryRecord,
    edge: &str,
    scratch: &mut Vec<u8>,
    moves: &mut Vec<DeviceMove>,
) -> Admission {
    let devs = match devices.get_mut(rec.tenant.as_str()) {
        Some(d) => d,
        None => devices.entry(rec.tenant.clone()).or_default(),
    };
    let dev = match devs.get_mut(rec.device.as_str()) {
        Some(d) => d,
        None => devs.entry(rec.device.clone()).or_insert(DeviceEntry {
            records: 0,
            first_ts_ms: rec.ts_ms,
            last_ts_ms: rec.ts_ms,
            recent: RecentReadings::default(),
            retransmissions_dropped: 0,
            seq_reuses: 0,
            tags: Vec::new(),
            edge: String::new(),
        }),
    };
    let verdict = dev.recent.admit(ReadingKey::of(rec, scratch));
    match verdict {
        Admission::Retransmission => {
            dev.retransmissions_dropped += 1;
            return verdict;
        }
        Admission::SeqReuse => dev.seq_reuses += 1,
        Admission::New => {}
    }
    dev.records += 1;
    // The newest tagged reading's tags; compared first so the hot path
    // (same tags as last time) does not allocate.
    if !rec.tags.is_empty() && rec.ts_ms >= dev.last_ts_ms {
        let tags = &rec.tags[..rec.tags.len().min(MAX_DEVICE_TAGS)];
        if dev.tags != tags {
            dev.tags = tags.to_vec();
        }
    }
    // Compared first: a device stays on one edge, so this rarely allocates.
    if dev.edge != edge && rec.ts_ms >= dev.last_ts_ms {
        if !dev.edge.is_empty() {
            note_move(moves, &dev.edge, edge);
        }
        dev.edge = edge.to_owned();
    }
    dev.first_ts_ms = dev.first_ts_ms.min(rec.ts_ms);
    dev.last_ts_ms = dev.last_ts_ms.max(rec.ts_ms);
    verdict
}

/// Counts one device moving `from` → `to` (a batch comes from one edge,
/// so the list stays as short as the number of edges it came from).
fn note_move(moves: &mut Vec<DeviceMove>, from: &str, to: &str) {
    match moves.iter_mut().find(|m| m.from == from) {
        Some(m) => m.devices = m.devices.saturating_add(1),
        None => moves.push(DeviceMove {
            from: from.to_owned(),
            to: to.to_owned(),
            devices: 1,
        }),
    }
}

fn decode_body<T: Decode<()>>(body: &[u8]) -> Result<T, FsmError> {
    let cfg = bincode::config::standard().with_limit::<MAX_STATE_BYTES>();
    let (state, used): (T, usize) =
        bincode::decode_from_slice(body, cfg).map_err(|e| FsmError::CorruptState {
            detail: e.to_string(),
        })?;
    if used != body.len() {
        return Err(FsmError::CorruptState {
            detail: format!("{} trailing bytes", body.len() - used),
        });
    }
    Ok(state)
}
