//! The global tier: what a region tells central about itself
//! ([`RegionSummary`], with a [`RegionCapacity`] from [`estimate_region`]),
//! and how central splits a global workload ([`GlobalIntent`]) over regions
//! ([`split`] → [`GlobalPlan`], checked by [`verify_global_plan`]). The
//! same shape as the region scheduler one level up: regions are the nodes,
//! and a region's share becomes a region workload its own scheduler places.
//!
//! # Why capacity is summed per node
//! Central needs "how many instances of this size fit", and that cannot be
//! computed from aggregates: 3 cores free as 10 × 300 millicores take no
//! 1-core instance. [`estimate_region`] counts per node and sums, as
//! Karmada's accurate estimator does, honouring `one-per-node` (an edge runs
//! a workload once). Since a workload's size is free-form, the summary also
//! carries every node's free vector, bucketed and rounded *down* into at
//! most [`MAX_FREE_BUCKETS`] entries: exact for a homogeneous fleet, bounded
//! for any region, and never over-counting. Pending shares (assigned, not
//! yet placed, so not yet in a summary) are charged against a region's room
//! at the most each can displace, so central does not hand the same room
//! to two workloads between summaries.
//!
//! # Why an unreachable region keeps its share
//! Down, partitioned or silent (a summary older than `stale-after`) looks
//! the same from central, and in the partitioned case its instances are
//! still running. Re-placing them elsewhere would double the workload for
//! as long as the partition lasts and then need a second decision to undo;
//! keeping the share and placing nothing new there costs only the capacity
//! the region cannot use anyway. The exception is device locality: when the
//! tenant's devices now report through another region (fewer devices
//! there than the share), the instances left behind watch nothing, so that
//! part, and only that part, is re-placed.
//!
//! # How stability is achieved
//! The rules give each region a range, not a number: `[floor, ceil]` of its
//! exact proportional share (spread, locality; water-filled over capacity
//! caps), or `[0, room]` without them. Each region starts from its current
//! share clamped into its range, and instances are then added or removed
//! one at a time where the rules want them most (largest remainder; most
//! preferred and roomiest). A current split the rules allow is therefore
//! kept unchanged, and splitting a plan's own output again is a no-op (a
//! tested invariant). A running share never loses room to capacity: a
//! region's room for a workload includes what it already runs of it.

mod estimate;
mod intent;
mod snapshot;
mod split;
mod summary;
mod verify;

pub use estimate::{
    count_fit, estimate_region, fit_on_node, FreeBucket, FreeHistogram, LadderFit, PoolCapacity,
    RegionCapacity, MAX_FREE_BUCKETS, STANDARD_SIZES,
};
pub use intent::{
    GlobalCardinality, GlobalIntent, GlobalIntentErrors, GlobalSpread, Locality, RegionAffinity,
    MAX_GLOBAL_COUNT, MAX_REGION_NAME_LEN, MAX_REGION_RULES,
};
pub use snapshot::{GlobalConfig, GlobalEval, GlobalSnapshot, GlobalWorkload};
pub use split::{split, GlobalFailure, GlobalPlan, GlobalSplitError, RegionShare, ShareReason};
pub use summary::{HealthAsOf, Placed, RegionHealth, RegionSummary};
pub use verify::{verify_global_plan, GlobalRejection, GlobalVerdict};

#[cfg(test)]
mod bench;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
