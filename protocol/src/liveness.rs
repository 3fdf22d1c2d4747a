//! Edge liveness and the region events stream.
//!
//! The region hub's leader runs a failure detector over its edges (heartbeats
//! plus the state of their QUIC connections). What it decides about an edge
//! is an [`EdgeLiveness`]: a [`LivenessState`], a [`Classification`] of the
//! failure when there is one, and the [`Evidence`] it rests on. Each decision
//! is replicated and recorded as a [`RegionEvent`] in the region's bounded,
//! ordered event log, which clients read page by page ([`EventPage`]).
//!
//! [`EdgeLiveness`] and [`RegionEvent`] are kept in replicated region state:
//! their layouts never change. Enums only grow at the end; scheduling
//! events (placed, stopped, replaced, failed to place, lease expired) are
//! later [`EventKind`]s whose details go in [`RegionEvent::attrs`].

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::messages::EdgeStatus;
use crate::scheduling::NodeFacts;

/// QUIC application close code of an edge that stops on purpose (a
/// SIGTERM): the hub declares it down at once, classified
/// [`Classification::Shutdown`]. Any other close is an ordinary one.
pub const CLOSE_EDGE_SHUTDOWN: u32 = 0x5354;

/// An edge heartbeat of protocol version 4: the status report plus the
/// edge process's boot id.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct EdgeHeartbeat {
    /// What the edge reports about itself.
    pub status: EdgeStatus,
    /// Random, drawn when the edge process starts, never 0: an edge that
    /// comes back with another boot id was restarted (it crashed or was
    /// stopped); with the same one, it lived through (a partition).
    pub boot_id: u64,
    /// Its labels and pools, for placement (protocol version 5).
    pub facts: NodeFacts,
}

/// What the leader's failure detector thinks of an edge.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum LivenessState {
    /// Not heard from since this leader took over (a new leader waits a
    /// full grace period before it declares anything down), or never.
    Unknown,
    /// Heartbeating.
    Up,
    /// Heartbeats missed or its connection lost; down unless it is heard
    /// from again within the grace period.
    Suspect,
    /// Declared down.
    Down,
}

impl LivenessState {
    /// Stable kebab-case name (metrics labels, tables).
    pub fn as_str(self) -> &'static str {
        match self {
            LivenessState::Unknown => "unknown",
            LivenessState::Up => "up",
            LivenessState::Suspect => "suspect",
            LivenessState::Down => "down",
        }
    }
}

/// What kind of failure the evidence points to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum Classification {
    /// No failure.
    None,
    /// The edge went silent (heartbeats stopped, its connection idled out)
    /// without closing anything: a crash or a partition, not yet known.
    Undetermined,
    /// The edge said it was stopping: it closed its connection with
    /// [`CLOSE_EDGE_SHUTDOWN`].
    Shutdown,
    /// The edge process died: its connection was reset, or it came back
    /// with a new boot id.
    Crash,
    /// The edge, or its own network, is down but its devices are fine:
    /// they report through another edge.
    EdgeFailure,
    /// The edge was cut off: it came back with the same boot id, so its
    /// process lived through.
    Partition,
}

impl Classification {
    /// Stable kebab-case name (metrics labels, tables).
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::None => "none",
            Classification::Undetermined => "undetermined",
            Classification::Shutdown => "shutdown",
            Classification::Crash => "crash",
            Classification::EdgeFailure => "edge-failure",
            Classification::Partition => "partition",
        }
    }
}

/// One fact the detector observed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum Evidence {
    /// No heartbeat (nor batch) for the suspect interval.
    MissedHeartbeats,
    /// Its QUIC connection idled out (no packet, not even a keep-alive).
    IdleTimeout,
    /// It closed its QUIC connection (not a shutdown).
    ConnectionClosed,
    /// It closed its QUIC connection saying it was stopping.
    ShutdownClose,
    /// Its QUIC connection was reset (its endpoint lost the connection's
    /// state: the process restarted).
    ConnectionReset,
    /// Devices that reported through it now report through another edge.
    DevicesMoved,
    /// It came back with a new boot id.
    NewBootId,
    /// It came back with the same boot id.
    SameBootId,
    /// Not heard from in a full grace period after a leader change.
    LeaderChange,
    /// It heartbeats again.
    Heartbeat,
}

impl Evidence {
    /// Stable kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::MissedHeartbeats => "missed-heartbeats",
            Evidence::IdleTimeout => "idle-timeout",
            Evidence::ConnectionClosed => "connection-closed",
            Evidence::ShutdownClose => "shutdown-close",
            Evidence::ConnectionReset => "connection-reset",
            Evidence::DevicesMoved => "devices-moved",
            Evidence::NewBootId => "new-boot-id",
            Evidence::SameBootId => "same-boot-id",
            Evidence::LeaderChange => "leader-change",
            Evidence::Heartbeat => "heartbeat",
        }
    }
}

/// An edge's liveness as last decided (replicated), or as the leader sees
/// it now (in answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct EdgeLiveness {
    /// The state.
    pub state: LivenessState,
    /// The failure's kind; [`Classification::None`] while up and never
    /// failed. Kept when the edge is back (it says what the outage was).
    pub classification: Classification,
    /// What the classification rests on, oldest first.
    pub evidence: Vec<Evidence>,
    /// Boot id of the edge process last heard (0: unknown).
    pub boot_id: u64,
    /// When the state was entered, ms since the Unix epoch (leader clock).
    pub since_ms: i64,
    /// Last heartbeat (or batch) the deciding leader heard before the
    /// decision, ms since the Unix epoch; 0 when it heard none.
    pub last_heartbeat_ms: i64,
    /// For a down edge: ms from its last heartbeat to the decision (the
    /// detection latency), when the leader heard one.
    pub detection_ms: Option<u64>,
    /// Sequence number of the event that recorded the decision (0: not
    /// replicated yet).
    pub event_seq: u64,
}

/// Kind of a [`RegionEvent`]. Grows at the end (phase 2 adds scheduling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// An edge is up: first heard, or recovered from suspicion.
    EdgeUp,
    /// An edge is suspect.
    EdgeSuspect,
    /// An edge is down.
    EdgeDown,
    /// A down (or restarted) edge is back.
    EdgeBack,
    /// New evidence changed a down edge's classification.
    EdgeReclassified,
    /// A workload was submitted or its spec changed.
    WorkloadSubmitted,
    /// A workload was deleted.
    WorkloadDeleted,
    /// Instances of a workload were placed.
    AllocPlaced,
    /// Instances of a workload were stopped.
    AllocStopped,
    /// An instance was replaced on another edge (its edge was cut off past
    /// `replace-after`, it failed, or a new generation no longer fit).
    AllocReplaced,
    /// Instances could not be placed; the event says why, per rule.
    PlacementFailed,
    /// A disconnected `replace-after` instance's lease ran out: its edge
    /// has stopped it, so it may be replaced.
    LeaseExpired,
    /// An instance was moved off an edge under sustained CPU or memory
    /// pressure (attrs: slot, from, edge, token).
    AllocMigrated,
}

impl EventKind {
    /// Stable kebab-case name (SSE event names, tables).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::EdgeUp => "edge-up",
            EventKind::EdgeSuspect => "edge-suspect",
            EventKind::EdgeDown => "edge-down",
            EventKind::EdgeBack => "edge-back",
            EventKind::EdgeReclassified => "edge-reclassified",
            EventKind::WorkloadSubmitted => "workload-submitted",
            EventKind::WorkloadDeleted => "workload-deleted",
            EventKind::AllocPlaced => "alloc-placed",
            EventKind::AllocStopped => "alloc-stopped",
            EventKind::AllocReplaced => "alloc-replaced",
            EventKind::PlacementFailed => "placement-failed",
            EventKind::LeaseExpired => "lease-expired",
            EventKind::AllocMigrated => "alloc-migrated",
        }
    }
}

/// Details of an edge liveness event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct EdgeEventDetail {
    /// State before.
    pub from: LivenessState,
    /// State after, with its classification, evidence and boot id.
    pub liveness: EdgeLiveness,
}

/// A key/value detail of an event (kinds added later carry theirs here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct EventAttr {
    /// Key, kebab-case.
    pub key: String,
    /// Value.
    pub value: String,
}

/// One entry of the region's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct RegionEvent {
    /// Position in the region's log: 1, 2, 3, … with no gaps, the same on
    /// every replica.
    pub seq: u64,
    /// When it happened (the decision), ms since the Unix epoch, leader
    /// clock.
    pub at_ms: i64,
    /// What happened.
    pub kind: EventKind,
    /// What it happened to: an edge name for `edge-*` kinds.
    pub subject: String,
    /// One line for people.
    pub message: String,
    /// Liveness details of `edge-*` kinds.
    pub edge: Option<EdgeEventDetail>,
    /// Further details.
    pub attrs: Vec<EventAttr>,
}

/// A page of the event log: the answer to a read from `from_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct EventPage {
    /// Events with `seq >= from_seq`, oldest first.
    pub events: Vec<RegionEvent>,
    /// The `from_seq` to ask next: one past the last event returned (or
    /// past the newest event when none matched).
    pub next_seq: u64,
    /// Oldest sequence number the log still holds (the log is bounded);
    /// 0 while it is empty.
    pub oldest_seq: u64,
    /// Events between `from_seq` and the first returned that the log no
    /// longer holds.
    pub missed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kebab_case_as_serde_writes_them() {
        for s in [
            LivenessState::Unknown,
            LivenessState::Up,
            LivenessState::Suspect,
            LivenessState::Down,
        ] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
        }
        for c in [
            Classification::None,
            Classification::Undetermined,
            Classification::Shutdown,
            Classification::Crash,
            Classification::EdgeFailure,
            Classification::Partition,
        ] {
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::String(c.as_str().into())
            );
        }
        for k in [
            EventKind::EdgeUp,
            EventKind::EdgeSuspect,
            EventKind::EdgeDown,
            EventKind::EdgeBack,
            EventKind::EdgeReclassified,
            EventKind::WorkloadSubmitted,
            EventKind::WorkloadDeleted,
            EventKind::AllocPlaced,
            EventKind::AllocStopped,
            EventKind::AllocReplaced,
            EventKind::PlacementFailed,
            EventKind::LeaseExpired,
            EventKind::AllocMigrated,
        ] {
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::String(k.as_str().into())
            );
        }
        assert_eq!(
            serde_json::to_value(Evidence::DevicesMoved).unwrap(),
            serde_json::Value::String(Evidence::DevicesMoved.as_str().into())
        );
    }

    /// The layouts live in replicated state: this pins the encoding of one
    /// event so an accidental change of a stored type fails here.
    #[test]
    fn a_region_event_encodes_to_pinned_bytes() {
        let e = RegionEvent {
            seq: 3,
            at_ms: 1000,
            kind: EventKind::EdgeDown,
            subject: "e".into(),
            message: "m".into(),
            edge: Some(EdgeEventDetail {
                from: LivenessState::Suspect,
                liveness: EdgeLiveness {
                    state: LivenessState::Down,
                    classification: Classification::Crash,
                    evidence: vec![Evidence::ConnectionReset],
                    boot_id: 7,
                    since_ms: 1000,
                    last_heartbeat_ms: 100,
                    detection_ms: Some(900),
                    event_seq: 3,
                },
            }),
            attrs: vec![],
        };
        let bytes = bincode::encode_to_vec(&e, bincode::config::standard()).unwrap();
        assert_eq!(
            bytes,
            vec![
                3, 251, 208, 7, 2, 1, b'e', 1, b'm', 1, 2, 3, 3, 1, 4, 7, 251, 208, 7, 200, 1, 251,
                132, 3, 3, 0
            ]
        );
        let (back, _): (RegionEvent, usize) =
            bincode::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, e);
    }
}
