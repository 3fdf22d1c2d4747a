//! Additive Holt-Winters (triple exponential smoothing) with zero, one or
//! two seasonal periods.
//!
//! # Model
//! Error-correction form (Hyndman et al., ETS(A,Ad,A)), one state per
//! component, seasonal states indexed by `t mod m` counted from the first
//! sample of the history:
//!
//! ```text
//! ŷ[t] = l + φ·b + Σk s_k[t mod m_k]          one-step forecast
//! e    = y[t] − ŷ[t]
//! l    = l + φ·b + α·e
//! b    = φ·b + β·e                            β = α·b*, so β ≤ α
//! s_k  = s_k + γ_k·e     (at t mod m_k)       γ_k = (1 − α)·g*_k
//! ```
//!
//! # Two seasons (daily + weekly)
//! We use Taylor's double-seasonal additive Holt-Winters (2003): a second
//! seasonal component with the weekly period, updated by the same error.
//! We chose it over an MSTL-style "remove a weekly profile, then HW on the
//! rest" because it stays one state machine with one fitted objective (the
//! one-step SSE covers both seasons' smoothing), updates online in O(1)
//! per sample, and degrades to plain HW by dropping a component. Its
//! weakness is the weekly state's size (a value per step of the week, each
//! seen once a week, so it learns slowly), so its initial values matter:
//! they are the residual after the daily profile, averaged over up to four
//! weeks and smoothed over 2 hours so they do not start out as noise.
//!
//! # Fitting
//! Parameters in the unit box (α, b*, g*_k, and φ ∈ [0.8, 0.98] when
//! damped) minimise the one-step SSE over the whole history (plus the
//! `fit_horizon`-step SSE when that is > 1, which picked parameters that
//! forecast 30 minutes ahead slightly better, see the crate docs): a fixed grid,
//! then Nelder-Mead from the best three points (`optimize.rs`).
//! States start from a classical decomposition of the first two to four
//! longest seasons: level and trend from the season means, seasonal indices
//! from the detrended averages.
//!
//! # Short histories
//! A seasonal profile estimated from fewer than two seasons cannot be told
//! apart from noise and trend, so a period the history does not cover twice
//! is dropped (longest first) and reported as a [`Fallback`]; with no period
//! left this is Holt's level/trend model. Three samples are the minimum.
//!
//! # Bands
//! `σ` is the RMS of the one-step errors; the h-step variance is
//! `σ²·(1 + Σ_{j<h} c_j²)`, `c_j = α + β·Φ_j + Σk γ_k·[j mod m_k = 0]`,
//! `Φ_j = φ + … + φ^j` (Hyndman et al. 2008, class 1), assuming
//! uncorrelated normal errors.

use crate::optimize::minimize;
use crate::{check_history, Forecast, ForecastError, Forecaster};

/// Fewest samples any fit accepts.
pub const MIN_HISTORY: usize = 3;
/// One day and one week in ms, for [`HoltWintersConfig::daily_weekly`].
const DAY_MS: u64 = 86_400_000;
const WEEK_MS: u64 = 7 * DAY_MS;

/// How the level's slope evolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trend {
    /// No slope: level and seasons only.
    None,
    /// A slope carried on unchanged (linear extrapolation).
    Additive,
    /// A slope that fades by φ per step: extrapolates ramps briefly
    /// without running away, the safer default for 30-minute horizons.
    #[default]
    Damped,
}

/// What to fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoltWintersConfig {
    /// Seasonal periods in steps, strictly ascending, each ≥ 2, at most
    /// two (e.g. `[288, 2016]`: daily and weekly at 5-minute steps).
    /// Empty = Holt's level/trend model. Default: none.
    pub periods: Vec<usize>,
    /// Trend component. Default damped.
    pub trend: Trend,
    /// Steps ahead whose squared forecast error the fit minimises along
    /// with the one-step error: set it to the horizon you forecast for
    /// (6 for 30 min at 5-min steps), so the parameters are chosen for
    /// that horizon rather than for tracking the last sample. 1 = classic
    /// one-step SSE. At least 1; capped at the shortest period. Default 1.
    pub fit_horizon: usize,
}

impl Default for HoltWintersConfig {
    fn default() -> Self {
        HoltWintersConfig {
            periods: Vec::new(),
            trend: Trend::Damped,
            fit_horizon: 1,
        }
    }
}

impl HoltWintersConfig {
    /// Daily and weekly seasons at `step_ms` (which must divide a day).
    pub fn daily_weekly(step_ms: u64) -> Result<HoltWintersConfig, ForecastError> {
        if step_ms == 0 || DAY_MS % step_ms != 0 {
            return Err(ForecastError::Config(vec![format!(
                "step {step_ms} ms must divide a day ({DAY_MS} ms)"
            )]));
        }
        let steps = |ms: u64| usize::try_from(ms / step_ms).unwrap_or(usize::MAX);
        Ok(HoltWintersConfig {
            periods: vec![steps(DAY_MS), steps(WEEK_MS)],
            ..HoltWintersConfig::default()
        })
    }

    /// Reports every problem at once.
    pub fn validate(&self) -> Result<(), ForecastError> {
        let mut p = Vec::new();
        if self.periods.len() > 2 {
            p.push(format!(
                "periods {:?}: at most two seasonal periods",
                self.periods
            ));
        }
        if let Some(m) = self.periods.iter().find(|m| **m < 2) {
            p.push(format!("period {m} must be at least 2 steps"));
        }
        if self.periods.windows(2).any(|w| w[0] >= w[1]) {
            p.push(format!(
                "periods {:?} must be strictly ascending",
                self.periods
            ));
        }
        if self.fit_horizon == 0 {
            p.push("fit-horizon must be at least 1 step".into());
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ForecastError::Config(p))
        }
    }
}

/// A configured season the fit left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// The history covers fewer than two of this period, too few to tell a
    /// seasonal profile from noise and trend.
    SeasonDropped {
        /// The dropped period, in steps.
        period: usize,
        /// Samples in the history (fewer than `2 · period`).
        have: usize,
    },
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fallback::SeasonDropped { period, have } => write!(
                f,
                "season of {period} steps dropped: {have} samples cover fewer than two seasons ({} needed)",
                2 * period
            ),
        }
    }
}

/// Smoothing coefficients in error-correction form, as fitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Level smoothing α.
    pub alpha: f64,
    /// Trend smoothing β (= α·b*, 0 without trend).
    pub beta: f64,
    /// Seasonal smoothing γ_k per period in use.
    pub gammas: Vec<f64>,
    /// Damping φ (1 when undamped).
    pub phi: f64,
}

#[derive(Debug, Clone, PartialEq)]
struct State {
    level: f64,
    trend: f64,
    /// Per period in use, indexed by `t mod m`.
    seasons: Vec<Vec<f64>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Fitted {
    step_ms: u64,
    periods: Vec<usize>,
    params: Params,
    state: State,
    /// Samples consumed so far: the index of the next one.
    t: usize,
    sigma: f64,
    fallbacks: Vec<Fallback>,
}

/// Additive Holt-Winters; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct HoltWinters {
    cfg: HoltWintersConfig,
    fitted: Option<Fitted>,
}

impl HoltWinters {
    /// An unfitted model; fails on an invalid config.
    pub fn new(cfg: HoltWintersConfig) -> Result<HoltWinters, ForecastError> {
        cfg.validate()?;
        Ok(HoltWinters { cfg, fitted: None })
    }

    /// The periods the last fit used (configured ones minus fallbacks).
    pub fn periods_in_use(&self) -> &[usize] {
        self.fitted.as_ref().map_or(&[], |f| &f.periods)
    }

    /// Seasons the last fit had to leave out, with the reason.
    pub fn fallbacks(&self) -> &[Fallback] {
        self.fitted.as_ref().map_or(&[], |f| &f.fallbacks)
    }

    /// The fitted coefficients.
    pub fn params(&self) -> Option<&Params> {
        self.fitted.as_ref().map(|f| &f.params)
    }

    /// RMS one-step error of the fit (the band's σ).
    pub fn sigma(&self) -> Option<f64> {
        self.fitted.as_ref().map(|f| f.sigma)
    }

    /// Advances the fitted states over samples that follow the fitted
    /// history, keeping the parameters: O(1) per sample, so a caller can
    /// refit hourly and update every sample in between.
    pub fn update(&mut self, samples: &[f64]) -> Result<(), ForecastError> {
        let f = self.fitted.as_mut().ok_or(ForecastError::NotFitted)?;
        check_history(samples, f.step_ms)?;
        filter(samples, f.t, &f.periods, &f.params, &mut f.state, 1);
        f.t += samples.len();
        Ok(())
    }
}

/// Runs the model over `y` (whose first sample has index `t0`), updating
/// `st`; returns the sum of squared one-step errors.
///
/// With `horizon` > 1 it also sums the squared errors of the
/// `horizon`-step forecasts made before each sample (second value; needs
/// `horizon ≤` the shortest period, so those seasonal states are current).
fn filter(
    y: &[f64],
    t0: usize,
    periods: &[usize],
    p: &Params,
    st: &mut State,
    horizon: usize,
) -> (f64, f64) {
    let (mut sse, mut sse_h) = (0.0, 0.0);
    let phi_h: f64 = (1..=horizon as i32).map(|i| p.phi.powi(i)).sum();
    for (i, &v) in y.iter().enumerate() {
        let t = t0 + i;
        let seasonal_at =
            |t: usize| -> f64 { periods.iter().zip(&st.seasons).map(|(m, s)| s[t % m]).sum() };
        if horizon > 1 {
            if let Some(target) = y.get(i + horizon - 1) {
                let e = target - (st.level + phi_h * st.trend + seasonal_at(t + horizon - 1));
                sse_h += e * e;
            }
        }
        let seasonal = seasonal_at(t);
        let base = st.level + p.phi * st.trend;
        let e = v - (base + seasonal);
        sse += e * e;
        st.level = base + p.alpha * e;
        st.trend = p.phi * st.trend + p.beta * e;
        for ((m, s), g) in periods.iter().zip(&mut st.seasons).zip(&p.gammas) {
            s[t % m] += g * e;
        }
    }
    (sse, sse_h)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn center(v: &mut [f64]) {
    let m = mean(v);
    v.iter_mut().for_each(|x| *x -= m);
}

/// Seasons of the longest period used to initialise the states.
const INIT_SEASONS: usize = 4;

/// Circular centred moving average over `w` (odd) values.
fn smooth_circular(v: &[f64], w: usize) -> Vec<f64> {
    let n = v.len();
    let half = w / 2;
    let mut out = vec![0.0; n];
    // Running sum over the window, O(n).
    let mut sum: f64 = (0..w).map(|k| v[(k + n - half) % n]).sum();
    for (i, o) in out.iter_mut().enumerate() {
        *o = sum / w as f64;
        sum += v[(i + half + 1) % n] - v[(i + n - half) % n];
    }
    out
}

/// Initial states from the first (up to [`INIT_SEASONS`]) longest seasons:
/// level and slope from the season means, each seasonal index from the
/// detrended averages at its phase. The weekly component gets the residual
/// after the daily one, smoothed over a twelfth of a day (2 h for a daily
/// period): the weekly state has one value per step, each seen once a week,
/// so unsmoothed it would start with the noise of a few samples (see the
/// module docs). Requires `y.len() ≥ 2 · max(periods)` and `y.len() ≥ 1`.
fn init(y: &[f64], periods: &[usize], trend: Trend) -> State {
    let Some(&big) = periods.last() else {
        return State {
            level: y.first().copied().unwrap_or(0.0),
            trend: 0.0,
            seasons: Vec::new(),
        };
    };
    let k = (y.len() / big).clamp(2, INIT_SEASONS);
    let (a1, ak) = (mean(&y[..big]), mean(&y[(k - 1) * big..k * big]));
    let slope = if trend == Trend::None {
        0.0
    } else {
        (ak - a1) / ((k - 1) * big) as f64
    };
    // Level at t = −1 on the line through (centre of season 1, a1).
    let level = a1 - slope * (big as f64 + 1.0) / 2.0;
    let x: Vec<f64> = y[..k * big]
        .iter()
        .enumerate()
        .map(|(t, v)| v - (level + slope * (t as f64 + 1.0)))
        .collect();
    let phase_mean = |vals: &mut dyn Iterator<Item = (usize, f64)>, m: usize| {
        let (mut sum, mut cnt) = (vec![0.0; m], vec![0usize; m]);
        for (t, v) in vals {
            sum[t % m] += v;
            cnt[t % m] += 1;
        }
        let mut s: Vec<f64> = sum
            .iter()
            .zip(&cnt)
            .map(|(s, c)| s / (*c).max(1) as f64)
            .collect();
        center(&mut s);
        s
    };
    let m1 = periods[0];
    let s1 = phase_mean(&mut x.iter().copied().enumerate(), m1);
    let mut seasons = vec![s1];
    if let Some(&m2) = periods.get(1) {
        let rest = phase_mean(
            &mut x
                .iter()
                .enumerate()
                .map(|(t, v)| (t, v - seasons[0][t % m1])),
            m2,
        );
        let w = (m1 / 12).max(1) | 1; // odd, so the window is centred
        let mut s2 = smooth_circular(&rest, w.min(m2 - (1 - m2 % 2)));
        center(&mut s2);
        seasons.push(s2);
    }
    State {
        level,
        trend: slope,
        seasons,
    }
}

/// Decodes the search vector `[α, b*?, g*_k.., φ?]`.
fn decode(x: &[f64], trend: Trend, seasons: usize) -> Params {
    let alpha = x[0];
    let mut i = 1;
    let beta = if trend == Trend::None {
        0.0
    } else {
        i += 1;
        alpha * x[1]
    };
    let gammas = x[i..i + seasons]
        .iter()
        .map(|g| (1.0 - alpha) * g)
        .collect();
    let phi = if trend == Trend::Damped {
        x[i + seasons]
    } else {
        1.0
    };
    Params {
        alpha,
        beta,
        gammas,
        phi,
    }
}

impl Forecaster for HoltWinters {
    fn fit(&mut self, history: &[f64], step_ms: u64) -> Result<(), ForecastError> {
        check_history(history, step_ms)?;
        let n = history.len();
        if n < MIN_HISTORY {
            return Err(ForecastError::TooShort {
                len: n,
                need: MIN_HISTORY,
            });
        }
        let mut periods = self.cfg.periods.clone();
        let mut fallbacks = Vec::new();
        while let Some(&m) = periods.last() {
            if n >= 2 * m {
                break;
            }
            fallbacks.push(Fallback::SeasonDropped { period: m, have: n });
            periods.pop();
        }
        let trend = self.cfg.trend;
        let start = init(history, &periods, trend);
        // Search space, in decode order.
        let (mut lo, mut hi, mut grid) = (vec![1e-3], vec![0.999], vec![vec![0.1, 0.3, 0.6, 0.9]]);
        if trend != Trend::None {
            lo.push(1e-3);
            hi.push(0.999);
            grid.push(vec![0.02, 0.2]);
        }
        for _ in &periods {
            lo.push(1e-3);
            hi.push(0.999);
            grid.push(vec![0.02, 0.2, 0.5]);
        }
        if trend == Trend::Damped {
            lo.push(0.8);
            hi.push(0.98);
            grid.push(vec![0.9, 0.98]);
        }
        let k = periods.len();
        // Never past the shortest season in use (see `filter`).
        let horizon = self
            .cfg
            .fit_horizon
            .min(periods.first().copied().unwrap_or(usize::MAX));
        let mut sse = |x: &[f64]| {
            let mut st = start.clone();
            let (one, ahead) = filter(history, 0, &periods, &decode(x, trend, k), &mut st, horizon);
            one + ahead
        };
        let best = minimize(&mut sse, &lo, &hi, &grid, 3, 100 * lo.len());
        let params = decode(&best.x, trend, k);
        let mut state = start;
        let (sse, _) = filter(history, 0, &periods, &params, &mut state, 1);
        self.fitted = Some(Fitted {
            step_ms,
            periods,
            params,
            state,
            t: n,
            sigma: (sse / n as f64).sqrt(),
            fallbacks,
        });
        Ok(())
    }

    fn forecast(&self, horizon_steps: usize) -> Result<Forecast, ForecastError> {
        let f = self.fitted.as_ref().ok_or(ForecastError::NotFitted)?;
        let (p, st) = (&f.params, &f.state);
        let mut point = Vec::with_capacity(horizon_steps);
        let mut sd = Vec::with_capacity(horizon_steps);
        // Φ_h = φ + … + φ^h, and Σ_{j<h} c_j² for the band.
        let (mut phi_h, mut phi_pow, mut var_sum) = (0.0f64, 1.0f64, 0.0f64);
        for h in 1..=horizon_steps {
            phi_pow *= p.phi;
            phi_h += phi_pow;
            let t = f.t + h - 1;
            let seasonal: f64 = f
                .periods
                .iter()
                .zip(&st.seasons)
                .map(|(m, s)| s[t % m])
                .sum();
            point.push(st.level + phi_h * st.trend + seasonal);
            sd.push(f.sigma * (1.0 + var_sum).sqrt());
            // c_h, used from step h + 1 on; Φ_h is the current φ sum.
            let c = p.alpha
                + p.beta * phi_h
                + f.periods
                    .iter()
                    .zip(&p.gammas)
                    .filter(|(m, _)| h % **m == 0)
                    .map(|(_, g)| g)
                    .sum::<f64>();
            var_sum += c * c;
        }
        Ok(Forecast::from_sd(f.step_ms, point, &sd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw(periods: &[usize], trend: Trend) -> HoltWinters {
        HoltWinters::new(HoltWintersConfig {
            periods: periods.to_vec(),
            trend,
            fit_horizon: 1,
        })
        .unwrap()
    }

    fn seasonal(n: usize, m: usize, slope: f64) -> Vec<f64> {
        (0..n)
            .map(|t| {
                100.0
                    + slope * t as f64
                    + 20.0 * (std::f64::consts::TAU * t as f64 / m as f64).sin()
            })
            .collect()
    }

    #[test]
    fn config_problems_are_all_reported() {
        let Err(ForecastError::Config(p)) = HoltWinters::new(HoltWintersConfig {
            periods: vec![10, 1, 5],
            trend: Trend::None,
            fit_horizon: 0,
        }) else {
            panic!("expected config error");
        };
        assert_eq!(p.len(), 4, "{p:?}");
        let dw = HoltWintersConfig::daily_weekly(300_000).unwrap();
        assert_eq!(dw.periods, vec![288, 2016]);
        assert!(HoltWintersConfig::daily_weekly(7_000).is_err());
    }

    #[test]
    fn clean_seasonal_with_trend_is_forecast_closely() {
        let y = seasonal(24 * 8 + 12, 24, 0.1);
        let mut m = hw(&[24], Trend::Additive);
        m.fit(&y, 1000).unwrap();
        let f = m.forecast(24).unwrap();
        let truth: Vec<f64> = seasonal(y.len() + 24, 24, 0.1)[y.len()..].to_vec();
        let err = crate::mape(&truth, &f.point).unwrap();
        assert!(err < 0.5, "MAPE {err} % on a noiseless series");
        assert!(f.lower.iter().zip(&f.upper).all(|(l, u)| l <= u));
        assert!(m.fallbacks().is_empty());
    }

    #[test]
    fn constant_and_zero_series_forecast_themselves() {
        for c in [0.0, 42.0] {
            let mut m = hw(&[4, 8], Trend::Damped);
            m.fit(&[c; 40], 1000).unwrap();
            let f = m.forecast(5).unwrap();
            for v in f.point.iter().chain(&f.lower).chain(&f.upper) {
                assert!((v - c).abs() < 1e-9, "{c}: {f:?}");
            }
            assert_eq!(m.sigma(), Some(0.0));
        }
    }

    #[test]
    fn short_history_drops_seasons_with_a_reason() {
        let y = seasonal(30, 12, 0.0);
        let mut m = hw(&[12, 24], Trend::Damped);
        m.fit(&y, 1000).unwrap();
        assert_eq!(m.periods_in_use(), &[12]);
        assert_eq!(
            m.fallbacks(),
            &[Fallback::SeasonDropped {
                period: 24,
                have: 30
            }]
        );
        let mut m = hw(&[24], Trend::Damped);
        m.fit(&y[..10], 1000).unwrap();
        assert!(m.periods_in_use().is_empty());
        assert!(
            m.fallbacks()[0].to_string().contains("48 needed"),
            "{}",
            m.fallbacks()[0]
        );
        assert_eq!(m.forecast(3).unwrap().point.len(), 3);
        assert_eq!(
            m.fit(&y[..2], 1000),
            Err(ForecastError::TooShort { len: 2, need: 3 })
        );
    }

    #[test]
    fn refuses_non_finite_and_unfitted() {
        let mut m = hw(&[4], Trend::None);
        assert_eq!(m.forecast(1), Err(ForecastError::NotFitted));
        let mut y = vec![1.0; 20];
        y[7] = f64::NAN;
        assert!(matches!(
            m.fit(&y, 1000),
            Err(ForecastError::NonFinite { index: 7, .. })
        ));
        assert_eq!(m.update(&[1.0]), Err(ForecastError::NotFitted));
    }

    #[test]
    fn update_matches_fitting_the_longer_history_with_the_same_params() {
        let y = seasonal(24 * 6, 24, 0.0);
        let mut a = hw(&[24], Trend::None);
        a.fit(&y[..24 * 5], 1000).unwrap();
        a.update(&y[24 * 5..]).unwrap();
        let fa = a.forecast(6).unwrap();
        let truth = &seasonal(24 * 6 + 6, 24, 0.0)[24 * 6..];
        assert!(crate::mape(truth, &fa.point).unwrap() < 0.5, "{fa:?}");
    }

    #[test]
    fn band_widens_with_the_horizon_on_noisy_data() {
        // Deterministic pseudo-noise; no RNG needed.
        let y: Vec<f64> = seasonal(24 * 6, 24, 0.0)
            .iter()
            .enumerate()
            .map(|(t, v)| v + 3.0 * ((t * 7919 % 101) as f64 / 50.0 - 1.0))
            .collect();
        let mut m = hw(&[24], Trend::Damped);
        m.fit(&y, 1000).unwrap();
        let f = m.forecast(10).unwrap();
        let width: Vec<f64> = f.upper.iter().zip(&f.lower).map(|(u, l)| u - l).collect();
        assert!(width[0] > 0.0);
        assert!(width.windows(2).all(|w| w[1] >= w[0] - 1e-12), "{width:?}");
    }
}
