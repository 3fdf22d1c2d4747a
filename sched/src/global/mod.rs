//! The global tier: what a region tells central about itself, and (later
//! in this module) how central splits a global workload over regions.
//!
//! # Why capacity is summed per node
//! A region's free capacity is useful to central only as "how many
//! instances of this size fit", and that number cannot be computed from
//! aggregates: free capacity spread thinly over many nodes takes nothing.
//! [`estimate_region`] therefore counts per node and sums, as Karmada's
//! accurate estimator does, and the summary carries a bounded histogram of
//! per-node free vectors so central can answer for any size without the
//! node list and without over-counting (see `estimate.rs`).

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
