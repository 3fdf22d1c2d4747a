//! Test data: a copy of firmware-sim's pure sensor model
//! (`firmware_sim::model::base_values` and the spike rule of `values`), so
//! the detectors are tested against exactly what the simulator publishes
//! without building firmware-sim (tokio, MQTT) for this workspace.
//! Keep in step with firmware-sim/src/model.rs.
#![allow(dead_code)]

use strata_monitor_sdk::{Metric, TelemetryRecord};

/// Metric names in firmware-sim's `Sensor::ALL` order.
pub const SENSORS: [&str; 4] = ["humidity", "power", "temperature", "vibration"];
/// firmware-sim's `Sensor::default_spike`, same order.
pub const DEFAULT_SPIKE: [f64; 4] = [60.0, 2_000.0, 40.0, 20.0];
const DAY_READINGS: u64 = 1440;

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

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash(seed: u64, d: u32, stream: u64, k: u64) -> u64 {
    mix(mix(mix(mix(seed) ^ u64::from(d)) ^ stream) ^ k)
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn gauss(h: u64) -> f64 {
    let u1 = 1.0 - unit(h);
    let u2 = unit(mix(h));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

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

/// firmware-sim's undisturbed values of device `d` at reading `i`.
pub fn base_values(seed: u64, d: u32, i: u64) -> [f64; 4] {
    let h = |stream, k| hash(seed, d, stream, k);
    let humidity = (50.0
        + 25.0 * smooth(seed, d, S_H_SLOW, i, 400)
        + 8.0 * smooth(seed, d, S_H_FAST, i, 53)
        + 0.3 * gauss(h(S_H_NOISE, i)))
    .clamp(0.0, 100.0);
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

/// A spike as firmware-sim applies it: `magnitude` added to sensor
/// `sensor` for readings `start..start + duration`.
#[derive(Debug, Clone, Copy)]
pub struct Spike {
    pub start: u64,
    pub duration: u64,
    pub sensor: usize,
    pub magnitude: f64,
}

/// The record device `d` publishes at reading `i` (1 reading per second
/// from ts 0, as firmware-sim's default rate), with only the `sensors`
/// metrics (indices into [`SENSORS`]).
pub fn record(
    seed: u64,
    d: u32,
    i: u64,
    sensors: &[usize],
    spike: Option<Spike>,
) -> TelemetryRecord {
    let mut v = base_values(seed, d, i);
    if let Some(s) = spike {
        if (s.start..s.start + s.duration).contains(&i) {
            v[s.sensor] = round3(v[s.sensor] + s.magnitude);
        }
    }
    TelemetryRecord {
        tenant: "acme".into(),
        device: format!("dev-{d}"),
        ts_ms: i as i64 * 1000,
        seq: Some(i),
        metrics: sensors
            .iter()
            .map(|&k| Metric {
                name: SENSORS[k].into(),
                value: v[k],
            })
            .collect(),
        tags: Vec::new(),
    }
}
