//! The region's scheduler, on the leader: evaluations in, plans through
//! Raft out.
//!
//! ```text
//!  applied log ──SchedSignal──▶ SchedulerCore (sans-IO, core.rs)
//!  (changes, leadership,          snapshot kept current, evaluation queue,
//!   devices moving)               schedule → verify_plan (the one applier)
//!                                        │ Command::Propose(ApplyPlan)
//!                                        ▼
//!                    SchedulerDriver (driver.rs) ──▶ Raft ──▶ fsm::plan
//!                                                      (tokens, events)
//! ```
//!
//! # Layout
//! - [`core`]: [`SchedulerCore`], the sans-IO core (tested as command lists
//!   in `core_tests.rs` and `pressure_tests.rs`, and against an in-memory
//!   Raft group in `raft::harness_sched_tests`); `core/changes.rs` applies
//!   the log's changes to its snapshot and keeps the lease deadlines.
//! - [`lease`]: the lease deadlines the leader counts.
//! - `pressure`: rebalancing under pressure (measured use from heartbeats,
//!   the rebalancer's samples, where migrations may go, what is counted).
//! - [`driver`]: [`SchedulerDriver`], which owns the core and executes its
//!   commands; [`SchedSignal`], what the Raft node tells it.
//!
//! # Leases and fencing: why two live copies of a `replace-after` instance never exist
//!
//! The edge's half (`edge-node/src/workload/lifecycle/lease.rs`): an edge
//! runs a `replace-after` instance only under a lease of `L` (the
//! workload's `replace-after`), granted by an allocation set it fetched and
//! extended by heartbeat acknowledgements that say `lease_renewed`, each
//! counted from when the edge *sent* that request, on its monotonic clock.
//! When it cannot renew for `L` it stops the instance itself, and only a
//! new fetched set brings it back.
//!
//! The region's half:
//! 1. **Only the leader renews, and only for an edge it has decided is up
//!    and whose "up" is replicated** (`LivenessCore::lease_renewable`):
//!    heartbeat acks and allocation fetches answered by a follower, or for
//!    an edge that is suspect, down, held down for flapping or not yet
//!    confirmed up in the log, grant nothing.
//! 2. **Every grant is a heartbeat** (a fetch counts as one), so the last
//!    grant an edge got from this leader is no later than the last
//!    heartbeat the failure detector recorded, which every suspect or down
//!    decision carries (`last_heartbeat_ms`). The edge counts from its
//!    send time, before the hub received it, so its lease ends before
//!    `last_heartbeat + L`.
//! 3. **A new leader does not know what the old one granted.** raft-rs runs
//!    with `check_quorum`: a leader steps down when it has not heard from
//!    a quorum within an election timeout, checked once per election
//!    timeout, so at most `2 × election timeout` after its last quorum
//!    contact. The new leader was elected only after a quorum stopped
//!    hearing from the old one, so the old leader stops renewing no later
//!    than `took over + 2 × election timeout` (`LeaseConfig::leader_bound_ms`;
//!    a deposed leader that has not noticed may renew until then).
//!    Every lease an old leader granted ends by `took over + bound + L`.
//! 4. So for an allocation on a cut-off edge the leader counts the lease as
//!    running until `max(last heartbeat, took over + bound) + L + margin`
//!    (`lease::effective`); the margin covers the edge actually stopping
//!    (a callback in progress), processing delays and clock drift. The
//!    scheduler's reconcile replaces a `replace-after` instance only when
//!    its edge has been disconnected for `replace-after` **and** that
//!    deadline has passed; `keep` instances are never replaced for a
//!    disconnect.
//! 5. **The replacement is committed only while the edge is still cut off
//!    in the log.** The applier verifies the stop against its newest view
//!    (a lease renewed since the decision refuses it), and the state
//!    machine refuses, on every replica in log order, a `disconnected`
//!    stop whose edge's replicated liveness is up again, with its
//!    replacement (`fsm::plan`). Together with (1) — renewals only after
//!    "up" is in the log — either the edge's return is applied first (no
//!    replacement) or the stop is (the edge's next fetch no longer lists
//!    the allocation, and a late renewal cannot revive an expired lease).
//! 6. **Fencing**: every allocation has a fencing token from the region's
//!    counter, assigned at apply in commit order. Outputs carry
//!    `(allocation, token)`; the region refuses outputs of an allocation
//!    that was replaced (`fsm::allocs`), counted in
//!    `strata_hub_stale_fence_outputs_total`. State checkpoints are fenced
//!    the same way (`fsm::checkpoints`): a cut-off copy's late checkpoint
//!    cannot overwrite the state its replacement started from, and a
//!    replacement is handed the last checkpoint of the allocation it
//!    replaces with its allocation.
//!
//! The bound in (3) assumes the Raft ticks of the deposed leader are not
//! delayed by more than the margin, and the margin assumes hub clocks agree
//! within it (a new leader compares its clock with the old leader's
//! heartbeat times).

pub mod core;
mod driver;
pub mod lease;
mod pressure;

#[cfg(test)]
mod core_tests;

pub use self::core::{region_config, Command, CoreConfig, Observation, Rebuild, SchedulerCore};
pub use driver::{SchedSignal, SchedulerDriver};
pub use lease::LeaseConfig;
