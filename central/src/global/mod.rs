//! The global tier on central's leader: region summaries in, splits over
//! regions out, regional monitors kept equal to the splits.
//!
//! - [`evaluate`] (pure): which plans to propose for the state as applied:
//!   `strata_sched::global::split` per workload, keeping only plans that
//!   change a split or the workload's failure. The state machine verifies
//!   and applies them (`ApplyGlobalPlan`), so it is the single applier.
//! - [`reconcile`] (pure): what to submit to or delete from each region so
//!   that its monitors match the splits.
//! - [`driver`]: the leader's loop: fetch each region's summary, propose
//!   reports and plans, carry out the reconcile actions. The only part
//!   that does IO.
//! - [`sample`] (pure): a workload's instance statuses → the autoscaler's
//!   observation of its metric; each forecast step's mean.
//! - [`prescale`] (pure): the replicated load history → a Holt-Winters
//!   forecast for the autoscaler to pre-scale on.

pub mod driver;
mod evaluate;
pub mod prescale;
mod reconcile;
pub mod sample;

pub use driver::{GlobalDriver, GlobalSettings};
pub use evaluate::evaluate;
pub use reconcile::{reconcile, Action, RegionMonitors};
