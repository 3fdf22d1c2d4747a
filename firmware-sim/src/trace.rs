//! Trace mode: the fleet's total publish rate follows a [`TraceSpec`]
//! (daily and weekly patterns, surges, noise; see `strata_forecast::trace`)
//! played `compression` times faster than real time, so a week of load
//! shapes fits in a test or benchmark of minutes.
//!
//! How: each connection publishes its share of the trace rate
//! (`devices on it / devices`) by modulating the interval between its
//! publishes. [`TracePacer::next_due`] places publish `k + 1` where the
//! integral of the connection's rate since publish `k` reaches 1, so the
//! count of publishes in any window matches the trace's integral over it.
//! We chose interval modulation over a token bucket per device because it
//! fits the session's existing pacing (one "next due" instant per
//! connection, catch-up without skipping when behind) and keeps the driver
//! unchanged: it still just sleeps until the instant the session returns.
//! A per-device bucket would need 100k timers or a scan per wake-up.
//!
//! Everything here is pure: time is "seconds since the session started",
//! passed in; `Session` turns it into instants and the driver owns the
//! clock. A reading published in trace mode is stamped with the time it
//! was due (`start-ts-ms` + due offset) rather than `seq · 1/rate`, so
//! stored timestamps show the trace's shape.

use std::time::Duration;

pub use strata_forecast::trace::{RandomSurges, Surge, TraceSpec};

/// Longest integration step, in trace time: a fraction of the noise
/// resolution keeps the step from straddling a noise change for long.
const STEPS_PER_NOISE_BUCKET: f64 = 4.0;
/// Integration steps before `next_due` gives up (a valid spec's rate is
/// > 0, so this is only a guard against a pathologically tiny share).
const MAX_STEPS: u32 = 10_000_000;

/// Paces one connection's publishes to `share` of the trace's fleet rate.
#[derive(Debug, Clone, PartialEq)]
pub struct TracePacer {
    spec: TraceSpec,
    share: f64,
    /// Integration step, wall seconds.
    step: f64,
}

impl TracePacer {
    /// A pacer for a connection carrying `share` (0, 1] of the fleet;
    /// `spec` must be valid (the fleet config's validation ensures it).
    pub fn new(spec: TraceSpec, share: f64) -> TracePacer {
        let step =
            (spec.noise_resolution.as_secs_f64() / spec.compression / STEPS_PER_NOISE_BUCKET)
                .clamp(1e-6, 1.0);
        TracePacer { spec, share, step }
    }

    /// This connection's publish rate, messages per wall second, `wall`
    /// seconds after the start.
    pub fn rate_at(&self, wall: f64) -> f64 {
        let d = Duration::try_from_secs_f64(wall.max(0.0)).unwrap_or(Duration::MAX);
        self.share * self.spec.rate_at(self.spec.trace_ms_at(d))
    }

    /// When the publish after one due at `from` (wall seconds since the
    /// start) is due: the `t` where the rate's integral over `[from, t]`
    /// reaches 1, integrating in steps of a quarter noise bucket.
    pub fn next_due(&self, from: f64) -> f64 {
        let (mut t, mut need) = (from, 1.0);
        for _ in 0..MAX_STEPS {
            let r = self.rate_at(t);
            if r * self.step >= need {
                return t + need / r;
            }
            need -= r * self.step;
            t += self.step;
        }
        t
    }
}

/// Reads a trace spec from TOML (kebab-case keys, see `firmware-sim/trace.toml`).
/// Unknown keys are an error; call [`TraceSpec::validate`] (or the fleet's)
/// afterwards for the value checks.
pub fn parse_trace_toml(text: &str) -> Result<TraceSpec, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> TraceSpec {
        TraceSpec {
            base_rate: 200.0,
            noise: 0.1,
            seed,
            surges: vec![Surge {
                at: Duration::from_secs(13 * 3600),
                duration: Duration::from_secs(2 * 3600),
                multiplier: 3.0,
            }],
            ..TraceSpec::default()
        }
    }

    /// Publishes due in `[0, until)` wall seconds.
    fn count(p: &TracePacer, until: f64) -> u64 {
        let (mut t, mut n) = (0.0, 0);
        while t < until {
            n += 1;
            t = p.next_due(t);
        }
        n
    }

    /// ∫ rate over `[0, until)` by a fine Riemann sum.
    fn integral(p: &TracePacer, until: f64) -> f64 {
        let dt = 0.001;
        (0..(until / dt) as u64)
            .map(|i| p.rate_at((i as f64 + 0.5) * dt) * dt)
            .sum()
    }

    #[test]
    fn publish_count_follows_the_trace_integral() {
        let seed = 42;
        let p = TracePacer::new(spec(seed), 1.0);
        // 144 s at 600× is a whole trace day, surge included.
        for until in [10.0, 60.0, 144.0] {
            let (n, want) = (count(&p, until) as f64, integral(&p, until));
            assert!(
                (n - want).abs() <= 0.005 * want + 1.0,
                "seed {seed}: {n} publishes in {until} s, trace integral {want:.1}"
            );
        }
        // The day's shape shows: the 14:00 peak hour (with the surge)
        // carries far more publishes than the 02:00 trough hour.
        let hour = 144.0 / 24.0;
        let in_hour = |h: f64| count(&p, (h + 1.0) * hour) - count(&p, h * hour);
        assert!(in_hour(14.0) > 4 * in_hour(2.0), "seed {seed}");
    }

    #[test]
    fn connection_shares_add_up_to_the_fleet() {
        let seed = 7;
        let fleet = count(&TracePacer::new(spec(seed), 1.0), 30.0) as f64;
        let parts: u64 = [0.25, 0.35, 0.4]
            .iter()
            .map(|s| count(&TracePacer::new(spec(seed), *s), 30.0))
            .sum();
        assert!(
            (parts as f64 - fleet).abs() <= 3.0,
            "seed {seed}: {parts} vs {fleet}"
        );
    }

    #[test]
    fn low_rates_integrate_across_many_steps() {
        // 0.5 msg/s for the connection: each interval spans ~80 steps.
        let s = TraceSpec {
            base_rate: 0.5,
            daily_amplitude: 0.0,
            weekly_amplitude: 0.0,
            noise: 0.0,
            ..TraceSpec::default()
        };
        let p = TracePacer::new(s, 1.0);
        assert!((p.next_due(3.0) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn sample_trace_file_parses_and_validates() {
        let spec = parse_trace_toml(include_str!("../trace.toml")).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.compression, 600.0);
        assert!(!spec.surges.is_empty() && spec.random_surges.is_some());
        let err = parse_trace_toml("base-rate = 1\nbogus = 2\n").unwrap_err();
        assert!(err.contains("bogus"), "{err}");
    }
}
