//! [`TraceSpec`]: a synthetic fleet load trace with daily and weekly
//! patterns, surges and noise, compressed in time so tests and benchmarks
//! see a day in minutes.
//!
//! `rate_at(t)` is a pure function of the spec and the *trace* time `t`
//! (ms since trace Monday 00:00), random-access and deterministic for a
//! seed: noise and random surges come from a SplitMix64 hash of
//! `(seed, stream, index)`, not a sequential RNG, so any instant can be
//! evaluated without replaying the past and two processes agree. Wall time
//! maps to trace time as `start + wall · compression`
//! ([`TraceSpec::trace_ms_at`]).
//!
//! ```text
//! rate(t) = base-rate · (1 + daily-amplitude · cos(2π (hour − 14) / 24))
//!                     · (1 − weekly-amplitude · weekend(t))
//!                     · Π surges (1 + (multiplier − 1) · shape(t))
//!                     · (1 + noise · z(⌊t / noise-resolution⌋))
//! ```
//! `weekend(t)` is 1 from Saturday to Sunday midnight with 3-hour
//! raised-cosine edges; a surge's shape is a trapezoid ramping over the
//! first and last quarter of its duration; `z` is standard normal clamped to
//! ±3, so the noise factor stays positive (noise ≤ 0.3).
//!
//! It lives in strata-forecast so both the forecaster's evaluation and
//! firmware-sim's trace mode use it without a crate cycle.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One trace day and week, ms.
pub const DAY_MS: u64 = 86_400_000;
/// One trace week, ms.
pub const WEEK_MS: u64 = 7 * DAY_MS;
/// Most random surges per day (bounds `rate_at`'s cost).
pub const MAX_SURGES_PER_DAY: f64 = 24.0;

/// Every problem of a [`TraceSpec`], at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trace:\n  - {}", problems.join("\n  - "))]
pub struct TraceError {
    /// One message per problem, naming the field.
    pub problems: Vec<String>,
}

/// A scheduled surge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Surge {
    /// Trace time the surge starts, from trace Monday 00:00 (e.g. "1day
    /// 9h"). Required.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// How long it lasts in trace time, > 0. Required.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Rate factor at its plateau, finite and > 0 (2 = double). Required.
    pub multiplier: f64,
}

/// Surges drawn from the seed: `per-day` a day on average, each at a
/// uniform time of its day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RandomSurges {
    /// Expected surges per trace day, 0..=24 (the fraction is a per-day
    /// chance of one more). Required.
    pub per_day: f64,
    /// Duration of each, trace time, > 0 and ≤ 1 day. Required.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Smallest plateau multiplier, > 0. Default 1.5.
    #[serde(default = "default_min_multiplier")]
    pub min_multiplier: f64,
    /// Largest plateau multiplier, ≥ min-multiplier. Default 3.
    #[serde(default = "default_max_multiplier")]
    pub max_multiplier: f64,
}

fn default_min_multiplier() -> f64 {
    1.5
}
fn default_max_multiplier() -> f64 {
    3.0
}

/// The trace; see the module docs for the formula.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TraceSpec {
    /// Mean publish rate of the whole fleet before the factors, messages
    /// per second (of wall time), finite and > 0. Default 100.
    pub base_rate: f64,
    /// Daily swing as a fraction of the rate, 0..1: peak at 14:00 ×(1+a),
    /// trough at 02:00 ×(1−a). Default 0.5.
    pub daily_amplitude: f64,
    /// Weekend dip as a fraction, 0..1: Saturday and Sunday run at ×(1−a).
    /// Default 0.3.
    pub weekly_amplitude: f64,
    /// Scheduled surges. Default none.
    pub surges: Vec<Surge>,
    /// Seeded random surges. Default none.
    pub random_surges: Option<RandomSurges>,
    /// Multiplicative noise, the standard deviation as a fraction of the
    /// rate, 0..=0.3. Default 0.05.
    pub noise: f64,
    /// Trace time over which one noise draw holds, > 0. Default 1m.
    #[serde(with = "humantime_serde")]
    pub noise_resolution: Duration,
    /// Trace seconds per wall second, finite and > 0: 600 plays a day in
    /// 144 s and a week in about 17 min. Default 600.
    pub compression: f64,
    /// Trace time at wall time 0, from trace Monday 00:00 (e.g. "4day 8h"
    /// starts on Friday morning). Default 0.
    #[serde(with = "humantime_serde")]
    pub start: Duration,
    /// Seed of the noise and the random surges. Default 1.
    pub seed: u64,
}

impl Default for TraceSpec {
    fn default() -> Self {
        TraceSpec {
            base_rate: 100.0,
            daily_amplitude: 0.5,
            weekly_amplitude: 0.3,
            surges: Vec::new(),
            random_surges: None,
            noise: 0.05,
            noise_resolution: Duration::from_secs(60),
            compression: 600.0,
            start: Duration::ZERO,
            seed: 1,
        }
    }
}

// Hash streams.
const S_NOISE: u64 = 1;
const S_SURGE_COUNT: u64 = 2;
const S_SURGE_AT: u64 = 3;
const S_SURGE_MULT: u64 = 4;

/// SplitMix64 finaliser: a bijective, well-mixing 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) for (seed, stream, index, sub).
fn unit(seed: u64, stream: u64, k: u64, sub: u64) -> f64 {
    let h = mix(mix(mix(mix(seed) ^ stream) ^ k) ^ sub);
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Raised-cosine step: 0 below 0, 1 above 1.
fn smooth(c: f64) -> f64 {
    0.5 - 0.5 * (std::f64::consts::PI * c.clamp(0.0, 1.0)).cos()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Trapezoid: ramps over the first and last quarter of `[at, at + dur)`.
fn surge_shape(t: u64, at: u64, dur: u64) -> f64 {
    if t < at || t >= at.saturating_add(dur) || dur == 0 {
        return 0.0;
    }
    let x = (t - at) as f64 / dur as f64;
    (x.min(1.0 - x) * 4.0).min(1.0)
}

impl TraceSpec {
    /// Checks every field; reports all problems at once.
    pub fn validate(&self) -> Result<(), TraceError> {
        let mut p = Vec::new();
        if !(self.base_rate.is_finite() && self.base_rate > 0.0) {
            p.push(format!(
                "base-rate {} must be finite and > 0",
                self.base_rate
            ));
        }
        for (name, a) in [
            ("daily-amplitude", self.daily_amplitude),
            ("weekly-amplitude", self.weekly_amplitude),
        ] {
            if !(0.0..1.0).contains(&a) {
                p.push(format!("{name} {a} must be in [0, 1)"));
            }
        }
        if !(0.0..=0.3).contains(&self.noise) {
            p.push(format!("noise {} must be in [0, 0.3]", self.noise));
        }
        if self.noise_resolution.as_millis() == 0 {
            p.push("noise-resolution must be at least 1ms".into());
        }
        if !(self.compression.is_finite() && self.compression > 0.0) {
            p.push(format!(
                "compression {} must be finite and > 0",
                self.compression
            ));
        }
        for (i, s) in self.surges.iter().enumerate() {
            if s.duration.as_millis() == 0 {
                p.push(format!("surges[{i}]: duration must be at least 1ms"));
            }
            if !(s.multiplier.is_finite() && s.multiplier > 0.0) {
                p.push(format!(
                    "surges[{i}]: multiplier {} must be finite and > 0",
                    s.multiplier
                ));
            }
        }
        if let Some(r) = &self.random_surges {
            if !(0.0..=MAX_SURGES_PER_DAY).contains(&r.per_day) {
                p.push(format!(
                    "random-surges: per-day {} must be in [0, {MAX_SURGES_PER_DAY}]",
                    r.per_day
                ));
            }
            if r.duration.as_millis() == 0 || ms(r.duration) > DAY_MS {
                p.push(format!(
                    "random-surges: duration {:?} must be in (0, 1 day]",
                    r.duration
                ));
            }
            let ok = |m: f64| m.is_finite() && m > 0.0;
            if !ok(r.min_multiplier) || !ok(r.max_multiplier) || r.min_multiplier > r.max_multiplier
            {
                p.push(format!(
                    "random-surges: multipliers must be finite, > 0 and min ({}) ≤ max ({})",
                    r.min_multiplier, r.max_multiplier
                ));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(TraceError { problems: p })
        }
    }

    /// Trace time (ms since trace Monday 00:00) at `wall` after the start.
    pub fn trace_ms_at(&self, wall: Duration) -> u64 {
        let t = wall.as_secs_f64() * self.compression * 1000.0;
        ms(self.start).saturating_add(t as u64)
    }

    /// The wall offset at which trace time `trace_ms` is reached (zero for
    /// trace times before `start`).
    pub fn wall_at(&self, trace_ms: u64) -> Duration {
        let dt = trace_ms.saturating_sub(ms(self.start)) as f64 / 1000.0 / self.compression;
        Duration::try_from_secs_f64(dt).unwrap_or(Duration::MAX)
    }

    /// Daily factor `1 + a·cos(2π (hour − 14) / 24)` at trace time `t`.
    pub fn daily_factor(&self, t: u64) -> f64 {
        let hour = (t % DAY_MS) as f64 / 3_600_000.0;
        1.0 + self.daily_amplitude * (std::f64::consts::TAU * (hour - 14.0) / 24.0).cos()
    }

    /// Weekly factor `1 − a·weekend(t)` at trace time `t`.
    pub fn weekly_factor(&self, t: u64) -> f64 {
        let h = (t % WEEK_MS) as f64 / 3_600_000.0;
        // Saturday 00:00 is hour 120, the week wraps at 168; edges 3 h wide.
        let weekend = |x: f64| smooth((x - 118.5) / 3.0) * (1.0 - smooth((x - 166.5) / 3.0));
        1.0 - self.weekly_amplitude * weekend(h).max(weekend(h + 168.0))
    }

    /// Product of every surge's factor at trace time `t` (1 outside them).
    pub fn surge_factor(&self, t: u64) -> f64 {
        let mut f = 1.0;
        for s in &self.surges {
            f *= 1.0 + (s.multiplier - 1.0) * surge_shape(t, ms(s.at), ms(s.duration));
        }
        if let Some(r) = &self.random_surges {
            // A surge lasts at most a day, so only today's and yesterday's
            // draws can cover `t`.
            let today = t / DAY_MS;
            for day in today.saturating_sub(1)..=today {
                let whole = r.per_day.floor();
                let extra = unit(self.seed, S_SURGE_COUNT, day, 0) < r.per_day - whole;
                let n = whole as u64 + u64::from(extra);
                for j in 0..n {
                    let at =
                        day * DAY_MS + (unit(self.seed, S_SURGE_AT, day, j) * DAY_MS as f64) as u64;
                    let m = r.min_multiplier
                        + (r.max_multiplier - r.min_multiplier)
                            * unit(self.seed, S_SURGE_MULT, day, j);
                    f *= 1.0 + (m - 1.0) * surge_shape(t, at, ms(r.duration));
                }
            }
        }
        f
    }

    /// Noise factor `1 + noise · z` at trace time `t`, constant over each
    /// `noise-resolution` bucket.
    pub fn noise_factor(&self, t: u64) -> f64 {
        if self.noise == 0.0 {
            return 1.0;
        }
        let bucket = t / ms(self.noise_resolution).max(1);
        // Box-Muller on two hashed uniforms; 1 − u keeps ln away from 0.
        let u1 = 1.0 - unit(self.seed, S_NOISE, bucket, 0);
        let u2 = unit(self.seed, S_NOISE, bucket, 1);
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        1.0 + self.noise * z.clamp(-3.0, 3.0)
    }

    /// The fleet's publish rate (messages per wall second) at trace time
    /// `trace_ms`; always > 0 for a valid spec.
    pub fn rate_at(&self, trace_ms: u64) -> f64 {
        self.base_rate
            * self.daily_factor(trace_ms)
            * self.weekly_factor(trace_ms)
            * self.surge_factor(trace_ms)
            * self.noise_factor(trace_ms)
    }

    /// `n` samples of the rate at trace times `from, from + step, …`.
    pub fn samples(&self, from_ms: u64, step_ms: u64, n: usize) -> Vec<f64> {
        (0..n as u64)
            .map(|i| self.rate_at(from_ms.saturating_add(i.saturating_mul(step_ms))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    #[test]
    fn default_is_valid_and_every_problem_is_reported() {
        TraceSpec::default().validate().unwrap();
        let bad = TraceSpec {
            base_rate: 0.0,
            daily_amplitude: 1.0,
            weekly_amplitude: -0.1,
            noise: 0.5,
            noise_resolution: Duration::ZERO,
            compression: f64::NAN,
            surges: vec![Surge {
                at: Duration::ZERO,
                duration: Duration::ZERO,
                multiplier: -1.0,
            }],
            random_surges: Some(RandomSurges {
                per_day: 100.0,
                duration: Duration::from_secs(2 * 86_400),
                min_multiplier: 3.0,
                max_multiplier: 2.0,
            }),
            ..TraceSpec::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.problems.len(), 11, "{e}");
        for needle in [
            "base-rate",
            "daily-amplitude",
            "weekly-amplitude",
            "noise 0.5",
            "noise-resolution",
            "compression",
            "surges[0]: duration",
            "surges[0]: multiplier",
            "per-day",
            "(0, 1 day]",
            "min (3)",
        ] {
            assert!(e.to_string().contains(needle), "{needle} missing: {e}");
        }
    }

    #[test]
    fn daily_and_weekly_shapes() {
        let s = TraceSpec {
            noise: 0.0,
            ..TraceSpec::default()
        };
        // Monday: peak at 14:00, trough at 02:00.
        assert!((s.rate_at(14 * H) - 150.0).abs() < 1e-9);
        assert!((s.rate_at(2 * H) - 50.0).abs() < 1e-9);
        // Saturday 14:00 is 30 % down; Monday noon is not.
        let sat = 5 * DAY_MS + 14 * H;
        assert!((s.rate_at(sat) - 150.0 * 0.7).abs() < 1e-9);
        assert_eq!(s.weekly_factor(DAY_MS + 12 * H), 1.0);
        // The weekend edges are continuous across the week's wrap.
        let (a, b) = (s.weekly_factor(WEEK_MS - 1), s.weekly_factor(WEEK_MS));
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        assert!((s.weekly_factor(WEEK_MS) - 0.85).abs() < 1e-6);
    }

    #[test]
    fn surges_ramp_plateau_and_end() {
        let s = TraceSpec {
            noise: 0.0,
            daily_amplitude: 0.0,
            weekly_amplitude: 0.0,
            surges: vec![Surge {
                at: Duration::from_secs(3600),
                duration: Duration::from_secs(4 * 3600),
                multiplier: 3.0,
            }],
            ..TraceSpec::default()
        };
        assert_eq!(s.rate_at(H - 1), 100.0);
        assert!(
            (s.rate_at(H + H / 2) - 200.0).abs() < 1e-9,
            "half-way up the ramp"
        );
        assert_eq!(s.rate_at(3 * H), 300.0);
        assert_eq!(s.rate_at(5 * H), 100.0);
    }

    #[test]
    fn seeded_noise_and_random_surges_are_deterministic_and_calibrated() {
        let seed = 0x5eed;
        let s = TraceSpec {
            daily_amplitude: 0.0,
            weekly_amplitude: 0.0,
            noise: 0.1,
            seed,
            ..TraceSpec::default()
        };
        let a = s.samples(0, 60_000, 20_000);
        assert_eq!(a, s.samples(0, 60_000, 20_000), "seed {seed}");
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        let sd = (a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
        assert!((mean - 100.0).abs() < 0.5, "seed {seed}: mean {mean}");
        assert!((sd - 10.0).abs() < 0.5, "seed {seed}: sd {sd}");
        assert!(a.iter().all(|v| *v >= 70.0 - 1e-9 && *v <= 130.0 + 1e-9));
        let other = TraceSpec {
            seed: seed + 1,
            ..s.clone()
        };
        assert_ne!(a, other.samples(0, 60_000, 20_000));

        let r = TraceSpec {
            noise: 0.0,
            random_surges: Some(RandomSurges {
                per_day: 2.5,
                duration: Duration::from_secs(3600),
                min_multiplier: 2.0,
                max_multiplier: 2.0,
            }),
            ..s
        };
        // 100 days at 1-minute steps: ~250 surges of an hour each, a 2×
        // plateau for half of it.
        let days = 100;
        let hot = r
            .samples(0, 60_000, days * 1440)
            .iter()
            .filter(|v| **v > 199.0)
            .count() as f64
            / 60.0;
        assert!(
            (hot / days as f64 / 0.5 - 2.5).abs() < 0.4,
            "seed {seed}: {hot} h hot"
        );
    }

    #[test]
    fn wall_and_trace_time_map_both_ways() {
        let s = TraceSpec {
            start: Duration::from_secs(8 * 3600),
            ..TraceSpec::default()
        };
        // 600×: 144 wall seconds are one trace day.
        assert_eq!(s.trace_ms_at(Duration::from_secs(144)), DAY_MS + 8 * H);
        assert_eq!(s.wall_at(DAY_MS + 8 * H), Duration::from_secs(144));
        assert_eq!(s.wall_at(0), Duration::ZERO);
    }

    #[test]
    fn serde_kebab_case_and_unknown_fields() {
        let s: TraceSpec = serde_json::from_str(
            r#"{"base-rate": 5, "noise-resolution": "30s", "start": "4days 8h",
                "surges": [{"at": "1day 9h", "duration": "2h", "multiplier": 2}],
                "random-surges": {"per-day": 1, "duration": "30m"}}"#,
        )
        .unwrap();
        assert_eq!(s.base_rate, 5.0);
        assert_eq!(s.start, Duration::from_secs(4 * 86_400 + 8 * 3600));
        assert_eq!(s.surges[0].at, Duration::from_secs(86_400 + 9 * 3600));
        assert_eq!(s.random_surges.as_ref().unwrap().max_multiplier, 3.0);
        s.validate().unwrap();
        assert!(serde_json::from_str::<TraceSpec>(r#"{"base_rate": 5}"#).is_err());
        assert!(serde_json::from_str::<TraceSpec>(
            r#"{"surges": [{"at": "1h", "duration": "1h", "multiplier": 2, "x": 1}]}"#
        )
        .is_err());
        let back: TraceSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
