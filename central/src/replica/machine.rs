//! Central's Raft machine: [`CentralState`] plus its durability (a state
//! file written atomically every `checkpoint-every` entries and at
//! shutdown) and what it publishes to the rest of central (the operator
//! digest for the HTTP guard, whether this replica leads).

use std::path::PathBuf;
use std::time::Instant;

use strata_consensus::{Machine, RaftView};
use tokio::sync::watch;

use crate::state::{CentralState, Command, Outcome};

/// Name of the state file in `<data-dir>/cluster/`.
pub const STATE_FILE: &str = "state.bin";

/// Why central's machine failed (the replica halts).
#[derive(Debug, thiserror::Error)]
pub enum CentralMachineError {
    /// A committed entry does not decode (written by a newer central?).
    #[error("central replica {id}: entry {index} does not decode: {reason}")]
    Decode {
        /// Replica id.
        id: u64,
        /// Log index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// The state file could not be written or read.
    #[error("central replica {id}: state file {path}: {reason}")]
    File {
        /// Replica id.
        id: u64,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What the machine publishes after each change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The replicated operator digest, once set.
    pub operator: Option<[u8; 32]>,
    /// True while this replica leads.
    pub leader: bool,
}

/// The machine. See the module docs.
pub struct CentralMachine {
    id: u64,
    state: CentralState,
    file: PathBuf,
    durable: u64,
    applied: u64,
    every: u64,
    publish: watch::Sender<Published>,
}

/// The state file's content: the applied index, then the state.
fn encode_file(index: u64, state: &CentralState) -> Vec<u8> {
    let mut out = index.to_be_bytes().to_vec();
    out.extend(state.encode());
    out
}

impl CentralMachine {
    /// Opens the machine from the state file in `dir` (an empty state at
    /// index 0 when there is none); checkpoints every `every` entries.
    pub fn open(
        id: u64,
        dir: PathBuf,
        every: u64,
        publish: watch::Sender<Published>,
    ) -> Result<Self, CentralMachineError> {
        let file = dir.join(STATE_FILE);
        let bad = |reason: String| CentralMachineError::File {
            id,
            path: file.clone(),
            reason,
        };
        let (durable, state) = match std::fs::read(&file) {
            Ok(bytes) => {
                let (head, rest) = bytes
                    .split_at_checked(8)
                    .ok_or_else(|| bad("shorter than its header".into()))?;
                let mut index = [0u8; 8];
                index.copy_from_slice(head);
                let state = CentralState::decode(rest).map_err(|e| bad(e.to_string()))?;
                (u64::from_be_bytes(index), state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, CentralState::default()),
            Err(e) => return Err(bad(e.to_string())),
        };
        let m = CentralMachine {
            id,
            state,
            file,
            durable,
            applied: durable,
            every: every.max(1),
            publish,
        };
        m.publish_state(false);
        Ok(m)
    }

    /// The state as of the applied index.
    pub fn state(&self) -> &CentralState {
        &self.state
    }

    fn publish_state(&self, leader: bool) {
        let next = Published {
            operator: self.state.operator(),
            leader,
        };
        self.publish.send_if_modified(|p| {
            let changed = *p != next;
            if changed {
                *p = next;
            }
            changed
        });
    }

    /// Replaces the state file atomically and durably: a temp file
    /// (0600), fsync, rename over the old one, fsync the directory. A crash
    /// at any point leaves the old file or the new one, never a mix.
    fn write_file(&mut self, index: u64) -> Result<(), CentralMachineError> {
        use std::io::Write as _;
        let tmp = self.file.with_extension("tmp");
        let fail = |what: &str, e: &dyn std::fmt::Display| CentralMachineError::File {
            id: self.id,
            path: self.file.clone(),
            reason: format!("{what}: {e}"),
        };
        let mut f = strata_net::files::create_private(&tmp).map_err(|e| fail("create", &e))?;
        f.write_all(&encode_file(index, &self.state))
            .map_err(|e| fail("write", &e))?;
        f.sync_all().map_err(|e| fail("fsync", &e))?;
        drop(f);
        std::fs::rename(&tmp, &self.file).map_err(|e| fail("rename", &e))?;
        if let Some(dir) = self.file.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| fail("fsync dir", &e))?;
        }
        self.durable = index;
        Ok(())
    }
}

/// Encodes an [`Outcome`] for a forwarded proposal's answer.
pub fn encode_outcome(o: &Outcome) -> Vec<u8> {
    // A tag byte, then the text of the variants that carry one.
    let (tag, text) = match o {
        Outcome::Applied => (0u8, ""),
        Outcome::Unchanged => (1, ""),
        Outcome::NotFound { what } => (2, what.as_str()),
        Outcome::Refused { reason } => (3, reason.as_str()),
    };
    let mut out = vec![tag];
    out.extend_from_slice(text.as_bytes());
    out
}

/// Decodes [`encode_outcome`]'s bytes.
pub fn decode_outcome(bytes: &[u8]) -> Option<Outcome> {
    let (tag, text) = bytes.split_first()?;
    let text = String::from_utf8_lossy(text).into_owned();
    Some(match tag {
        0 => Outcome::Applied,
        1 => Outcome::Unchanged,
        2 => Outcome::NotFound { what: text },
        3 => Outcome::Refused { reason: text },
        _ => return None,
    })
}

impl Machine for CentralMachine {
    type Outcome = Outcome;
    type Error = CentralMachineError;

    fn apply(
        &mut self,
        index: u64,
        data: &[u8],
        raft: &RaftView,
    ) -> Result<Outcome, CentralMachineError> {
        let cmd = Command::decode(data).map_err(|e| CentralMachineError::Decode {
            id: self.id,
            index,
            reason: e.to_string(),
        })?;
        let outcome = self.state.apply(index, cmd);
        self.applied = index;
        self.publish_state(raft.is_leader);
        Ok(outcome)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, CentralMachineError> {
        Ok(self.state.encode())
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), CentralMachineError> {
        self.state = CentralState::decode(data).map_err(|e| CentralMachineError::Decode {
            id: self.id,
            index,
            reason: format!("snapshot: {e}"),
        })?;
        self.applied = index;
        // Durable before raft's log forgets what the snapshot replaces.
        self.write_file(index)?;
        self.publish_state(false);
        Ok(())
    }

    fn durable_index(&self) -> u64 {
        self.durable
    }

    fn checkpoint(
        &mut self,
        applied: u64,
        _now: Instant,
        _now_ms: i64,
        wait: bool,
    ) -> Result<(), CentralMachineError> {
        // The state is small: writing it is a few ms, done in place.
        if applied > self.durable && (wait || applied - self.durable >= self.every) {
            self.write_file(applied)?;
        }
        Ok(())
    }

    fn on_leadership(&mut self, leader: bool, _raft: &RaftView) {
        self.publish_state(leader);
    }

    fn published(&mut self, raft: &RaftView) {
        self.publish_state(raft.is_leader);
    }
}
