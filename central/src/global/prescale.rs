//! Forecasts for pre-scaling (pure): one workload's replicated
//! [`LoadHistory`] in, the autoscaler's [`Forecast`] out.
//!
//! A [`Predictor`] fits the forecast crate's Holt-Winters (damped trend,
//! the configured seasons, fitted for the horizon) on the whole history at
//! most every `refit` steps, and in between only advances the fitted
//! states over new points (O(1) each), so the leader stays cheap. The
//! forecast handed to the autoscaler is the peak of the *point* forecast
//! over the horizon: the forecast crate's simulation (`prescale.rs`) found
//! the 95 % upper band adds a margin whatever happens (1.56× reactive's
//! instance-hours) while the point forecast pre-scales only for a rise it
//! expects; the autoscaler's tolerance band and windows add the headroom.
//!
//! No forecast until the history covers the longest season and two of the
//! shortest: Holt-Winters drops a season it has not seen twice, and with
//! none left it only extrapolates a trend, which does not anticipate a
//! recurring rise. Below that the workload scales reactively only.

use std::time::Duration;

use strata_forecast::{horizon_steps, Forecaster, HoltWinters, HoltWintersConfig};
use strata_sched::scale::Forecast;

use crate::state::LoadHistory;

/// What a [`Predictor`] is configured with (from `[global.forecast]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictorSettings {
    /// Ms per history point.
    pub step_ms: u64,
    /// How far ahead the peak looks.
    pub horizon: Duration,
    /// Seasonal periods, ascending (validated by the config).
    pub seasons: Vec<Duration>,
    /// Steps between refits, at least 1.
    pub refit_steps: u64,
}

impl PredictorSettings {
    fn steps(&self, d: Duration) -> usize {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        horizon_steps(ms, self.step_ms)
    }

    /// Seasonal periods in steps.
    pub fn periods(&self) -> Vec<usize> {
        self.seasons.iter().map(|s| self.steps(*s)).collect()
    }

    /// Points needed before the first forecast: the longest season, and
    /// two of the shortest (see the module docs).
    pub fn min_points(&self) -> usize {
        let p = self.periods();
        let longest = p.iter().copied().max().unwrap_or(0);
        let shortest = p.iter().copied().min().unwrap_or(0);
        longest
            .max(2 * shortest)
            .max(strata_forecast::holt_winters::MIN_HISTORY)
    }
}

/// Why no forecast was made this step.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoForecast {
    /// Not enough history yet.
    #[error("history has {have} points, forecasts start at {need}")]
    ShortHistory {
        /// Points held.
        have: usize,
        /// Points needed.
        need: usize,
    },
    /// The history was recorded at another step (another replica's config);
    /// it starts afresh with the next point this leader records.
    #[error("history step {history_ms} ms differs from the configured {configured_ms} ms")]
    StepMismatch {
        /// The history's step.
        history_ms: u64,
        /// This leader's.
        configured_ms: u64,
    },
    /// The model refused the history or its configuration.
    #[error("forecaster: {0}")]
    Model(#[from] strata_forecast::ForecastError),
    /// The fit panicked (a bug); a fresh forecaster starts next step.
    #[error("forecaster panicked; starting a fresh one")]
    Panicked,
}

impl NoForecast {
    /// Stable kebab-case name, for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            NoForecast::ShortHistory { .. } => "short-history",
            NoForecast::StepMismatch { .. } => "step-mismatch",
            NoForecast::Model(_) => "model-error",
            NoForecast::Panicked => "panicked",
        }
    }
}

/// One workload's forecaster (soft state on the leader; the history it
/// reads is replicated).
#[derive(Debug, Clone)]
pub struct Predictor {
    settings: PredictorSettings,
    model: Option<HoltWinters>,
    /// Step number of the first point the model has not seen.
    seen_to: i64,
    /// Step number the model was last fitted at.
    fitted_at: i64,
}

impl Predictor {
    /// A predictor that has not fitted anything yet.
    pub fn new(settings: PredictorSettings) -> Predictor {
        Predictor {
            settings,
            model: None,
            seen_to: 0,
            fitted_at: 0,
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &PredictorSettings {
        &self.settings
    }

    /// Whether the model was fitted (for tests and status).
    pub fn fitted(&self) -> bool {
        self.model.is_some()
    }

    /// Forecasts from `history`: refits when due (or when the history no
    /// longer continues what the model saw), else advances the model over
    /// the new points; then the peak of the point forecast over the
    /// horizon, clamped at 0.
    pub fn forecast(&mut self, history: &LoadHistory) -> Result<Forecast, NoForecast> {
        let s = &self.settings;
        if history.step_ms != s.step_ms {
            return Err(NoForecast::StepMismatch {
                history_ms: history.step_ms,
                configured_ms: s.step_ms,
            });
        }
        let need = s.min_points();
        if history.len() < need {
            self.model = None;
            return Err(NoForecast::ShortHistory {
                have: history.len(),
                need,
            });
        }
        let next = history.next_step();
        // The model's states continue from `seen_to`: it must still be in
        // the ring, and not ahead of it (a restarted history).
        let continues =
            self.model.is_some() && self.seen_to >= history.first_step && self.seen_to <= next;
        let refit_due = next.saturating_sub(self.fitted_at)
            >= i64::try_from(s.refit_steps.max(1)).unwrap_or(i64::MAX);
        let h = s.steps(s.horizon).max(1);
        match &mut self.model {
            Some(model) if continues && !refit_due => {
                let from = usize::try_from(self.seen_to - history.first_step).unwrap_or(0);
                let new = history.to_vec();
                model.update(&new[from..])?;
            }
            _ => {
                let periods = s.periods();
                let shortest = periods.first().copied().unwrap_or(h);
                let cfg = HoltWintersConfig {
                    periods,
                    // Parameters chosen for the horizon forecast, as the
                    // forecast crate measured best (capped at a season).
                    fit_horizon: h.min(shortest).max(1),
                    ..HoltWintersConfig::default()
                };
                let mut model = HoltWinters::new(cfg)?;
                model.fit(&history.to_vec(), s.step_ms)?;
                self.model = Some(model);
                self.fitted_at = next;
            }
        }
        self.seen_to = next;
        let Some(model) = &self.model else {
            // Set by both arms above.
            return Err(NoForecast::ShortHistory { have: 0, need });
        };
        let f = model.forecast(h)?.clamp_min(0.0);
        let peak = f.point.iter().copied().fold(0.0, f64::max);
        Ok(Forecast {
            value: peak,
            horizon: s.horizon,
        })
    }
}

#[cfg(test)]
mod tests {
    use strata_sched::scale::{Autoscaler, Metric, Observation, ScaleReason, ScaleSpec};
    use strata_sched::{Timestamp, WorkloadId};

    use super::*;

    const STEP_MS: u64 = 1000;
    /// A compressed "day" of 40 steps.
    const DAY: i64 = 40;

    fn settings() -> PredictorSettings {
        PredictorSettings {
            step_ms: STEP_MS,
            horizon: Duration::from_secs(5),
            seasons: vec![Duration::from_secs(DAY as u64)],
            refit_steps: 10,
        }
    }

    /// 20 records/s, rising to 100 for steps 20..30 of every day.
    fn load(step: i64) -> f64 {
        if (20..30).contains(&step.rem_euclid(DAY)) {
            100.0
        } else {
            20.0
        }
    }

    fn history(steps: std::ops::Range<i64>) -> LoadHistory {
        let mut h = None;
        for s in steps {
            LoadHistory::record(&mut h, "records-per-second", STEP_MS, s, load(s));
        }
        h.expect("at least one point")
    }

    #[test]
    fn no_forecast_before_two_seasons_or_at_another_step() {
        let mut p = Predictor::new(settings());
        assert_eq!(settings().min_points(), 80);
        let e = p.forecast(&history(0..79)).unwrap_err();
        assert_eq!(e, NoForecast::ShortHistory { have: 79, need: 80 });
        let mut other = history(0..100);
        other.step_ms = 500;
        assert_eq!(p.forecast(&other).unwrap_err().as_str(), "step-mismatch");
        assert!(!p.fitted());
    }

    #[test]
    fn refits_only_every_refit_steps_and_updates_in_between() {
        let mut p = Predictor::new(settings());
        p.forecast(&history(0..80)).unwrap();
        assert_eq!(p.fitted_at, 80);
        p.forecast(&history(0..85)).unwrap();
        assert_eq!((p.fitted_at, p.seen_to), (80, 85), "updated, not refitted");
        p.forecast(&history(0..90)).unwrap();
        assert_eq!(p.fitted_at, 90, "refitted after 10 steps");
        // A history that restarted (another metric, a long gap): refit.
        p.forecast(&history(500..590)).unwrap();
        assert_eq!((p.fitted_at, p.seen_to), (590, 590));
    }

    /// The whole loop without IO: each step the autoscaler observes the
    /// load and decides with the predictor's forecast from the history so
    /// far. After two seasons it must pre-scale before the third day's
    /// rise begins, and reactive scaling alone must not.
    #[test]
    fn a_seasonal_history_pre_scales_before_the_recurring_rise() {
        let spec = ScaleSpec {
            scale_down_window: Duration::from_secs(3),
            ..ScaleSpec::new(1, 10, Metric::RecordsPerSecond, 20.0)
        };
        let id = WorkloadId::new("acme", "w");
        let mut auto = Autoscaler::new(id.clone(), spec.clone(), 1).unwrap();
        let mut reactive = Autoscaler::new(id, spec, 1).unwrap();
        let mut p = Predictor::new(settings());
        let mut h = None;
        let rise = 2 * DAY + 20;
        let mut first_pre_scale = None;
        for step in 0..rise {
            let now = Timestamp::from_millis(step * STEP_MS as i64);
            let sample = Observation {
                total: load(step),
                instances: auto.current(),
            };
            auto.observe(now, sample).unwrap();
            reactive.observe(now, sample).unwrap();
            let f = h.as_ref().and_then(|h| p.forecast(h).ok());
            let d = auto.decide(now, f);
            let r = reactive.decide(now, None);
            if step >= 2 * DAY {
                assert_eq!(r.desired, 1, "reactive moved at step {step}: {r:?}");
            }
            if d.reason == ScaleReason::PreScaleForecast && step >= 2 * DAY {
                first_pre_scale.get_or_insert((step, d.desired));
            }
            LoadHistory::record(&mut h, "records-per-second", STEP_MS, step, load(step));
        }
        let (at, desired) = first_pre_scale.expect("a pre-scale before the rise");
        // Within the horizon (5 steps) before the rise, not on a whim.
        assert!(
            (rise - 5..rise).contains(&at) && desired > 1,
            "pre-scaled at {at} to {desired}, the rise is at {rise}"
        );
    }
}
