//! The pure sensor model: the value of device `d` at reading `i` is a
//! function of `(seed, d, i)` and the configured anomalies only.
//!
//! Randomness is counter-based (a SplitMix64-style hash of seed, device,
//! stream and index) rather than a sequential RNG, so any reading can be
//! computed in O(1) without replaying its predecessors: the publisher can
//! regenerate a payload for retransmission instead of storing it, and tests
//! can recompute exactly what a device sent. Slow processes (temperature
//! drift, humidity's bounded walk) use smoothly interpolated value noise over
//! seeded knots, which behaves like a mean-reverting random walk but is
//! random-access.
//!
//! Values are rounded to 3 decimals: smaller JSON, and the decimal text
//! parses back to exactly the same `f64`.

use strata_protocol::telemetry::{Metric, TelemetryRecord};

use crate::config::{AnomalyKind, AnomalySpec, FleetConfig, Sensor};

/// Readings in one temperature "day" (the diurnal sine's period).
pub const DAY_READINGS: u64 = 1440;

/// The device name for index `d`: `<prefix>-<d>`.
pub fn device_name(prefix: &str, d: u32) -> String {
    format!("{prefix}-{d}")
}

/// Milliseconds between consecutive readings' timestamps: `1000 / rate`, or
/// 1 ms when the rate is unlimited (0).
pub fn interval_ms(rate_per_device: f64) -> f64 {
    if rate_per_device > 0.0 {
        1000.0 / rate_per_device
    } else {
        1.0
    }
}

/// Timestamp of reading `i`: `start_ts_ms + round(i * interval)`, with the
/// start taken as 0 when the config leaves it to the wall clock (`run`
/// fills it in before publishing and reports it in the summary).
pub fn ts_ms(cfg: &FleetConfig, i: u64) -> i64 {
    let offset = (i as f64 * interval_ms(cfg.rate_per_device)).round() as i64;
    cfg.start_ts_ms.unwrap_or(0).saturating_add(offset)
}

// Hash streams: one per independent random quantity.
const S_T_BASE: u64 = 1;
const S_T_PHASE: u64 = 2;
const S_T_DRIFT: u64 = 3;
const S_T_WOBBLE: u64 = 4;
const S_T_NOISE: u64 = 5;
const S_V_BASE: u64 = 10;
const S_V_BURST: u64 = 11;
const S_V_NOISE: u64 = 12;
const S_V_BURST_NOISE: u64 = 13;
const S_P_SCALE: u64 = 20;
const S_P_LEVEL: u64 = 21;
const S_P_NOISE: u64 = 22;
const S_H_SLOW: u64 = 30;
const S_H_FAST: u64 = 31;
const S_H_NOISE: u64 = 32;
const S_ANOMALY: u64 = 1 << 32;

/// SplitMix64 finaliser: a bijective, well-mixing 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random word for (seed, device, stream, index).
pub(crate) fn hash(seed: u64, d: u32, stream: u64, k: u64) -> u64 {
    mix(mix(mix(mix(seed) ^ u64::from(d)) ^ stream) ^ k)
}

/// Uniform in [0, 1).
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Standard normal (Box–Muller) from one random word.
fn gauss(h: u64) -> f64 {
    let u1 = 1.0 - unit(h); // (0, 1]: ln stays finite
    let u2 = unit(mix(h));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Smooth value noise in [-1, 1]: random knots every `spacing` readings,
/// joined by smoothstep interpolation.
fn smooth(seed: u64, d: u32, stream: u64, i: u64, spacing: u64) -> f64 {
    let k = i / spacing;
    let t = (i % spacing) as f64 / spacing as f64;
    let a = 2.0 * unit(hash(seed, d, stream, k)) - 1.0;
    let b = 2.0 * unit(hash(seed, d, stream, k + 1)) - 1.0;
    let t = t * t * (3.0 - 2.0 * t);
    a + (b - a) * t
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The undisturbed values of device `d` at reading `i`, in [`Sensor::ALL`]
/// order (humidity, power, temperature, vibration).
pub fn base_values(seed: u64, d: u32, i: u64) -> [f64; 4] {
    let h = |stream, k| hash(seed, d, stream, k);

    let humidity = (50.0
        + 25.0 * smooth(seed, d, S_H_SLOW, i, 400)
        + 8.0 * smooth(seed, d, S_H_FAST, i, 53)
        + 0.3 * gauss(h(S_H_NOISE, i)))
    .clamp(0.0, 100.0);

    // Load steps: a level held for 240 readings, scaled per device.
    let level = match unit(h(S_P_LEVEL, i / 240)) {
        u if u < 0.3 => 40.0,
        u if u < 0.8 => 180.0,
        _ => 420.0,
    };
    let power =
        (level * (0.8 + 0.4 * unit(h(S_P_SCALE, 0))) + 3.0 * gauss(h(S_P_NOISE, i))).max(0.0);

    let phase = std::f64::consts::TAU * unit(h(S_T_PHASE, 0));
    let day = std::f64::consts::TAU * (i % DAY_READINGS) as f64 / DAY_READINGS as f64;
    let temperature = 18.0
        + 6.0 * unit(h(S_T_BASE, 0))
        + 3.0 * (day + phase).sin()
        + 2.5 * smooth(seed, d, S_T_DRIFT, i, 720)
        + 1.0 * smooth(seed, d, S_T_WOBBLE, i, 97)
        + 0.15 * gauss(h(S_T_NOISE, i));

    // A noise floor, and bursts of strong noise in 4% of 50-reading windows.
    let mut vibration = 0.2 + 0.1 * unit(h(S_V_BASE, 0)) + 0.03 * gauss(h(S_V_NOISE, i)).abs();
    if unit(h(S_V_BURST, i / 50)) < 0.04 {
        vibration += 2.5 * gauss(h(S_V_BURST_NOISE, i)).abs();
    }

    [
        round3(humidity),
        round3(power),
        round3(temperature),
        round3(vibration),
    ]
}

/// Whether anomaly number `n` of the config applies to device `d`.
pub fn anomaly_applies(seed: u64, n: usize, a: &AnomalySpec, d: u32) -> bool {
    match a.fraction {
        Some(f) => unit(hash(seed, d, S_ANOMALY + n as u64, 0)) < f,
        None => a.devices.contains(&d),
    }
}

/// What device `d` publishes at reading `i`, anomalies applied, in
/// [`Sensor::ALL`] order; `None` when a dropout suppresses the reading.
///
/// Anomalies apply in list order: a spike adds its magnitude, stuck
/// replaces the value by the *undisturbed* value at the anomaly's start,
/// and a dropout wins over everything.
pub fn values(cfg: &FleetConfig, d: u32, i: u64) -> Option<[f64; 4]> {
    let mut v = base_values(cfg.seed, d, i);
    for (n, a) in cfg.anomalies.iter().enumerate() {
        if !a.covers(i) || !anomaly_applies(cfg.seed, n, a, d) {
            continue;
        }
        if a.kind == AnomalyKind::Dropout {
            return None;
        }
        let frozen = (a.kind == AnomalyKind::Stuck).then(|| base_values(cfg.seed, d, a.start));
        for m in Sensor::ALL {
            if a.metric.is_some_and(|t| t != m) {
                continue;
            }
            let x = &mut v[m.index()];
            *x = match frozen {
                Some(f) => f[m.index()],
                None => round3(*x + a.magnitude.unwrap_or_else(|| m.default_spike())),
            };
        }
    }
    Some(v)
}

/// A padded reading is whatever its bytes decode to: one metric and a
/// size-dependent `pad` tag. `None` if the configured size cannot hold it
/// (validation rules that out).
fn padded_reading(cfg: &FleetConfig, d: u32, i: u64, v: &[f64; 4]) -> Option<TelemetryRecord> {
    let mut buf = bytes::BytesMut::new();
    crate::payload::encode_reading(&mut buf, cfg, ts_ms(cfg, i), i, v).ok()?;
    let dev = strata_protocol::telemetry::DeviceRef {
        tenant: cfg.tenant.clone(),
        device: device_name(&cfg.device_prefix, d),
    };
    strata_protocol::telemetry::decode_payload(&dev, &buf).ok()
}

/// Whether a dropout suppresses device `d`'s reading `i`.
pub fn is_dropped(cfg: &FleetConfig, d: u32, i: u64) -> bool {
    cfg.anomalies.iter().enumerate().any(|(n, a)| {
        a.kind == AnomalyKind::Dropout && a.covers(i) && anomaly_applies(cfg.seed, n, a, d)
    })
}

/// The full record device `d` publishes at reading `i` (`seq = i`), or
/// `None` for a dropped reading. Equal to what the protocol decoders yield
/// for the payload the simulator sends. Allocates; the publisher uses
/// [`values`] and [`crate::payload`] instead.
pub fn reading(cfg: &FleetConfig, d: u32, i: u64) -> Option<TelemetryRecord> {
    let v = values(cfg, d, i)?;
    if cfg.payload_bytes.is_some() {
        return padded_reading(cfg, d, i, &v);
    }
    Some(TelemetryRecord {
        tenant: cfg.tenant.clone(),
        device: device_name(&cfg.device_prefix, d),
        ts_ms: ts_ms(cfg, i),
        seq: Some(i),
        metrics: Sensor::ALL
            .iter()
            .map(|m| Metric {
                name: m.as_str().into(),
                value: v[m.index()],
            })
            .collect(),
        tags: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(seed: u64, anomalies: &[&str]) -> FleetConfig {
        FleetConfig {
            seed,
            devices: 100,
            endpoints: vec!["127.0.0.1:1".into()],
            start_ts_ms: Some(1_700_000_000_000),
            anomalies: anomalies.iter().map(|a| a.parse().unwrap()).collect(),
            ..FleetConfig::default()
        }
    }

    #[test]
    fn same_seed_same_readings_different_seed_different() {
        let (a, b, c) = (cfg(7, &[]), cfg(7, &[]), cfg(8, &[]));
        let mut differ = 0;
        for d in [0, 1, 99] {
            for i in [0, 1, 2, 500, 10_000] {
                assert_eq!(reading(&a, d, i), reading(&b, d, i));
                differ += usize::from(values(&a, d, i) != values(&c, d, i));
            }
        }
        assert_eq!(differ, 15, "a different seed must change every reading");
        assert_ne!(values(&a, 0, 3), values(&a, 1, 3), "devices differ");
        let r = reading(&a, 3, 10).unwrap();
        assert_eq!(
            (r.device.as_str(), r.seq, r.ts_ms),
            ("dev-3", Some(10), 1_700_000_010_000)
        );
        assert_eq!(r.metrics[2].name, "temperature");
    }

    #[test]
    fn models_stay_in_plausible_ranges() {
        let c = cfg(3, &[]);
        let (mut bursts, mut steps) = (0, std::collections::HashSet::new());
        for d in 0..20 {
            for i in 0..3000 {
                let [h, p, t, v] = values(&c, d, i).unwrap();
                assert!((0.0..=100.0).contains(&h), "humidity {h}");
                assert!((0.0..700.0).contains(&p), "power {p}");
                assert!((5.0..40.0).contains(&t), "temperature {t}");
                assert!((0.0..30.0).contains(&v), "vibration {v}");
                bursts += usize::from(v > 1.0);
                steps.insert((p / 100.0) as u32);
            }
        }
        assert!(bursts > 0, "no vibration bursts at all");
        assert!(steps.len() >= 3, "power never steps: {steps:?}");
    }

    #[test]
    fn spike_stuck_and_dropout_hit_exactly_their_window() {
        let base = cfg(11, &[]);
        let c = cfg(
            11,
            &[
                "spike:devices=2,start=10,duration=5,metric=temperature,magnitude=50",
                "stuck:devices=3,start=20,duration=4",
                "dropout:devices=4+5,start=30,duration=3",
            ],
        );
        for i in 0..60 {
            let (b2, a2) = (values(&base, 2, i).unwrap(), values(&c, 2, i).unwrap());
            let delta = a2[2] - b2[2];
            if (10..15).contains(&i) {
                assert!((delta - 50.0).abs() < 1e-6, "i={i} delta={delta}");
                assert_eq!(&a2[..2], &b2[..2], "other metrics untouched");
            } else {
                assert_eq!(a2, b2, "i={i}");
            }
            let a3 = values(&c, 3, i).unwrap();
            if (20..24).contains(&i) {
                assert_eq!(a3, base_values(11, 3, 20));
            } else {
                assert_eq!(a3, values(&base, 3, i).unwrap());
            }
            for d in [4, 5] {
                assert_eq!(reading(&c, d, i).is_none(), (30..33).contains(&i));
                assert_eq!(is_dropped(&c, d, i), (30..33).contains(&i));
            }
            assert!(!is_dropped(&c, 6, i));
        }
        // Stuck really is constant while the undisturbed signal moves.
        assert_ne!(base_values(11, 3, 20), base_values(11, 3, 23));
    }

    #[test]
    fn fraction_selects_about_that_share_deterministically() {
        let c = cfg(5, &["dropout:fraction=0.25,start=0,duration=1"]);
        let hit: Vec<u32> = (0..100).filter(|d| is_dropped(&c, *d, 0)).collect();
        assert!((10..=40).contains(&hit.len()), "{}", hit.len());
        let again: Vec<u32> = (0..100).filter(|d| is_dropped(&c, *d, 0)).collect();
        assert_eq!(hit, again);
    }

    proptest! {
        #[test]
        fn values_are_finite_and_pure(seed: u64, d in 0u32..100_000, i in 0u64..u64::MAX / 2) {
            let v = base_values(seed, d, i);
            prop_assert!(v.iter().all(|x| x.is_finite()));
            prop_assert_eq!(v, base_values(seed, d, i));
        }
    }
}
