//! Autoscaling (work in progress).

mod autoscaler;
mod shard;
mod spec;

pub use autoscaler::{
    Autoscaler, DecisionInputs, Forecast, Observation, ScaleDecision, ScaleError, ScaleReason,
    MAX_SAMPLES,
};
pub use shard::{assign, moves, shard_among, shard_of, Move, ShardKey};
pub use spec::{
    Metric, ScaleErrors, ScaleSpec, Step, DEFAULT_SCALE_DOWN_WINDOW, DEFAULT_TOLERANCE,
    MAX_INSTANCES, MAX_STEP_UP_PERCENT, MAX_TOLERANCE, MAX_WINDOW,
};
