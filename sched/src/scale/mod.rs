//! Autoscaling: how many instances a workload runs ([`Autoscaler`], per
//! its [`ScaleSpec`]), and which instance monitors which device when that
//! number changes ([`shard_of`]).
//!
//! The autoscaler is Kubernetes' HPA in shape — `desired = ceil(total /
//! target)` within `min..=max` — as a sans-IO core: samples and forecasts
//! in, [`ScaleDecision`]s (count, reason, inputs) out, time a parameter.
//! Where it departs from or pins down the HPA, and why:
//!
//! - **A tolerance band** (default ±10 %) around the current count's
//!   capacity: counters are noisy, and a change costs a start or a stop and
//!   re-sharding devices, so load that is merely close to the target never
//!   moves anything.
//! - **Scale-down to the highest recommendation of `scale-down-window`**
//!   (default 5 min): instances are released only once load has stayed
//!   lower for the whole window, and then only down to what the window's
//!   peak needed. Load that swings between two levels therefore settles at
//!   the higher one instead of flapping, and a scale-down can never come
//!   within a window of the scale-up it undoes, which bounds direction
//!   changes to about two per window whatever the input.
//! - **Scale-up on the peak of a short window** (default: the newest
//!   sample): a surge raises the count on the first decision that sees it;
//!   dropped records are worse than an idle instance for a few minutes.
//! - **Forecasts only ever scale up.** A forecast above the reactive
//!   recommendation pre-scales (bounded by `max`); one below is ignored, so
//!   a wrong prediction can never take away capacity the load now needs. A
//!   forecast is remembered in the scale-down window like a sample: a
//!   flickering forecast does not flap, and a wrong high one costs at most
//!   one window of idle instances.
//! - **Step limits and cooldown** are opt-in (default: none, 0 s); the
//!   windows already damp flapping, and `min`/`max` always win over both.
//! - **Bounded state.** The windows' maxima are a monotonic queue in time
//!   slots of `scale-down-window / 4095`, so memory is bounded whatever the
//!   sampling rate.
//!
//! Sharding is rendezvous hashing over instance slots `0..n` with a frozen,
//! published hash (FNV-1a 64 then SplitMix64; see `shard.rs`), because the
//! assignment is computed independently on every node and must never depend
//! on std's unspecified hasher. What a scale step moves: `n → n+1` moves
//! about `1/(n+1)` of the devices, each to the new slot `n` and nowhere
//! else; `n+1 → n` moves only the stopped slot's devices; [`moves`] lists
//! them. A replacement instance keeps its slot, so it keeps its devices.
//!
//! ```text
//! spec.rs        ScaleSpec, Metric, Step; validate() → ScaleErrors (scale.* paths)
//! autoscaler.rs  Autoscaler: observe() / decide() → ScaleDecision
//! shard.rs       ShardKey, shard_of, shard_among, assign, moves
//! ```

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
