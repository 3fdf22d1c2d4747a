//! What a replicated service plugs into the node: its state machine.
//!
//! The node owns Raft (log, membership, proposals, reads); the machine owns
//! the state and its durability. The contract that keeps replicas equal:
//! [`Machine::apply`] is deterministic in `(state, index, data)`; whatever
//! it does besides (metrics, signals to the service) must not feed back
//! into the state.
//!
//! Durability: the Raft log is the machine's write-ahead log. The node
//! compacts the log only up to [`Machine::durable_index`], so everything
//! after it is replayed on restart; a machine that checkpoints rarely keeps
//! a longer log, never a hole.

use std::time::Instant;

use strata_protocol::LeaderHint;

/// The replica's Raft position, as a machine sees it when called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftView {
    /// This replica's id.
    pub id: u64,
    /// True while this replica leads.
    pub is_leader: bool,
    /// Current term.
    pub term: u64,
    /// Where the leader is, when known.
    pub leader: Option<LeaderHint>,
}

/// A replicated state machine driven by [`crate::RaftNode`].
pub trait Machine: Send + 'static {
    /// What the proposer of a command hears once it is applied.
    type Outcome: Send + 'static;
    /// The machine's errors; any of them halts the replica (an entry that
    /// cannot be applied would make replicas diverge).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies the committed command at `index`. Deterministic: every
    /// replica applies the same entries in the same order.
    fn apply(
        &mut self,
        index: u64,
        data: &[u8],
        raft: &RaftView,
    ) -> Result<Self::Outcome, Self::Error>;

    /// Everything applied so far, for a Raft snapshot.
    fn snapshot(&mut self) -> Result<Vec<u8>, Self::Error>;

    /// Replaces the state by a snapshot's, taken at `index`, durably.
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), Self::Error>;

    /// The highest index whose effects survive a crash without the log.
    fn durable_index(&self) -> u64;

    /// Called on every loop: may start or finish making the state durable
    /// up to `applied`. Must not block on disk unless `wait` (shutdown,
    /// tests): then the state is durable at `applied` on return.
    fn checkpoint(
        &mut self,
        applied: u64,
        now: Instant,
        now_ms: i64,
        wait: bool,
    ) -> Result<(), Self::Error>;

    /// This replica started (`true`) or stopped leading, in apply order:
    /// everything applied so far is visible to the machine.
    fn on_leadership(&mut self, _leader: bool, _raft: &RaftView) {}

    /// After every Ready and applied entry: publish what changed.
    fn published(&mut self, _raft: &RaftView) {}
}
