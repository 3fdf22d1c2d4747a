//! The sample monitors from `monitors/`, built from source for wasm32 by
//! `monitors/build.sh` (run by `./scripts/test`), running in the real
//! wasmtime driver: each loads, takes its parameters, and alerts on the
//! anomaly it exists for — and only then.

use strata_protocol::{Metric, TelemetryRecord};

use super::conformance::config;
use super::{sha256_hex, KvState, SandboxDriver, WasmDriver, WasmDriverConfig};

fn module(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/monitors/wasm")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the sample monitors first (monitors/build.sh, run by ./scripts/test)",
            path.display()
        )
    })
}

/// `n` readings of one device: temperature around 21 with small seeded
/// noise, one reading per second, and `spike` added at index `at`.
fn readings(n: u64, at: Option<u64>, spike: f64) -> Vec<TelemetryRecord> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x % 1000) as f64 / 1000.0 - 0.5; // [-0.5, 0.5)
            let bump = if Some(i) == at { spike } else { 0.0 };
            TelemetryRecord {
                tenant: "acme".into(),
                device: "dev-7".into(),
                ts_ms: 1_700_000_000_000 + i as i64 * 1000,
                seq: Some(i),
                metrics: vec![Metric {
                    name: "temperature".into(),
                    value: 21.0 + noise * 0.4 + bump,
                }],
                tags: Vec::new(),
            }
        })
        .collect()
}

fn alert_codes(name: &str, params: &str, batches: &[Vec<TelemetryRecord>]) -> Vec<Vec<String>> {
    let driver = WasmDriver::new(WasmDriverConfig::default()).unwrap();
    let bytes = module(name);
    let prepared = driver.prepare(&sha256_hex(&bytes), &bytes).unwrap();
    let mut inst = driver
        .instantiate(&prepared, config(name, params, KvState::new()))
        .unwrap();
    batches
        .iter()
        .map(|b| {
            let out = inst.on_batch(b).unwrap();
            out.alerts.into_iter().map(|a| a.code).collect()
        })
        .collect()
}

#[test]
fn zscore_alerts_on_the_spike_and_not_before() {
    let all = readings(301, Some(300), 40.0);
    let (normal, spike) = all.split_at(300);
    let codes = alert_codes(
        "zscore",
        r#"{"metrics":["temperature"]}"#,
        &[normal.to_vec(), spike.to_vec()],
    );
    assert!(codes[0].is_empty(), "alerts on normal data: {:?}", codes[0]);
    assert!(
        codes[1].iter().any(|c| c == "zscore.anomaly"),
        "no anomaly alert on a +40 spike: {:?}",
        codes[1]
    );
}

#[test]
fn threshold_stuck_and_rate_monitors_run_in_the_sandbox() {
    let spiked = readings(60, Some(50), 40.0);
    let t = alert_codes(
        "threshold",
        r#"{"above":50.0}"#,
        std::slice::from_ref(&spiked),
    );
    assert!(t[0].iter().any(|c| c == "threshold.high"), "{t:?}");
    let r = alert_codes("rate", r#"{"max-rate":5.0}"#, &[spiked]);
    assert!(r[0].iter().any(|c| c == "rate.exceeded"), "{r:?}");
    let mut frozen = readings(30, None, 0.0);
    for rec in frozen.iter_mut().skip(10) {
        rec.metrics[0].value = 21.5;
    }
    let s = alert_codes("stuck", r#"{"count":10}"#, &[frozen]);
    assert!(s[0].iter().any(|c| c == "stuck.detected"), "{s:?}");
}

#[test]
fn bad_parameters_fail_init_with_a_clear_error() {
    let driver = WasmDriver::new(WasmDriverConfig::default()).unwrap();
    let bytes = module("rate");
    let prepared = driver.prepare(&sha256_hex(&bytes), &bytes).unwrap();
    // `max-rate` is required.
    let err = driver
        .instantiate(&prepared, config("rate", "{}", KvState::new()))
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("init"), "{err}");
}

/// A record of `device` carrying one metric `name`.
fn tagged(device: &str, name: &str) -> TelemetryRecord {
    TelemetryRecord {
        tenant: "acme".into(),
        device: device.into(),
        ts_ms: 1_700_000_000_000,
        seq: None,
        metrics: vec![Metric {
            name: name.into(),
            value: 1.0,
        }],
        tags: Vec::new(),
    }
}

/// The chaos monitor (a real Rust guest built with the SDK) panicking,
/// leaking and spinning: each ends only that instance, with its reason, and
/// a neighbour instance of the same module keeps working.
#[test]
fn a_misbehaving_rust_guest_faults_alone_with_its_reason() {
    let driver = WasmDriver::new(WasmDriverConfig::default()).unwrap();
    let bytes = module("chaos");
    let prepared = driver.prepare(&sha256_hex(&bytes), &bytes).unwrap();
    let params = r#"{"panic-on":"boom","leak-on":"hoard","spin-on":"forever"}"#;
    let mut calm = driver
        .instantiate(&prepared, config("calm", params, KvState::new()))
        .unwrap();
    for (trigger, want) in [
        ("boom", "trap"),
        ("hoard", "memory-limit"),
        ("forever", "fuel-exhausted"),
    ] {
        let mut bad = driver
            .instantiate(&prepared, config(trigger, params, KvState::new()))
            .unwrap();
        // Working until told otherwise.
        let ok = bad.on_batch(&[tagged("d1", "x")]).unwrap();
        assert_eq!(ok.metrics.len(), 1, "{trigger}");
        let batch: Vec<TelemetryRecord> = (0..64).map(|_| tagged("d1", trigger)).collect();
        let fault = bad.on_batch(&batch).unwrap_err();
        let label = fault.label();
        // A spin ends on fuel or, on a slow machine, on the wall clock.
        let matches = label == want || (want == "fuel-exhausted" && label == "timeout");
        assert!(matches, "{trigger}: got {label}: {fault}");
        // Dead stays dead, with the same reason.
        assert_eq!(bad.on_batch(&[tagged("d1", "x")]).unwrap_err(), fault);
        // The neighbour did not notice.
        let out = calm.on_batch(&[tagged("d2", "x")]).unwrap();
        assert_eq!(out.metrics.len(), 1, "neighbour after {trigger}");
    }
}
