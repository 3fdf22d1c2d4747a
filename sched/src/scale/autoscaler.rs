//! [`Autoscaler`]: one workload's scaling core, samples in, decisions out.
//!
//! Each decision, from the workload's current count `c`:
//! 1. Every kept sample's recommendation is `ceil(total / target)`, or `c`
//!    when `total / (target × c)` is within `1 ± tolerance`.
//! 2. Up: the highest recommendation of `scale-up-window` (and the newest
//!    sample); above `c` → that (`surge`).
//! 3. Down: the highest recommendation of `scale-down-window` (and the
//!    newest sample); below `c` → that (`scale-down`); a newest
//!    recommendation below `c` that the window still holds up is
//!    `stabilizing-down`.
//! 4. A forecast's recommendation above step 2-3's replaces it
//!    (`pre-scale-forecast`); one below is ignored.
//! 5. Clamped to `min..=max`, limited to `max-step-up`/`max-step-down`
//!    from `c`, and held at `c` within `cooldown` of the last change.
//!
//! A recommendation only grows with `total` (the tolerance band sits around
//! `c`), so the highest recommendation in a window is the recommendation of
//! the highest total there: the core keeps only the samples no later sample
//! is at least as high as — a monotonic queue whose front is the window's
//! maximum — and drops them once older than `scale-down-window`. Forecasts
//! given to [`Autoscaler::decide`] are kept the same way and count for
//! scale-down (step 3) as samples do: a pre-scale holds for
//! `scale-down-window` like a surge, so a forecast that flickers does not
//! flap the count, and a wrong one costs at most that long.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec::{Metric, ScaleErrors, ScaleSpec};
use crate::ids::{Timestamp, WorkloadId};

/// Most samples (and, separately, forecasts) kept per workload. Samples
/// closer together than `scale-down-window / (MAX_SAMPLES - 1)` share a
/// slot holding their highest total at the latest time, which bounds the
/// queue whatever the sampling rate; it can delay a scale-down, or make a
/// burst count as newest, by at most that slot's width (74 ms for a 5 min
/// window).
pub const MAX_SAMPLES: usize = 4096;

/// One reading of a workload's live counters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Observation {
    /// The metric summed over the workload's instances, in the metric's
    /// unit (records/s, millicores, pending records); finite, at least 0.
    pub total: f64,
    /// How many instances reported into `total`; only used to show the
    /// per-instance value.
    pub instances: u32,
}

/// A prediction: the summed metric expected `horizon` from now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Forecast {
    /// Expected total, in the metric's unit. A non-finite or negative value
    /// is ignored.
    pub value: f64,
    /// How far ahead, e.g. `"5m"`; reported, not used: the forecaster
    /// chose it to cover the time new instances need to start.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleReason {
    /// Load rose past the tolerance band: scaled up.
    Surge,
    /// A forecast needs more instances than the load now: scaled up (or
    /// down less) ahead of it.
    PreScaleForecast,
    /// Load has stayed low for `scale-down-window`: scaled down to the
    /// highest recommendation of that window.
    ScaleDown,
    /// The newest sample is within the tolerance band: no change.
    WithinTolerance,
    /// The newest sample recommends the current count exactly (outside the
    /// band, but rounding lands on it): no change.
    Steady,
    /// Load is lower, but not for all of `scale-down-window`: no change.
    StabilizingDown,
    /// Wanted fewer than `min`: `min`.
    ClampedMin,
    /// Wanted more than `max`: `max`.
    ClampedMax,
    /// Wanted a change within `cooldown` of the last one: no change.
    Cooldown,
    /// No sample yet: no change.
    NoData,
}

impl ScaleReason {
    /// Stable kebab-case name, for metrics and status.
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleReason::Surge => "surge",
            ScaleReason::PreScaleForecast => "pre-scale-forecast",
            ScaleReason::ScaleDown => "scale-down",
            ScaleReason::WithinTolerance => "within-tolerance",
            ScaleReason::Steady => "steady",
            ScaleReason::StabilizingDown => "stabilizing-down",
            ScaleReason::ClampedMin => "clamped-min",
            ScaleReason::ClampedMax => "clamped-max",
            ScaleReason::Cooldown => "cooldown",
            ScaleReason::NoData => "no-data",
        }
    }
}

/// What a decision was based on, for status and logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DecisionInputs {
    /// The metric.
    pub metric: Metric,
    /// The newest sample's total; `None` before the first sample.
    pub total: Option<f64>,
    /// `total` per reporting instance; `None` when none reported.
    pub per_instance: Option<f64>,
    /// Instances that reported into `total`.
    pub instances: u32,
    /// The spec's per-instance target.
    pub target: f64,
    /// The reactive recommendation (steps 1-3 of the module docs), before
    /// forecast, clamp, step limit and cooldown.
    pub recommended: u32,
    /// The forecast, when one was given and usable.
    pub forecast: Option<Forecast>,
    /// The forecast's recommendation.
    pub forecast_recommended: Option<u32>,
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ScaleDecision {
    /// The count decided from: the last decision's, or the starting count.
    pub current: u32,
    /// The count to run.
    pub desired: u32,
    /// Why.
    pub reason: ScaleReason,
    /// On what.
    pub inputs: DecisionInputs,
}

impl ScaleDecision {
    /// Whether `desired` differs from `current`.
    pub fn changed(&self) -> bool {
        self.desired != self.current
    }
}

/// Why the autoscaler refused a spec or a sample.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScaleError {
    /// The spec is invalid (it should have been refused on submit).
    #[error("workload {workload}: {errors}")]
    InvalidSpec {
        /// The workload.
        workload: WorkloadId,
        /// What is wrong.
        errors: ScaleErrors,
    },
    /// A sample's total is NaN, infinite or negative; it is dropped.
    #[error("workload {workload}: sample at {at} has total {total}, not a finite number ≥ 0")]
    BadSample {
        /// The workload.
        workload: WorkloadId,
        /// The sample's time.
        at: Timestamp,
        /// Its total.
        total: f64,
    },
    /// A sample is older than the newest one kept; it is dropped.
    #[error("workload {workload}: sample at {at} is older than the newest one, at {newest}")]
    OutOfOrder {
        /// The workload.
        workload: WorkloadId,
        /// The sample's time.
        at: Timestamp,
        /// The newest sample's time.
        newest: Timestamp,
    },
}

/// One workload's autoscaling state (see the module docs). Soft state: a
/// new leader starts one from the workload's count, and the first
/// `scale-down-window` of its life cannot scale down below what its
/// samples have seen, which errs on the side of instances.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    workload: WorkloadId,
    spec: ScaleSpec,
    current: u32,
    last_change: Option<Timestamp>,
    latest: Option<(Timestamp, Observation)>,
    samples: Peaks,
    forecasts: Peaks,
}

/// A sliding-window maximum: `(time, value)` with times increasing and
/// values strictly decreasing, i.e. every value no later one is at least
/// as high as; the first one inside a window is the window's maximum.
#[derive(Debug, Clone, Default)]
struct Peaks(VecDeque<(Timestamp, f64)>);

impl Peaks {
    /// Adds `value` at `t` (no earlier than the last one); within the same
    /// `slot_ms` slot as the last kept value, merges into it.
    fn push(&mut self, t: Timestamp, value: f64, slot_ms: i64) {
        // Decisions may come out of order (samples may not): never let a
        // value go back in time, which would break the order `max_since`
        // relies on.
        let t = self.0.back().map_or(t, |last| t.max(last.0));
        while self.0.back().is_some_and(|p| p.1 <= value) {
            self.0.pop_back();
        }
        let slot = |t: Timestamp| t.as_millis().div_euclid(slot_ms);
        match self.0.back_mut() {
            // Higher than `value` (else popped): hold it to the later time.
            Some(last) if slot(last.0) == slot(t) => last.0 = t,
            _ => self.0.push_back((t, value)),
        }
    }

    /// Drops values from before `cutoff`.
    fn prune(&mut self, cutoff: Timestamp) {
        while self.0.front().is_some_and(|p| p.0 < cutoff) {
            self.0.pop_front();
        }
    }

    /// The highest value at or after `cutoff`.
    fn max_since(&self, cutoff: Timestamp) -> Option<f64> {
        self.0.iter().find(|p| p.0 >= cutoff).map(|p| p.1)
    }
}

fn minus(t: Timestamp, d: Duration) -> Timestamp {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Timestamp(t.as_millis().saturating_sub(ms))
}

impl Autoscaler {
    /// Scaling for `workload` per `spec`, starting from its `current`
    /// count. Refuses an invalid spec, so every decision can rely on
    /// `1 ≤ min ≤ max` and a finite `target > 0`.
    pub fn new(workload: WorkloadId, spec: ScaleSpec, current: u32) -> Result<Self, ScaleError> {
        if let Err(errors) = spec.validate() {
            return Err(ScaleError::InvalidSpec { workload, errors });
        }
        Ok(Autoscaler {
            workload,
            spec,
            current,
            last_change: None,
            latest: None,
            samples: Peaks::default(),
            forecasts: Peaks::default(),
        })
    }

    /// The workload.
    pub fn workload(&self) -> &WorkloadId {
        &self.workload
    }

    /// The spec.
    pub fn spec(&self) -> &ScaleSpec {
        &self.spec
    }

    /// The count the next decision starts from.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// When the count last changed by a decision.
    pub fn last_change(&self) -> Option<Timestamp> {
        self.last_change
    }

    /// How many samples are kept (at most [`MAX_SAMPLES`]).
    pub fn samples_held(&self) -> usize {
        self.samples.0.len()
    }

    /// Width of one sample slot: `scale-down-window / (MAX_SAMPLES - 1)`,
    /// rounded up, at least 1 ms. Slots in a window are then at most
    /// `MAX_SAMPLES`.
    fn slot_ms(&self) -> i64 {
        let w = i64::try_from(self.spec.scale_down_window.as_millis()).unwrap_or(i64::MAX);
        // `MAX_SAMPLES - 1` is a small positive constant.
        let slots = (MAX_SAMPLES - 1) as i64;
        (w / slots + i64::from(w % slots != 0)).max(1)
    }

    /// The region runs `count` instances for a reason other than this
    /// autoscaler (an operator edit, a decision that was not applied): the
    /// next decision starts from it. Not a change for `cooldown`.
    pub fn set_current(&mut self, count: u32) {
        self.current = count;
    }

    /// Records the workload's counters at `now`. Refuses (and drops) a
    /// total that is not a finite number ≥ 0 and a sample older than the
    /// newest one.
    pub fn observe(&mut self, now: Timestamp, sample: Observation) -> Result<(), ScaleError> {
        if !sample.total.is_finite() || sample.total < 0.0 {
            return Err(ScaleError::BadSample {
                workload: self.workload.clone(),
                at: now,
                total: sample.total,
            });
        }
        if let Some((newest, _)) = self.latest {
            if now < newest {
                return Err(ScaleError::OutOfOrder {
                    workload: self.workload.clone(),
                    at: now,
                    newest,
                });
            }
        }
        self.latest = Some((now, sample));
        let slot_ms = self.slot_ms();
        self.samples.push(now, sample.total, slot_ms);
        self.prune(now);
        Ok(())
    }

    /// Drops samples and forecasts older than `scale-down-window`
    /// (validation keeps `scale-up-window` within it).
    fn prune(&mut self, now: Timestamp) {
        let cutoff = minus(now, self.spec.scale_down_window);
        self.samples.prune(cutoff);
        self.forecasts.prune(cutoff);
    }

    /// Instances `total` needs: `current` inside the tolerance band,
    /// `ceil(total / target)` outside.
    fn recommend(&self, total: f64) -> u32 {
        if self.in_band(total) {
            return self.current;
        }
        // `as` saturates (and takes NaN to 0); `total` is finite and ≥ 0
        // for every accepted sample and forecast.
        (total / self.spec.target).ceil() as u32
    }

    /// Whether `total` is within `1 ± tolerance` of what `current`
    /// instances are meant to carry.
    fn in_band(&self, total: f64) -> bool {
        let ratio = total / (self.spec.target * f64::from(self.current));
        self.current > 0 && (ratio - 1.0).abs() <= self.spec.tolerance
    }

    /// Decides the count at `now` from the samples so far and an optional
    /// `forecast`, and makes it the count the next decision starts from.
    pub fn decide(&mut self, now: Timestamp, forecast: Option<Forecast>) -> ScaleDecision {
        self.prune(now);
        let base = self.current;
        let (min, max) = (self.spec.min, self.spec.max);
        let mut inputs = DecisionInputs {
            metric: self.spec.metric.clone(),
            total: None,
            per_instance: None,
            instances: 0,
            target: self.spec.target,
            recommended: base,
            forecast: None,
            forecast_recommended: None,
        };
        let (reactive, mut reason) = match self.latest {
            None => (base, ScaleReason::NoData),
            Some((_, newest)) => {
                inputs.total = Some(newest.total);
                inputs.instances = newest.instances;
                inputs.per_instance =
                    (newest.instances > 0).then(|| newest.total / f64::from(newest.instances));
                let now_rec = self.recommend(newest.total);
                // Both windows include the newest sample, however old.
                let since = |w| minus(now, w);
                let up = self.samples.max_since(since(self.spec.scale_up_window));
                let up = self.recommend(up.map_or(newest.total, |m| m.max(newest.total)));
                let down_since = since(self.spec.scale_down_window);
                let down = [
                    self.samples.max_since(down_since),
                    self.forecasts.max_since(down_since),
                ]
                .into_iter()
                .flatten()
                .fold(newest.total, f64::max);
                let down = self.recommend(down);
                if up > base {
                    (up, ScaleReason::Surge)
                } else if down < base {
                    (down, ScaleReason::ScaleDown)
                } else if now_rec < base {
                    (base, ScaleReason::StabilizingDown)
                } else if self.in_band(newest.total) {
                    (base, ScaleReason::WithinTolerance)
                } else {
                    // Outside the band, but rounding lands on `base`.
                    (base, ScaleReason::Steady)
                }
            }
        };
        inputs.recommended = reactive;
        let mut wanted = reactive;
        if let Some(f) = forecast.filter(|f| f.value.is_finite() && f.value >= 0.0) {
            let rec = self.recommend(f.value);
            let slot_ms = self.slot_ms();
            self.forecasts.push(now, f.value, slot_ms);
            inputs.forecast = Some(f);
            inputs.forecast_recommended = Some(rec);
            // Only ever up: a forecast that is wrong low must not remove
            // instances the load now needs.
            if rec > reactive {
                wanted = rec;
                reason = ScaleReason::PreScaleForecast;
            }
        }
        let bounded = wanted.clamp(min, max);
        if bounded > wanted {
            reason = ScaleReason::ClampedMin;
        } else if bounded < wanted {
            reason = ScaleReason::ClampedMax;
        }
        let stepped = match (&self.spec.max_step_up, &self.spec.max_step_down) {
            (Some(up), _) if bounded > base => bounded.min(base.saturating_add(up.allows(base))),
            (_, Some(down)) if bounded < base => {
                bounded.max(base.saturating_sub(down.allows(base)))
            }
            _ => bounded,
        };
        let cooling = self
            .last_change
            .is_some_and(|t| now.since(t) < self.spec.cooldown);
        let held = if stepped != base && cooling {
            reason = ScaleReason::Cooldown;
            base
        } else {
            stepped
        };
        // The bounds win over cooldown: a count outside them (a starting
        // count, a spec edit) is corrected at once.
        let desired = held.clamp(min, max);
        if desired > held {
            reason = ScaleReason::ClampedMin;
        } else if desired < held {
            reason = ScaleReason::ClampedMax;
        }
        if desired != base {
            self.current = desired;
            self.last_change = Some(now);
        }
        ScaleDecision {
            current: base,
            desired,
            reason,
            inputs,
        }
    }
}

#[cfg(test)]
#[path = "autoscaler_tests.rs"]
mod tests;
