//! Command-list tests (given these samples at these times → these
//! decisions) and seeded property tests of the autoscaler.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::scale::{Step, MAX_WINDOW};

const T0: i64 = 1_700_000_000_000;

fn at(secs: u64) -> Timestamp {
    Timestamp(T0).plus(Duration::from_secs(secs))
}

/// records/s, target 100 per instance, 1..=20 instances, defaults otherwise
/// (tolerance 0.1, scale-up-window 0, scale-down-window 5 min).
fn spec() -> ScaleSpec {
    ScaleSpec::new(1, 20, Metric::RecordsPerSecond, 100.0)
}

fn scaler(spec: ScaleSpec, current: u32) -> Autoscaler {
    Autoscaler::new(WorkloadId::new("t", "monitor"), spec, current).unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Cmd {
    /// A sample: the summed metric, reported by the current count.
    Load(f64),
    /// A decision, expected to give this count for this reason.
    Expect(u32, ScaleReason),
    /// A decision with a forecast (value, horizon in s), expected to give
    /// this count for this reason.
    Forecast(f64, u64, u32, ScaleReason),
}
use Cmd::*;

/// Runs `script` (second, command) against a fresh autoscaler; the caller
/// applies every decision, so samples report the decided count.
fn run(spec: ScaleSpec, start: u32, script: &[(u64, Cmd)]) -> Autoscaler {
    let mut a = scaler(spec, start);
    for (i, &(s, cmd)) in script.iter().enumerate() {
        let (forecast, want, why) = match cmd {
            Load(total) => {
                let instances = a.current();
                a.observe(at(s), Observation { total, instances }).unwrap();
                continue;
            }
            Expect(n, why) => (None, n, why),
            Forecast(value, h, n, why) => (
                Some(super::Forecast {
                    value,
                    horizon: Duration::from_secs(h),
                }),
                n,
                why,
            ),
        };
        let d = a.decide(at(s), forecast);
        assert_eq!(
            (d.desired, d.reason),
            (want, why),
            "step {i} (t={s}s, {cmd:?}): {d:#?}"
        );
    }
    a
}

#[test]
fn a_five_fold_surge_scales_up_on_the_first_decision_that_sees_it() {
    run(
        spec(),
        2,
        &[
            (0, Expect(2, ScaleReason::NoData)),
            (0, Load(200.0)),
            (0, Expect(2, ScaleReason::WithinTolerance)),
            (10, Load(1000.0)),
            (10, Expect(10, ScaleReason::Surge)),
            (20, Load(1000.0)),
            (20, Expect(10, ScaleReason::WithinTolerance)),
        ],
    );
}

#[test]
fn a_drop_scales_down_only_after_the_window_to_its_highest_recommendation() {
    let a = run(
        spec(),
        10,
        &[
            (0, Load(1000.0)),
            (0, Expect(10, ScaleReason::WithinTolerance)),
            (60, Load(600.0)),
            (60, Expect(10, ScaleReason::StabilizingDown)),
            (120, Load(300.0)),
            (120, Expect(10, ScaleReason::StabilizingDown)),
            (300, Load(300.0)),
            (300, Expect(10, ScaleReason::StabilizingDown)),
            // The 1000 at 0 s has left the window; 600 (at 60 s) is the
            // highest left in it.
            (301, Load(300.0)),
            (301, Expect(6, ScaleReason::ScaleDown)),
            (360, Load(300.0)),
            (360, Expect(6, ScaleReason::StabilizingDown)),
            (361, Load(300.0)),
            (361, Expect(3, ScaleReason::ScaleDown)),
        ],
    );
    assert_eq!(a.last_change(), Some(at(361)));
}

#[test]
fn a_scale_up_window_catches_a_burst_between_decisions() {
    let mut s = spec();
    s.scale_up_window = Duration::from_secs(30);
    run(
        s.clone(),
        2,
        &[
            (0, Load(200.0)),
            (5, Load(900.0)),
            (10, Load(200.0)),
            (30, Expect(9, ScaleReason::Surge)),
        ],
    );
    // Without it, only the newest sample counts for going up.
    s.scale_up_window = Duration::ZERO;
    run(
        s,
        2,
        &[
            (0, Load(200.0)),
            (5, Load(900.0)),
            (10, Load(200.0)),
            (30, Expect(2, ScaleReason::WithinTolerance)),
        ],
    );
}

#[test]
fn min_and_max_clamp_and_a_count_outside_them_is_corrected_at_once() {
    let mut s = spec();
    s.min = 2;
    s.max = 5;
    s.cooldown = Duration::from_secs(600);
    s.scale_down_window = Duration::ZERO;
    run(
        s.clone(),
        3,
        &[
            (0, Load(0.0)),
            (0, Expect(2, ScaleReason::ClampedMin)),
            (1, Load(5000.0)),
            (1, Expect(2, ScaleReason::Cooldown)),
            (600, Load(5000.0)),
            (600, Expect(5, ScaleReason::ClampedMax)),
            (700, Load(5000.0)),
            (700, Expect(5, ScaleReason::ClampedMax)),
        ],
    );
    // Starting outside the bounds, even right after a change.
    let mut a = scaler(s, 9);
    a.observe(
        at(0),
        Observation {
            total: 900.0,
            instances: 9,
        },
    )
    .unwrap();
    let d = a.decide(at(0), None);
    assert_eq!(
        (d.current, d.desired, d.reason),
        (9, 5, ScaleReason::ClampedMax)
    );
    a.set_current(1);
    let d = a.decide(at(1), None);
    assert_eq!(
        (d.desired, d.reason),
        (2, ScaleReason::ClampedMin),
        "{d:#?}"
    );
}

#[test]
fn a_forecast_pre_scales_up_but_never_below_the_reactive_count() {
    let mut s = spec();
    s.max = 12;
    run(
        s,
        2,
        &[
            (0, Load(200.0)),
            // 5 min ahead, 5× the load: ready before it arrives.
            (0, Forecast(1000.0, 300, 10, ScaleReason::PreScaleForecast)),
            // The forecast is in the scale-down window, like a sample.
            (10, Load(200.0)),
            (10, Expect(10, ScaleReason::StabilizingDown)),
            (20, Load(1000.0)),
            (20, Expect(10, ScaleReason::WithinTolerance)),
            // Load above a low forecast: the load wins.
            (30, Load(1050.0)),
            (30, Forecast(100.0, 300, 10, ScaleReason::WithinTolerance)),
            (40, Load(1500.0)),
            (40, Forecast(0.0, 300, 12, ScaleReason::ClampedMax)),
            // A forecast is bounded by max too.
            (50, Load(1200.0)),
            (50, Forecast(9000.0, 300, 12, ScaleReason::ClampedMax)),
            // A nonsense forecast is ignored.
            (60, Load(1200.0)),
            (
                60,
                Forecast(f64::NAN, 300, 12, ScaleReason::WithinTolerance),
            ),
        ],
    );
}

#[test]
fn a_pre_scale_the_load_never_follows_is_released_after_the_scale_down_window() {
    run(
        spec(),
        2,
        &[
            (0, Load(200.0)),
            (0, Forecast(1000.0, 300, 10, ScaleReason::PreScaleForecast)),
            // The forecast now says "no surge"; the pre-scale still holds,
            // so a forecast that flickers cannot flap the count.
            (100, Load(200.0)),
            (100, Forecast(200.0, 300, 10, ScaleReason::StabilizingDown)),
            (300, Load(200.0)),
            (300, Expect(10, ScaleReason::StabilizingDown)),
            (301, Load(200.0)),
            (301, Expect(2, ScaleReason::ScaleDown)),
        ],
    );
}

#[test]
fn cooldown_holds_any_change_after_the_last_one() {
    let mut s = spec();
    s.cooldown = Duration::from_secs(60);
    s.scale_down_window = Duration::from_secs(30);
    run(
        s,
        2,
        &[
            (0, Load(1000.0)),
            (0, Expect(10, ScaleReason::Surge)),
            (10, Load(2000.0)),
            (10, Expect(10, ScaleReason::Cooldown)),
            (59, Load(2000.0)),
            (59, Expect(10, ScaleReason::Cooldown)),
            (60, Load(2000.0)),
            (60, Expect(20, ScaleReason::Surge)),
            (70, Load(100.0)),
            (70, Expect(20, ScaleReason::StabilizingDown)),
            (90, Load(100.0)),
            (90, Expect(20, ScaleReason::StabilizingDown)),
            // The window has passed, but the cooldown runs to 120 s.
            (91, Load(100.0)),
            (91, Expect(20, ScaleReason::Cooldown)),
            (119, Load(100.0)),
            (119, Expect(20, ScaleReason::Cooldown)),
            (120, Load(100.0)),
            (120, Expect(1, ScaleReason::ScaleDown)),
        ],
    );
}

#[test]
fn step_limits_bound_each_decision() {
    let mut s = spec();
    s.max_step_up = Some(Step::Percent(100));
    s.max_step_down = Some(Step::Instances(3));
    s.scale_down_window = Duration::ZERO;
    run(
        s,
        2,
        &[
            (0, Load(1500.0)),
            (0, Expect(4, ScaleReason::Surge)),
            (1, Load(1500.0)),
            (1, Expect(8, ScaleReason::Surge)),
            (2, Load(1500.0)),
            (2, Expect(15, ScaleReason::Surge)),
            (3, Load(100.0)),
            (3, Expect(12, ScaleReason::ScaleDown)),
            (4, Load(100.0)),
            (4, Expect(9, ScaleReason::ScaleDown)),
        ],
    );
}

#[test]
fn rounding_onto_the_count_outside_the_band_is_steady() {
    // 250 / 100 = 2.5 → 3 instances, 17 % off the band of 3: no change.
    run(
        spec(),
        3,
        &[(0, Load(250.0)), (0, Expect(3, ScaleReason::Steady))],
    );
}

#[test]
fn bad_specs_and_samples_are_refused_naming_the_workload() {
    let mut s = spec();
    s.min = 0;
    let e = Autoscaler::new(WorkloadId::new("t", "monitor"), s, 1).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("workload t/monitor: invalid scale spec:")
            && e.to_string().contains("scale.min"),
        "{e}"
    );
    let mut a = scaler(spec(), 2);
    for total in [f64::NAN, -1.0, f64::INFINITY] {
        let e = a
            .observe(
                at(0),
                Observation {
                    total,
                    instances: 2,
                },
            )
            .unwrap_err();
        assert!(matches!(e, ScaleError::BadSample { .. }), "{e}");
        assert!(e.to_string().contains("t/monitor"), "{e}");
    }
    a.observe(
        at(10),
        Observation {
            total: 200.0,
            instances: 2,
        },
    )
    .unwrap();
    let e = a
        .observe(
            at(9),
            Observation {
                total: 5000.0,
                instances: 2,
            },
        )
        .unwrap_err();
    assert!(matches!(e, ScaleError::OutOfOrder { .. }), "{e}");
    // Neither refused sample counts.
    assert_eq!(a.decide(at(10), None).reason, ScaleReason::WithinTolerance);
}

#[test]
fn decisions_report_their_inputs() {
    let mut a = scaler(spec(), 4);
    a.observe(
        at(0),
        Observation {
            total: 1000.0,
            instances: 4,
        },
    )
    .unwrap();
    let f = super::Forecast {
        value: 1500.0,
        horizon: Duration::from_secs(300),
    };
    let d = a.decide(at(0), Some(f));
    assert_eq!(
        d,
        ScaleDecision {
            current: 4,
            desired: 15,
            reason: ScaleReason::PreScaleForecast,
            inputs: DecisionInputs {
                metric: Metric::RecordsPerSecond,
                total: Some(1000.0),
                per_instance: Some(250.0),
                instances: 4,
                target: 100.0,
                recommended: 10,
                forecast: Some(f),
                forecast_recommended: Some(15),
            },
        }
    );
    assert!(d.changed());
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.contains("\"reason\":\"pre-scale-forecast\""), "{json}");
    assert!(json.contains("\"horizon\":\"5m\""), "{json}");
}

#[test]
fn samples_stay_bounded_and_merging_delays_a_scale_down_by_at_most_a_slot() {
    let mut s = spec();
    s.scale_down_window = MAX_WINDOW;
    s.max = 10_000;
    s.tolerance = 0.0;
    let mut a = scaler(s, 10_000);
    // Ever lower samples every 100 ms for 2 h: none replaces another, so
    // only merging bounds them. A slot is 3600 s / 4095 = 880 ms: 9 samples.
    assert_eq!(a.slot_ms(), 880);
    let total = |i: u64| 1_000_000.0 - i as f64 * 10.0;
    // What a decision at sample `i` would be with exact samples over a
    // window `longer` samples longer than the full 36 000.
    let exact = |i: u64, longer: u64| {
        let oldest = i.saturating_sub(36_000 + longer);
        (total(oldest) / 100.0).ceil() as u32
    };
    for i in 0..72_000u64 {
        let now = Timestamp(T0 + i64::try_from(i * 100).unwrap());
        a.observe(
            now,
            Observation {
                total: total(i),
                instances: 1,
            },
        )
        .unwrap();
        assert!(
            a.samples_held() <= MAX_SAMPLES,
            "{} at {i}",
            a.samples_held()
        );
        if i % 1000 == 999 {
            let d = a.decide(now, None);
            assert!(
                exact(i, 0) <= d.desired && d.desired <= exact(i, 9),
                "at {i}: {} outside {}..={}",
                d.desired,
                exact(i, 0),
                exact(i, 9)
            );
        }
    }
    assert!(a.samples_held() > MAX_SAMPLES - 10, "{}", a.samples_held());
}

/// A load process for the property tests, in units of `target × count`.
fn load(kind: u8, rng: &mut ChaCha8Rng, i: u64, prev: f64) -> f64 {
    match kind {
        // Independent noise, 0-3× target.
        0 => rng.gen_range(0.0..3.0),
        // A square wave: 10 min high, 10 min low, with noise.
        1 => {
            let high = (i / 60) % 2 == 0;
            (if high { 2.0 } else { 0.5 }) * rng.gen_range(0.8..1.2)
        }
        // A random walk.
        _ => (prev * rng.gen_range(0.85..1.15)).clamp(0.05, 5.0),
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 64,
        rng_seed: RngSeed::Fixed(0x5ca1_e0a5_c41e),
        failure_persistence: None,
        ..Config::default()
    })]

    /// Noise of ±tolerance/2 around the target never scales.
    #[test]
    fn noise_inside_the_tolerance_never_scales(
        seed in any::<u64>(),
        count in 1u32..50,
        tol_pct in 2u32..=50,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let tol = f64::from(tol_pct) / 100.0;
        let mut s = ScaleSpec::new(1, 100, Metric::QueueDepth, 250.0);
        s.tolerance = tol;
        let mut a = scaler(s, count);
        let mut events = 0;
        for i in 0..2000u64 {
            let u = rng.gen_range(-tol / 2.0..=tol / 2.0);
            let total = 250.0 * f64::from(count) * (1.0 + u);
            a.observe(at(i * 10), Observation { total, instances: count }).unwrap();
            let d = a.decide(at(i * 10), None);
            prop_assert_eq!(d.reason, ScaleReason::WithinTolerance, "seed {} at {}", seed, i);
            events += usize::from(d.changed());
        }
        prop_assert_eq!(events, 0, "seed {}", seed);
    }

    /// Over long noisy runs: a rise is acted on by the first decision
    /// after it; a scale-down never comes within scale-down-window of the
    /// previous scale-up, so direction reversals are bounded by the run's
    /// length over the window; the count stays within bounds; and a
    /// forecast never lowers a decision.
    #[test]
    fn long_noisy_runs_do_not_flap(seed in any::<u64>(), kind in 0u8..3) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut s = ScaleSpec::new(2, 40, Metric::Cpu, 500.0);
        s.tolerance = rng.gen_range(0.0..0.3);
        s.scale_down_window = Duration::from_secs(rng.gen_range(60..=600));
        let window = s.scale_down_window;
        let mut a = scaler(s.clone(), rng.gen_range(s.min..=s.max));
        let (mut last_up, mut reversals, mut last_dir) = (None, 0u64, 0i8);
        let mut x = 1.0;
        let steps = 3000u64;
        for i in 0..steps {
            let now = at(i * 10);
            // In units of 8 instances' worth: 0-40 instances.
            x = load(kind, &mut rng, i, x);
            let total = x * 500.0 * 8.0;
            a.observe(now, Observation { total, instances: a.current() }).unwrap();
            let base = a.current();
            let forecast = super::Forecast {
                value: total * rng.gen_range(0.0..3.0),
                horizon: Duration::from_secs(300),
            };
            let with = a.clone().decide(now, Some(forecast));
            let d = a.decide(now, None);
            prop_assert!(with.desired >= d.desired, "seed {}: forecast lowered {:?} below {:?}", seed, with, d);
            prop_assert!(with.desired <= s.max, "seed {}: {:?}", seed, with);
            prop_assert!((s.min..=s.max).contains(&d.desired), "seed {}: {:?}", seed, d);
            let newest = ((total / 500.0).ceil() as u32).clamp(s.min, s.max);
            let in_band = (total / (500.0 * f64::from(base)) - 1.0).abs() <= s.tolerance;
            if newest > base && !in_band {
                prop_assert!(d.desired >= newest, "seed {} at {}: rise to {} ignored: {:?}", seed, i, newest, d);
            }
            let dir = i8::from(d.desired > base) - i8::from(d.desired < base);
            if dir == -1 {
                if let Some(up) = last_up {
                    prop_assert!(now.since(up) > window, "seed {} at {}: down {:?} after the up at {}", seed, i, now.since(up), up);
                }
            }
            if dir == 1 {
                last_up = Some(now);
            }
            if dir != 0 {
                reversals += u64::from(last_dir != 0 && dir != last_dir);
                last_dir = dir;
            }
        }
        // Each up→down pair spans more than a window, so at most
        // run/window + 1 of them, and as many down→up between them.
        let bound = 2 * (steps * 10 / window.as_secs() + 1) + 1;
        prop_assert!(reversals <= bound, "seed {}: {} reversals, bound {}", seed, reversals, bound);
    }
}
