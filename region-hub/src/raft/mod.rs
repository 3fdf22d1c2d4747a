//! Raft glue: the raft-engine backed log ([`storage`]), the node core that
//! owns the `RawNode` ([`node`], with its apply side in [`apply`] and its
//! membership changes in [`membership`]: learner first, promoted once caught
//! up, or refused with the reason), the thread that drives it ([`driver`])
//! and the peer transport ([`transport`], QUIC in [`quic`]).

// protobuf messages are built field by field, as in raft-rs's own examples.
#![allow(clippy::field_reassign_with_default)]

pub mod apply;
pub mod driver;
pub mod membership;
pub mod node;
pub mod quic;
pub mod storage;
pub mod transport;

pub use apply::{HubStore, SnapshotData};
pub use membership::MembershipConfig;
pub use node::{
    ConfChangeReply, Inbox, MemberChange, NodeConfig, NodeError, NodeSignal, NodeView, Observer,
    ProposeError, ProposeReply, RaftNode, ReadRequest, StateFn, StateView,
};
pub use storage::{RaftLogStorage, StorageError};
pub use transport::{Filter, FilteredTransport, Filters, Transport};

#[cfg(test)]
pub mod harness;
#[cfg(test)]
mod harness_sched_tests;
#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod tests;
