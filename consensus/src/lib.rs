//! Strata's Raft glue, shared by every replicated tier: a region's hubs
//! and central's replicas run the same node core over their own state
//! machines.
//!
//! # Layout
//! ```text
//! machine.rs     Machine: what a service plugs in (apply, snapshot/restore,
//!                durability, leadership and publish hooks); RaftView
//! node.rs        RaftNode<M>: the one owner of the RawNode; Inbox, proposals
//!                tracked by (term, index), ReadIndex reads, Ready in raft-rs's
//!                documented order, status; ProposeError, NodeError
//! apply.rs       committed entries → machine, conf changes, snapshots
//!                (SnapshotData: machine bytes + members), compaction behind
//!                the machine's durable index
//! membership.rs  adding a voter as a learner first, promoted once caught up,
//!                or refused with the reason; the leader's view of members
//! storage.rs     RaftLogStorage: the raft-engine log, hard state, membership
//! transport.rs   Transport trait and fault filters (drop, partition, isolate)
//! quic.rs        QuicTransport and serve_peers over mutual-TLS QUIC, generic
//!                in the inbox type; hub and central peer policies
//! driver.rs      spawn(): the node's own thread and clock; Handle<M>
//! forward.rs     writes through the leader from any replica, over the peer
//!                connection (Forwarder, forward_fn)
//! metrics.rs     RaftMetrics, registered under the service's prefix
//! harness.rs     in-memory multi-replica harness with logical time (tests)
//! ```
//!
//! # Why it is shaped this way
//! - **The node is sans-IO.** [`RaftNode`] is fed messages, ticks and the
//!   time; it talks to peers through a [`Transport`] and to the disk only
//!   through raft-engine and its machine. [`driver::spawn`] is the only
//!   place that reads the clock, so the harness runs whole groups
//!   deterministically in one test.
//! - **The machine owns durability.** The log is compacted only behind
//!   [`Machine::durable_index`], so a machine may checkpoint as rarely as it
//!   likes (the hub's telemetry store checkpoints in the background, central
//!   writes a small state file) and never leaves a hole.
//! - **Reads are linearizable by default, on any replica.** ReadIndex asks
//!   the leader for its commit index, confirmed by a quorum heartbeat; the
//!   replica answers once it has applied that far. No lease, so no clock
//!   assumption.

// protobuf messages are built field by field, as in raft-rs's own examples.
#![allow(clippy::field_reassign_with_default)]

pub mod apply;
pub mod driver;
pub mod forward;
pub mod harness;
pub mod machine;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod quic;
pub mod storage;
pub mod transport;

pub use apply::SnapshotData;
pub use driver::{now_ms, spawn, Handle, Spawned, INBOX_CAPACITY};
pub use forward::{forward_fn, ForwardError, ForwardFn, Forwarder};
pub use machine::{Machine, RaftView};
pub use membership::MembershipConfig;
pub use metrics::RaftMetrics;
pub use node::{
    ConfChangeReply, Inbox, MemberChange, NodeConfig, NodeError, NodeFn, PeerEvent, ProposeError,
    ProposeReply, RaftNode, RaftStatus,
};
pub use quic::{central_peer_policy, hub_peer_policy, serve_peers, FrameLimits, QuicTransport};
pub use storage::{RaftLogStorage, StorageError};
pub use transport::{Filter, FilteredTransport, Filters, Transport};

#[cfg(test)]
mod tests;
