//! Tests of the z-score core against firmware-sim's model.

use strata_monitor_sdk::{Detector, Event, MemKv, Severity};

use super::*;
use crate::sim_data::{record, Spike, DEFAULT_SPIKE, SENSORS};

const TEMP: usize = 2;
const HUM: usize = 0;

fn alerts(ev: &[Event]) -> Vec<(&'static str, Severity, String)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Alert {
                code,
                severity,
                device,
                ..
            } => Some((*code, *severity, device.clone())),
            _ => None,
        })
        .collect()
}

fn run(
    det: &mut ZScore,
    seed: u64,
    d: u32,
    range: std::ops::Range<u64>,
    sensors: &[usize],
    spike: Option<Spike>,
) -> Vec<(u64, Event)> {
    let mut out = Vec::new();
    for i in range {
        for e in det.step(&record(seed, d, i, sensors, spike)) {
            out.push((i, e));
        }
    }
    out
}

#[test]
fn normal_temperature_and_humidity_never_alert() {
    // 4 seeds x 16 devices x 3000 readings (50 minutes at 1/s) each.
    for seed in 1..=4u64 {
        let mut det = ZScore::new(Params::default());
        for d in 0..16 {
            let ev = run(&mut det, seed, d, 0..3000, &[HUM, TEMP], None);
            let a: Vec<_> = ev
                .iter()
                .filter(|(_, e)| matches!(e, Event::Alert { .. }))
                .collect();
            assert!(a.is_empty(), "seed {seed} device {d}: false alerts {a:?}");
            let zmax = ev
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::Metric { value, .. } => Some(value.abs()),
                    _ => None,
                })
                .fold(0.0, f64::max);
            assert!(
                zmax > 1.0 && zmax < 6.0,
                "seed {seed} device {d}: max |z| {zmax}"
            );
        }
    }
}

#[test]
fn firmware_sim_default_temperature_spike_is_caught() {
    for seed in 1..=4u64 {
        for d in 0..8 {
            let spike = Spike {
                start: 1500,
                duration: 5,
                sensor: TEMP,
                magnitude: DEFAULT_SPIKE[TEMP],
            };
            let mut det = ZScore::new(Params::default());
            let ev = run(&mut det, seed, d, 0..2000, &[HUM, TEMP], Some(spike));
            let a: Vec<_> = ev
                .iter()
                .filter_map(|(i, e)| match e {
                    Event::Alert { code, severity, .. } => Some((*i, *code, *severity)),
                    _ => None,
                })
                .collect();
            assert_eq!(
                a,
                vec![
                    (1500, CODE_ANOMALY, Severity::Critical),
                    (1505, CODE_RECOVERED, Severity::Info)
                ],
                "seed {seed} device {d}"
            );
            // The z-score of the first spiked reading is emitted too.
            assert!(ev.iter().any(|(i, e)| *i == 1500
                && matches!(e, Event::Metric { name, value, .. } if name == "temperature.zscore" && *value > 12.0)));
        }
    }
}

#[test]
fn every_default_spike_is_caught_on_its_own_metric() {
    // Power and vibration are excluded from the normal-data test (load
    // steps and vibration bursts are outliers by design); their spikes
    // still stand out.
    for (k, name) in SENSORS.iter().enumerate() {
        let spike = Spike {
            start: 700,
            duration: 3,
            sensor: k,
            magnitude: DEFAULT_SPIKE[k],
        };
        let params = Params {
            metrics: vec![(*name).into()],
            ..Params::default()
        };
        let mut det = ZScore::new(params);
        let ev = run(&mut det, 7, 1, 0..800, &[0, 1, 2, 3], Some(spike));
        assert!(
            ev.iter().any(|(i, e)| *i == 700
                && matches!(
                    e,
                    Event::Alert {
                        code: CODE_ANOMALY,
                        ..
                    }
                )),
            "{name}: {:?}",
            alerts(&ev.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>())
        );
    }
}

#[test]
fn a_persistent_level_shift_is_relearnt() {
    let params = Params {
        metrics: vec!["temperature".into()],
        ..Params::default()
    };
    let mut det = ZScore::new(params);
    let spike = Spike {
        start: 500,
        duration: 10_000,
        sensor: TEMP,
        magnitude: 40.0,
    };
    let ev = run(&mut det, 3, 0, 0..1500, &[TEMP], Some(spike));
    let a: Vec<_> = ev
        .iter()
        .filter_map(|(i, e)| match e {
            Event::Alert { code, .. } => Some((*i, *code)),
            _ => None,
        })
        .collect();
    assert_eq!(a, vec![(500, CODE_ANOMALY), (509, CODE_LEVEL_SHIFT)]);
}

#[test]
fn state_survives_a_restart_through_kv() {
    let spike = Spike {
        start: 900,
        duration: 4,
        sensor: TEMP,
        magnitude: 40.0,
    };
    let mut whole = ZScore::new(Params::default());
    let expected = run(&mut whole, 5, 2, 0..1000, &[HUM, TEMP], Some(spike));

    let mut kv = MemKv::default();
    let mut first = ZScore::new(Params::default());
    let mut got = run(&mut first, 5, 2, 0..902, &[HUM, TEMP], Some(spike));
    assert_eq!(first.series().flush(&mut kv), 0);
    assert_eq!(kv.0.len(), 2, "{:?}", kv.0.keys().collect::<Vec<_>>());
    assert!(kv.0.contains_key("z/dev-2/temperature"));

    // A new instance: same params, state only from kv.
    let mut second = ZScore::new(Params::default());
    for i in 902..1000 {
        let r = record(5, 2, i, &[HUM, TEMP], Some(spike));
        second.series().preload(&r, |_| true, &mut kv);
        got.extend(second.step(&r).into_iter().map(|e| (i, e)));
    }
    assert_eq!(got, expected);
}

#[test]
fn params_defaults_and_validation() {
    assert_eq!(
        Params::from_json(&serde_json::Value::Null).unwrap(),
        Params::default()
    );
    let p =
        Params::from_json(&serde_json::json!({"window": 120, "min-std": 0.5, "metrics": ["t"]}))
            .unwrap();
    assert_eq!((p.window, p.min_std, p.metrics.len()), (120, 0.5, 1));
    let e = Params::from_json(&serde_json::json!({"window": 1, "threshold": -1, "adapt-after": 0}))
        .unwrap_err();
    for want in ["window", "threshold", "adapt-after"] {
        assert!(e.contains(want), "{e}");
    }
    let e = Params::from_json(&serde_json::json!({"threshold": 5, "critical": 4})).unwrap_err();
    assert!(e.contains("critical"), "{e}");
    let e = Params::from_json(&serde_json::json!({"windw": 5})).unwrap_err();
    assert!(e.contains("windw"), "{e}");
}
