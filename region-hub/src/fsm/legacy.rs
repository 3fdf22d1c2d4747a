//! Decoding of what older hubs wrote: Raft entries of command kinds 1 and 2
//! (protocol version 1) and region state formats 1, 2 and 3. A replica
//! upgraded in place replays its log after the last checkpoint, so these
//! stay readable.
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
use strata_protocol::{EdgeStatus, SpoolEntry, Tag, TelemetryBatch, TelemetryRecord};

use super::alerts::AlertIndex;
use super::dedup::RecentReadings;
use super::interval::IntervalSet;
use super::state::{DeviceEntry, EdgeEntry, RegionState};
use super::workloads::Workloads;

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
    workloads: Workloads,
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
        RegionState::from_parts(
            s.applied_index,
            edges,
            devices,
            s.dedup_gaps_merged,
            s.alerts,
            s.workloads,
        )
    }
}

/// Region state format 3: format 4 without edge liveness and the event
/// log. Its parts are today's types, whose layouts have not changed since
/// (a change to one of them needs a new format anyway).
#[derive(Decode)]
pub(super) struct RegionStateV3 {
    applied_index: u64,
    edges: BTreeMap<String, EdgeEntry>,
    devices: BTreeMap<String, BTreeMap<String, DeviceEntry>>,
    dedup_gaps_merged: u64,
    alerts: AlertIndex,
    workloads: Workloads,
}

impl From<RegionStateV3> for RegionState {
    fn from(s: RegionStateV3) -> Self {
        RegionState::from_parts(
            s.applied_index,
            s.edges,
            s.devices,
            s.dedup_gaps_merged,
            s.alerts,
            s.workloads,
        )
    }
}
