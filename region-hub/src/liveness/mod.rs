//! Edge failure detection on the region leader.
//!
//! Edge heartbeats are soft state on the leader, not Raft entries. A
//! sans-IO core ([`core::LivenessCore`]) is fed what the leader observes —
//! heartbeats (with the edge's boot id and report), batches, the opening
//! and the end of each edge's QUIC connection and how it ended, devices of
//! an edge arriving through another edge, leadership changes, the applied
//! decisions, and time — and answers with commands: replicate a liveness
//! decision (an `EdgeTransition`, which becomes an event of the region's
//! event log on apply), or replicate an edge's latest report (rate
//! limited); `transitions` holds how each decision is made.
//! [`driver::LivenessDriver`] runs it on the hub's runtime and
//! executes those commands through Raft; [`view`] turns its soft state
//! into what reads see.
//!
//! # What the leader can observe, and so how fast it knows
//! A SIGKILLed edge sends nothing: no QUIC close, no reset (its UDP port
//! is simply gone, and quinn ignores the ICMP errors the kernel may send
//! back). The leader sees only silence: heartbeats stop (every
//! `uplink.heartbeat-ms`, 250 ms by default), and the connection idles out
//! (after the edge's `uplink.idle-timeout`, 1 s by default, which QUIC
//! applies to both ends). So: no heartbeat for `suspect-after` (600 ms)
//! makes an edge suspect, and `grace` (300 ms) more without one makes it
//! down, at most 900 ms after its last heartbeat, about 650–900 ms after
//! the kill. A connection that ends (closed, reset, idled out) with no
//! other connection of the edge open makes it suspect at once; a close
//! with the shutdown code (a SIGTERM) makes it down at once.
//!
//! # Crash or partition
//! Classified wherever there is evidence ([`Classification`]): a shutdown
//! close; a reset (crash); silence alone (undetermined); its devices
//! reporting through another edge while it is silent (edge failure, the
//! devices are fine); back with a new boot id (crash) or the same one
//! (partition: the process lived through).
//!
//! # Leader changes
//! A new leader starts every edge as `unknown` from the replicated
//! decisions. It declares no edge down that it has not heard from before
//! `leader-grace` has passed under its own leadership: edges need that long
//! to notice the old leader is gone and find the new one, so a leader
//! change never looks like a mass failure. An edge it has heard from since
//! it took over and then lost is judged as usual (its silence is no
//! artifact of the leader change), so a fresh cluster detects failures at
//! full speed from its first heartbeats. It replicates each edge's latest report when it changes
//! materially (monitor instances, capacity, assignments version) or every
//! `report-interval`, so a new leader, and followers answering reads, are
//! not blind to capacity and instance state.
//!
//! [`Classification`]: strata_protocol::liveness::Classification

pub mod core;
pub mod driver;
mod transitions;
pub mod view;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod core_tests;

pub use self::core::{CloseKind, Command, CoreConfig, LivenessCore, Now};
pub use driver::{LivenessDriver, LivenessHandle};
pub use view::{views, SoftEdge, SoftEdges};
