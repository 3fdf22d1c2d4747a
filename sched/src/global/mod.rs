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

pub use estimate::{
    count_fit, estimate_region, fit_on_node, FreeBucket, FreeHistogram, LadderFit, PoolCapacity,
    RegionCapacity, MAX_FREE_BUCKETS, STANDARD_SIZES,
};
