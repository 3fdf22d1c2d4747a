//! The region's replicated state machine: a pure `apply(state, index, bytes)`.
//!
//! No IO, no clock, no Raft: every replica applies the same committed entries
//! in the same order and must reach the same state and emit the same records
//! for its telemetry store. Anything time-dependent (`received_ms`) is stamped
//! by the leader into the command before it is proposed.
//!
//! # Layout
//! - this file: the versioned [`CommandEnvelope`], [`Command`] encoding and [`apply`].
//! - [`state`]: [`RegionState`] — edges, devices and the dedup state.
//! - [`interval`]: [`IntervalSet`], the compact "which sequence numbers are stored" set.
//!
//! # Exactly-once
//! Two layers, both inside [`apply`], so every replica drops the same records:
//! 1. per `(edge, spool epoch)`, the edge sequence numbers already stored: a
//!    resent or re-cut batch stores only its new records, in any arrival order;
//! 2. per `(tenant, device)`, the device `seq`s already stored: a device's MQTT
//!    QoS 1 retransmission is dropped even when it reaches the region through
//!    another edge. Records without `seq` skip this layer. A known seq with a
//!    timestamp *newer* than every stored reading of the device cannot be a
//!    retransmission (which repeats a stored reading): it means the device
//!    restarted its counter, so it is stored and the device's seq set starts
//!    afresh — a rare duplicate is preferred over dropping new data.
//!
//! Both sets are bounded ([`DEDUP_MAX_INTERVALS`]); see
//! [`IntervalSet::enforce_cap`] for the trade-off, counted in
//! [`RegionState::dedup_gaps_merged`].
//!
//! # Versioning
//! Each Raft entry holds a [`CommandEnvelope`] `{kind, ignorable, body}`. A
//! replica that does not know `kind` skips the entry when `ignorable` is set
//! and otherwise halts with [`FsmError::UnknownCommand`] (nomad `fsm.go`), so
//! a mixed-version group never silently diverges on data-bearing commands.

pub mod interval;
pub mod state;

use bincode::{Decode, Encode};
use strata_protocol::{EdgeStatus, TelemetryBatch, TelemetryRecord};

pub use interval::IntervalSet;
pub use state::{RegionState, DEDUP_MAX_INTERVALS};

/// Envelope kind of [`Command::StoreBatch`].
pub const KIND_STORE_BATCH: u16 = 1;
/// Envelope kind of [`Command::EdgeHeartbeat`].
pub const KIND_EDGE_HEARTBEAT: u16 = 2;

/// Largest envelope or body decoded, in bytes (64 MiB): an allocation limit so
/// a corrupt length inside an entry cannot exhaust memory.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024 * 1024;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_COMMAND_BYTES>()
}

/// Envelope stored in each Raft entry: versioned and forward compatible.
/// Unknown kinds carry `ignorable`, so a mixed-version group keeps working
/// (nomad fsm.go): an old replica skips an ignorable unknown command and
/// halts (returns an error) on a non-ignorable one.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CommandEnvelope {
    /// Command kind (`KIND_*`).
    pub kind: u16,
    /// Whether a replica that does not know `kind` may skip the entry.
    pub ignorable: bool,
    /// bincode body of the command.
    pub body: Vec<u8>,
}

/// A replicated command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Store an edge's batch. `received_ms` is stamped by the leader when
    /// proposing (apply must not read a clock).
    StoreBatch {
        /// The batch as the edge sent it.
        batch: TelemetryBatch,
        /// Leader's clock when the batch arrived, ms since the Unix epoch.
        received_ms: i64,
    },
    /// An edge heartbeat.
    EdgeHeartbeat {
        /// The status the edge reported.
        status: EdgeStatus,
        /// Leader's clock when the heartbeat arrived, ms since the Unix epoch.
        received_ms: i64,
    },
}

#[derive(Encode, Decode)]
struct StoreBatchBody {
    batch: TelemetryBatch,
    received_ms: i64,
}

#[derive(Encode, Decode)]
struct HeartbeatBody {
    status: EdgeStatus,
    received_ms: i64,
}

/// Result of [`decode_command`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A command this build understands.
    Command(Command),
    /// An unknown command marked ignorable: skip it.
    SkipIgnorable {
        /// Its kind.
        kind: u16,
    },
}

/// What [`apply`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// Records the store must insert: already deduplicated, in batch order.
    pub records: Vec<TelemetryRecord>,
    /// What happened.
    pub outcome: Outcome,
}

/// Effect of one applied entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A batch was committed (maybe entirely as duplicates).
    Committed {
        /// The batch's first edge sequence number.
        first_seq: u64,
        /// Records in the batch.
        count: u32,
        /// Records stored for the first time.
        new_records: u32,
        /// Records already stored before (resends and device retransmissions).
        duplicates: u32,
    },
    /// A heartbeat updated the edge's status.
    HeartbeatRecorded,
    /// Nothing happened: an already-applied index or an ignorable unknown command.
    Skipped,
}

/// Why a command or the state could not be decoded or applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FsmError {
    /// The entry is not a valid [`CommandEnvelope`].
    #[error("malformed command envelope: {detail}")]
    MalformedEnvelope {
        /// What the decoder said.
        detail: String,
    },
    /// The body does not decode as the command its kind names.
    #[error("malformed body for command kind {kind}: {detail}")]
    MalformedBody {
        /// Command kind.
        kind: u16,
        /// What the decoder said.
        detail: String,
    },
    /// A command kind this build does not know and may not skip: the replica
    /// must halt (upgrade it) rather than diverge.
    #[error("unknown non-ignorable command kind {kind}: this replica is too old, upgrade it")]
    UnknownCommand {
        /// Command kind.
        kind: u16,
    },
    /// Applying the entry at `index` failed.
    #[error("cannot apply raft entry {index}: {source}")]
    Apply {
        /// Raft log index.
        index: u64,
        /// Why.
        #[source]
        source: Box<FsmError>,
    },
    /// Encoded region state (snapshot or checkpoint) is unreadable.
    #[error("corrupt region state: {detail}")]
    CorruptState {
        /// What is wrong.
        detail: String,
    },
}

impl FsmError {
    /// The innermost error (unwraps [`FsmError::Apply`]).
    pub fn root(&self) -> &FsmError {
        match self {
            FsmError::Apply { source, .. } => source.root(),
            other => other,
        }
    }
}

fn encode_body<T: Encode>(body: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail (no limit applies to encoding).
    bincode::encode_to_vec(body, bincode::config::standard()).unwrap_or_default()
}

/// Envelope bytes for a Raft entry.
pub fn encode_command(cmd: &Command) -> Vec<u8> {
    let (kind, ignorable, body) = match cmd {
        // Data-bearing: an old replica must not skip it.
        Command::StoreBatch { batch, received_ms } => (
            KIND_STORE_BATCH,
            false,
            encode_body(&StoreBatchBodyRef {
                batch,
                received_ms: *received_ms,
            }),
        ),
        // Status only: losing it on an old replica costs a stale dashboard.
        Command::EdgeHeartbeat {
            status,
            received_ms,
        } => (
            KIND_EDGE_HEARTBEAT,
            true,
            encode_body(&HeartbeatBodyRef {
                status,
                received_ms: *received_ms,
            }),
        ),
    };
    encode_body(&CommandEnvelope {
        kind,
        ignorable,
        body,
    })
}

// Borrowing twins of the bodies, so encoding does not clone a batch.
#[derive(Encode)]
struct StoreBatchBodyRef<'a> {
    batch: &'a TelemetryBatch,
    received_ms: i64,
}

#[derive(Encode)]
struct HeartbeatBodyRef<'a> {
    status: &'a EdgeStatus,
    received_ms: i64,
}

fn decode_exact<T: Decode<()>>(bytes: &[u8]) -> Result<T, String> {
    let (v, used) =
        bincode::decode_from_slice(bytes, bincode_config()).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
    }
    Ok(v)
}

/// Decodes a Raft entry's bytes.
pub fn decode_command(data: &[u8]) -> Result<Decoded, FsmError> {
    let env: CommandEnvelope =
        decode_exact(data).map_err(|detail| FsmError::MalformedEnvelope { detail })?;
    let kind = env.kind;
    let body_err = |detail| FsmError::MalformedBody { kind, detail };
    match kind {
        KIND_STORE_BATCH => {
            let b: StoreBatchBody = decode_exact(&env.body).map_err(body_err)?;
            Ok(Decoded::Command(Command::StoreBatch {
                batch: b.batch,
                received_ms: b.received_ms,
            }))
        }
        KIND_EDGE_HEARTBEAT => {
            let b: HeartbeatBody = decode_exact(&env.body).map_err(body_err)?;
            Ok(Decoded::Command(Command::EdgeHeartbeat {
                status: b.status,
                received_ms: b.received_ms,
            }))
        }
        _ if env.ignorable => Ok(Decoded::SkipIgnorable { kind }),
        _ => Err(FsmError::UnknownCommand { kind }),
    }
}

/// Applies the committed entry `index` holding `data`.
///
/// Pure: same state + same index + same bytes => same result on every
/// replica. An index at or below [`RegionState::applied_index`] is a no-op
/// returning [`Outcome::Skipped`], so replaying the log after a restart from
/// an older checkpoint is harmless. On error the state is unchanged and the
/// index is not consumed: the driver must halt the replica.
pub fn apply(state: &mut RegionState, index: u64, data: &[u8]) -> Result<Applied, FsmError> {
    if index <= state.applied_index() {
        return Ok(Applied {
            records: Vec::new(),
            outcome: Outcome::Skipped,
        });
    }
    let decoded = decode_command(data).map_err(|e| FsmError::Apply {
        index,
        source: Box::new(e),
    })?;
    state.set_applied_index(index);
    Ok(match decoded {
        Decoded::SkipIgnorable { .. } => Applied {
            records: Vec::new(),
            outcome: Outcome::Skipped,
        },
        Decoded::Command(Command::StoreBatch { batch, received_ms }) => {
            state.store_batch(batch, received_ms)
        }
        Decoded::Command(Command::EdgeHeartbeat {
            status,
            received_ms,
        }) => {
            state.record_heartbeat(status, received_ms);
            Applied {
                records: Vec::new(),
                outcome: Outcome::HeartbeatRecorded,
            }
        }
    })
}

#[cfg(test)]
mod tests;
