//! Why the scheduler could not produce a plan at all. A workload that does
//! not fit is not an error: its plan says why in `failed`.

use crate::ids::{EvalId, WorkloadId};
use crate::intent::IntentErrors;

/// Why [`crate::schedule`] refused an evaluation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    /// The snapshot is older than the evaluation requires; the caller waits
    /// for its state to catch up and retries.
    #[error("{eval} for {workload} needs snapshot index {need}, have {have}")]
    SnapshotBehind {
        /// The evaluation.
        eval: EvalId,
        /// Its workload.
        workload: WorkloadId,
        /// The index it needs.
        need: u64,
        /// The snapshot's index.
        have: u64,
    },
    /// The stored intent is invalid (it should have been refused on
    /// submit); nothing is changed.
    #[error("{eval}: workload {workload} has an invalid placement intent: {errors}")]
    InvalidIntent {
        /// The evaluation.
        eval: EvalId,
        /// Its workload.
        workload: WorkloadId,
        /// What is wrong.
        errors: IntentErrors,
    },
}
