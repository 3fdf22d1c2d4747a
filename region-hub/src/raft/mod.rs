//! The hub's side of Raft: its replicated state machine ([`machine`]: the
//! region state and the telemetry store, with the signals it sends the
//! rest of the hub), the store as the machine sees it ([`store`]), and the
//! handle the service and drivers use ([`driver`]). The node core, log,
//! membership, transport and harness are the shared `strata-consensus`.

pub mod driver;
pub mod machine;
pub mod store;

pub use driver::{hub_status, read_local, HubNode, NodeHandle, StateView};
pub use machine::{HubMachine, HubMachineError, NodeSignal, NodeView, Observer, ReadRequest};
pub use store::{HubStore, SharedStore, StoreReader};
pub use strata_consensus::{
    MemberChange, MembershipConfig, NodeConfig, NodeError, ProposeError, RaftNode,
};

#[cfg(test)]
pub mod harness;
#[cfg(test)]
mod harness_sched_tests;
#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod quic_tests;
#[cfg(test)]
mod tests;
