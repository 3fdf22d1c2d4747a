//! Strata's scheduler: pure functions and cores that decide where workload
//! instances run, in the shape of nomad's scheduler, over a vocabulary that
//! is generic in what a node is — an edge inside a region now, a region
//! inside the global tier later.
//!
//! This crate must not depend on tokio, on any IO, on a clock, or on other
//! Strata crates: time and randomness are parameters, every output is a
//! value a test can compare, and `strata-protocol` depends on it (for the
//! intent in workload specs), not the other way round.
//!
//! # Layout
//! ```text
//! ids.rs        NodeId, WorkloadId, AllocId (128 random bits), EvalId, Timestamp
//! resources.rs  Resources (cpu millicores, memory bytes) and Dimension
//! model.rs      Node (+ NodeStatus), Workload, Allocation (+ Desired, ClientState,
//!               PlacementMeta, PlaceReason), Evaluation (+ Trigger)
//! intent/       PlacementIntent (serde + bincode): count | per-node, pools,
//!               constraints, (anti-)affinity to labels and workloads, spread,
//!               disconnect policy; validate() (rules.rs: predicates and
//!               satisfiability), validate_in_region() (names vs the region)
//! config.rs     SchedulerConfig (binpack | spread, sampling limits), in the snapshot
//! snapshot.rs   ClusterSnapshot: state + indexes, kept current by mutations
//! reconcile.rs  stage 1: desired vs existing, in buckets (disconnected first-class)
//! feasible.rs   stage 2: compiled hard rules, candidate index, failure tallies
//! rank.rs       stage 3: fit (binpack/spread over reservations and measured
//!               usage), anti-affinity, affinity, spread, devices
//! schedule.rs   schedule(): the pipeline and node sampling; check_feasible()
//! plan.rs       Plan, NodePlan, AllocStop/StopReason, InPlaceUpdate,
//!               PlacementFailure + AllocMetric (why not, per rule)
//! verify.rs     verify_plan(): the applier's optimistic-concurrency check;
//!               PlanVerdict::assign_tokens() (fencing tokens)
//! pressure.rs   Rebalancer: hysteresis, budget and cooldown → migrations
//! scale/        ScaleSpec (serde + bincode) + validate(); Autoscaler (samples
//!               and forecasts → ScaleDecision); device sharding over
//!               instance slots (rendezvous, frozen hash): shard_of, moves
//! error.rs      SchedError
//! global/       the global tier (central over regions):
//!   estimate.rs   RegionCapacity: per-node fit counts summed (never from
//!                 aggregates), per pool, a size ladder + free-vector histogram
//!   summary.rs    RegionSummary: health (+ as-of), capacity, tenant device
//!                 locality, live instances of each global workload
//!   intent.rs     GlobalIntent: count | per-region, size, pools, region
//!                 affinity, spread (targets), locality = "devices"; validate()
//!   snapshot.rs   GlobalSnapshot (summaries, workloads, current splits by
//!                 workload and region), GlobalConfig, GlobalWorkload, GlobalEval
//!   split.rs      split(): classify regions → keep unreachable shares →
//!                 proportional (water-filling) or room fill → GlobalPlan with
//!                 per-region reasons and a GlobalFailure (AllocMetric per rule)
//!   verify.rs     verify_global_plan(): refuse changed splits, trim growth to
//!                 the room left
//!   tests.rs, props.rs, bench.rs (global_split_throughput, #[ignore]d)
//! ```
//!
//! # Why each stage is shaped as it is
//! - **Reconcile first, in buckets.** Which instances are missing, extra,
//!   disconnected, lost, failed or migrating is decided before any node is
//!   looked at, so the disconnect policy is one table (at the top of
//!   `reconcile.rs`) instead of conditions scattered through placement: `keep` instances on a cut-off node are never
//!   replaced; `replace-after` ones only once the node has been gone that
//!   long *and* the snapshot says their lease expired, so the old copy has
//!   stopped itself before a new one exists. Count workloads reconcile by
//!   slot, so a replacement inherits its predecessor's slot and state.
//! - **Feasibility before ranking, first failure counted.** Each node is
//!   counted once, under the first rule that ruled it out, which is what
//!   makes "constraint zone = a: 7 filtered; memory exhausted: 2" add up.
//!   Hard rules pick the smallest node index to start from, so a narrow
//!   rule makes placement cheaper, not slower.
//! - **Ranking samples.** Ranking every node is O(nodes) per placement;
//!   nomad's answer, kept here, is to rank the best of a random
//!   log2(nodes)-sized feasible sample (more with soft rules), which keeps
//!   a placement at tens of node checks at 100k nodes. See
//!   [`schedule`] for the details and the reasoning.
//! - **Plans, not mutations.** The scheduler proposes; the single applier
//!   on the leader verifies each plan against the newest state
//!   ([`verify_plan`]) and commits the nodes that still fit, so several
//!   evaluations can be in flight without ever over-committing a node.
//!   Fencing tokens are assigned only there, at acceptance, so they follow
//!   commit order.
//! - **Rebalancing decides, scheduling moves.** Pressure rebalancing only
//!   picks allocations ([`Rebalancer`]); moving them is an ordinary
//!   evaluation, so a move obeys every placement rule and is verified like
//!   any plan. Its evaluation carries a [`Headroom`]: a migration never
//!   lands on a node that is hot, or that the move would make hot.

mod config;
mod error;
mod feasible;
pub mod global;
mod ids;
pub mod intent;
mod model;
mod plan;
mod pressure;
mod rank;
mod reconcile;
mod resources;
pub mod scale;
mod schedule;
mod snapshot;
mod verify;

pub use config::{Algorithm, SchedulerConfig};
pub use error::SchedError;
pub use ids::{AllocId, EvalId, NodeId, Timestamp, WorkloadId};
pub use intent::{
    validate_in_region, Cardinality, DisconnectPolicy, FieldError, IntentErrors, LabelAffinity,
    LabelRule, OnDisconnect, Operator, PlacementIntent, Spread, ValidationContext,
    WorkloadAffinity,
};
pub use model::{
    Allocation, ClientState, Desired, Evaluation, Headroom, Node, NodeStatus, PlaceReason,
    PlacementMeta, Trigger, Workload,
};
pub use plan::{
    AllocMetric, AllocStop, InPlaceUpdate, NodePlan, PlacementFailure, Plan, StopReason,
};
pub use pressure::{MoveCounts, MoveReason, PressureConfig, Rebalance, Rebalancer};
pub use resources::{Dimension, Resources};
pub use scale::{
    Autoscaler, Forecast, Metric, Observation, ScaleDecision, ScaleError, ScaleErrors, ScaleReason,
    ScaleSpec, ShardKey, Step,
};
pub use schedule::{check_feasible, schedule};
pub use snapshot::ClusterSnapshot;
pub use verify::{verify_plan, PlanVerdict, Rejection};
