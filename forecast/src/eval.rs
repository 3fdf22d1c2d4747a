//! Evaluation on the compressed synthetic trace: rolling-origin forecasts
//! 30 minutes (trace time) ahead at 5-minute steps, scored by MAPE.
//!
//! Every 5-minute origin of the fourth week is scored (2016 per trace).
//! Holt-Winters is fitted on the three weeks before the first origin and
//! refitted every `refit` steps (a day in the report, once a week in the
//! tests to keep debug builds fast), advancing its states with `update` in
//! between, as the pre-scaler would; seasonal-naive simply uses the last
//! season before each origin. The asserting tests use a few origins to
//! stay fast in debug builds; `report` (ignored, run with
//! `cargo test -p strata-forecast --release -- --ignored --nocapture report`)
//! prints the full comparison over several seeds.

use std::time::Duration;

use crate::trace::{RandomSurges, TraceSpec, DAY_MS, WEEK_MS};
use crate::{
    horizon_steps, mape, smape, Forecaster, HoltWinters, HoltWintersConfig, SeasonalNaive, Trend,
};

const STEP_MS: u64 = 300_000;
const DAY: usize = (DAY_MS / STEP_MS) as usize;
const WEEK: usize = (WEEK_MS / STEP_MS) as usize;
const HORIZON_MS: u64 = 30 * 60_000;

fn clean(seed: u64) -> TraceSpec {
    TraceSpec {
        noise: 0.0,
        seed,
        ..TraceSpec::default()
    }
}

fn noisy(seed: u64) -> TraceSpec {
    TraceSpec {
        noise: 0.05,
        random_surges: Some(RandomSurges {
            per_day: 0.5,
            duration: Duration::from_secs(2 * 3600),
            min_multiplier: 1.5,
            max_multiplier: 3.0,
        }),
        seed,
        ..TraceSpec::default()
    }
}

/// A model under evaluation: given the whole history up to an origin,
/// forecast `h` steps. Holt-Winters refits every `refit` samples and
/// otherwise advances its states with `update`, as the pre-scaler would;
/// seasonal-naive has nothing to fit, so it just refits.
type Predict = Box<dyn FnMut(&[f64], usize) -> Vec<f64>>;
type Model = (&'static str, Box<dyn Fn(usize) -> Predict>);

fn hw(
    periods: &'static [usize],
    trend: Trend,
    fit_horizon: usize,
) -> Box<dyn Fn(usize) -> Predict> {
    Box::new(move |refit| {
        let cfg = HoltWintersConfig {
            periods: periods.to_vec(),
            trend,
            fit_horizon,
        };
        let mut model = HoltWinters::new(cfg).expect("valid config");
        let (mut seen, mut fitted_at) = (0usize, None::<usize>);
        Box::new(move |y: &[f64], h: usize| {
            match fitted_at {
                Some(at) if y.len() - at < refit => {
                    model.update(&y[seen..]).expect("finite trace");
                }
                _ => {
                    model
                        .fit(&y[y.len().saturating_sub(3 * WEEK)..], STEP_MS)
                        .expect("finite trace");
                    fitted_at = Some(y.len());
                }
            }
            seen = y.len();
            model.forecast(h).expect("fitted").point
        })
    })
}

fn naive(period: usize) -> Box<dyn Fn(usize) -> Predict> {
    Box::new(move |_| {
        let mut m = SeasonalNaive::new(period).expect("period ≥ 1");
        Box::new(move |y: &[f64], h: usize| {
            m.fit(&y[y.len() - period..], STEP_MS)
                .expect("finite trace");
            m.forecast(h).expect("fitted").point
        })
    })
}

fn models() -> Vec<Model> {
    vec![
        ("hw-daily+weekly", hw(&[DAY, WEEK], Trend::Damped, 6)),
        ("hw-daily+weekly-1step", hw(&[DAY, WEEK], Trend::Damped, 1)),
        ("hw-daily+weekly-notrend", hw(&[DAY, WEEK], Trend::None, 6)),
        ("hw-daily", hw(&[DAY], Trend::Damped, 6)),
        ("seasonal-naive-daily", naive(DAY)),
        ("seasonal-naive-weekly", naive(WEEK)),
    ]
}

/// (MAPE, sMAPE) per model, pooled over every trace in `specs` and every
/// 5-minute origin of the trace's fourth week (3 weeks of history before
/// the first), Holt-Winters refitted every `refit` steps.
fn evaluate(specs: &[TraceSpec], models: &[Model], refit: usize) -> Vec<(&'static str, f64, f64)> {
    let h = horizon_steps(HORIZON_MS, STEP_MS);
    let history = 3 * WEEK;
    let traces: Vec<Vec<f64>> = specs
        .iter()
        .map(|s| s.samples(0, STEP_MS, 4 * WEEK + h))
        .collect();
    models
        .iter()
        .map(|(name, make)| {
            let (mut actual, mut predicted) = (Vec::new(), Vec::new());
            for y in &traces {
                let mut predict = make(refit);
                for at in history..history + WEEK {
                    predicted.extend(predict(&y[..at], h));
                    actual.extend_from_slice(&y[at..at + h]);
                }
            }
            let mp = mape(&actual, &predicted).expect("rates are positive");
            let sp = smape(&actual, &predicted).expect("non-empty");
            (*name, mp, sp)
        })
        .collect()
}

fn score(results: &[(&'static str, f64, f64)], name: &str) -> f64 {
    results
        .iter()
        .find(|r| r.0 == name)
        .map_or(f64::NAN, |r| r.1)
}

/// The model pre-scaling uses (see the crate docs for the comparison).
const CHOSEN: &str = "hw-daily+weekly";

#[test]
fn chosen_model_forecasts_a_clean_seasonal_trace_within_1_percent() {
    let seed = 11;
    let r = evaluate(&[clean(seed)], &models()[..1], WEEK);
    let m = score(&r, CHOSEN);
    assert!(
        m < 1.0,
        "seed {seed}: {CHOSEN} MAPE {m:.2} % on the clean trace ({r:?})"
    );
}

#[test]
fn chosen_model_beats_seasonal_naive_on_noisy_traces_with_surges() {
    // Pooled over three seeds: on a single quiet week weekly seasonal-naive
    // can come within a few percent (see the report in the crate docs).
    let seeds = [1, 2, 3];
    let specs: Vec<TraceSpec> = seeds.iter().map(|s| noisy(*s)).collect();
    let all = models();
    let picked: Vec<Model> = all
        .into_iter()
        .filter(|(n, _)| *n == CHOSEN || n.starts_with("seasonal-naive"))
        .collect();
    let r = evaluate(&specs, &picked, WEEK);
    let m = score(&r, CHOSEN);
    assert!(
        m < 8.0,
        "seeds {seeds:?}: {CHOSEN} MAPE {m:.2} % on the noisy traces ({r:?})"
    );
    for naive in ["seasonal-naive-daily", "seasonal-naive-weekly"] {
        let n = score(&r, naive);
        assert!(
            m < 0.9 * n,
            "seeds {seeds:?}: {CHOSEN} MAPE {m:.2} % not 10 % below {naive} {n:.2} % ({r:?})"
        );
    }
}

#[test]
#[ignore = "prints the model comparison (minutes in debug); run with --nocapture"]
fn report() {
    let seeds = [1, 2, 3, 7, 11];
    for (label, make) in [
        ("clean", clean as fn(u64) -> TraceSpec),
        ("noisy+surges", noisy),
    ] {
        // Every seed scores the same number of points, so the pooled MAPE
        // is the mean of the per-seed ones.
        let mut sums: Vec<(&str, f64, f64)> = Vec::new();
        for seed in seeds {
            for (i, (name, mp, sp)) in evaluate(&[make(seed)], &models(), DAY)
                .into_iter()
                .enumerate()
            {
                println!("{label:13} seed {seed:2}  {name:24} MAPE {mp:6.2} %  sMAPE {sp:6.2} %");
                if sums.len() <= i {
                    sums.push((name, 0.0, 0.0));
                }
                sums[i].1 += mp / seeds.len() as f64;
                sums[i].2 += sp / seeds.len() as f64;
            }
        }
        for (name, mp, sp) in sums {
            println!("{label:13} pooled   {name:24} MAPE {mp:6.2} %  sMAPE {sp:6.2} %");
        }
    }
}
