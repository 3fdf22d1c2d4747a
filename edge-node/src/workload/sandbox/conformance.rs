//! The driver conformance suite: behaviour every [`SandboxDriver`] must
//! show, written once against `&dyn SandboxDriver` and run by each driver's
//! tests with that driver's own artifacts ([`Fixtures`]).
//!
//! Checks return `Err(message)` rather than panicking so this stays ordinary
//! library code; a driver's test calls [`run_all`] and unwraps.
//!
//! # The reference monitor
//! `Fixtures::reference` must behave like this (the wasm one is WAT in
//! `wasm_tests.rs`):
//! - `init(params)`: stores the params bytes under kv key `"params"`, returns 0.
//! - `on_batch(records)`: adds 1 to the little-endian u64 under kv key `"n"`
//!   (absent = 0), emits one warning alert (device `"d1"`, code `"seen"`,
//!   message `"batch"`) and one metric (device `"d1"`, name `"records"`,
//!   value = the number of records, for batches under 251 records), returns 0.

use std::collections::BTreeMap;

use strata_protocol::{Metric, TelemetryRecord};

use super::{
    sha256_hex, Cached, InstanceConfig, KvState, RuntimeError, RuntimeLimits, SandboxDriver,
    SandboxInstance, Severity,
};
use crate::workload::model::{Budget, InstanceKey};

/// Artifacts a driver supplies to the suite.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// The reference monitor (see the module docs).
    pub reference: Vec<u8>,
    /// Bytes that are not a module at all.
    pub not_a_module: Vec<u8>,
    /// A well-formed module lacking the required exports.
    pub missing_exports: Vec<u8>,
    /// The reference monitor, but reporting ABI version 2.
    pub wrong_abi_version: Vec<u8>,
}

/// A check's outcome: `Err` says what differed.
pub type Check = Result<(), String>;

/// One named check of the suite.
pub type NamedCheck = (&'static str, fn(&dyn SandboxDriver, &Fixtures) -> Check);

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Check {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// `n` records of one device, each with one metric.
pub fn sample_records(n: usize) -> Vec<TelemetryRecord> {
    (0..n)
        .map(|i| TelemetryRecord {
            tenant: "acme".into(),
            device: format!("dev-{i}"),
            ts_ms: 1_700_000_000_000 + i as i64,
            seq: Some(i as u64),
            metrics: vec![Metric {
                name: "temperature".into(),
                value: 20.0 + i as f64,
            }],
            tags: Vec::new(),
        })
        .collect()
}

/// A config with a default budget (16 MiB, 500 millicores).
pub fn config(name: &str, params: &str, state: KvState) -> InstanceConfig {
    InstanceConfig {
        key: InstanceKey::new("acme", name),
        params_json: params.to_owned(),
        budget: Budget::new(16, 500),
        state,
        limits: RuntimeLimits::default(),
    }
}

fn start(
    d: &dyn SandboxDriver,
    artifact: &[u8],
    cfg: InstanceConfig,
) -> Result<Box<dyn SandboxInstance>, String> {
    let m = d
        .prepare(&sha256_hex(artifact), artifact)
        .map_err(|e| format!("prepare: {e}"))?;
    d.instantiate(&m, cfg)
        .map_err(|e| format!("instantiate: {e}"))
}

fn counter(state: &KvState) -> Option<u64> {
    let v = state.get("n")?;
    Some(u64::from_le_bytes(v.as_slice().try_into().ok()?))
}

/// Preparing one hash twice compiles once; a wrong hash is refused.
pub fn prepare_caches_by_hash(d: &dyn SandboxDriver, fx: &Fixtures) -> Check {
    let h = sha256_hex(&fx.reference);
    let a = d.prepare(&h, &fx.reference).map_err(|e| e.to_string())?;
    let b = d.prepare(&h, &fx.reference).map_err(|e| e.to_string())?;
    ensure(a.same_compiled(&b), || "second prepare recompiled".into())?;
    ensure(a.sha256 == h && a.kind == d.kind(), || {
        format!("bad module identity {a:?}")
    })?;
    let wrong = sha256_hex(b"something else");
    match d.prepare(&wrong, &fx.reference) {
        Err(RuntimeError::HashMismatch { sha256, actual }) => {
            ensure(sha256 == wrong && actual == h, || {
                "mismatch names wrong hashes".into()
            })
        }
        other => Err(format!("wrong hash accepted: {other:?}")),
    }
}

/// `prepare_cached` never invents a module: a hash never prepared is a
/// miss; after `prepare` it is that compiled module, or a miss for drivers
/// without a cache.
pub fn prepare_cached_is_consistent(d: &dyn SandboxDriver, fx: &Fixtures) -> Check {
    let unseen = sha256_hex(b"never prepared by anyone");
    match d.prepare_cached(&unseen) {
        Cached::Miss => {}
        other => return Err(format!("unprepared hash: {other:?}")),
    }
    let h = sha256_hex(&fx.reference);
    let a = d.prepare(&h, &fx.reference).map_err(|e| e.to_string())?;
    match d.prepare_cached(&h) {
        Cached::Hit { module, .. } => {
            ensure(module.sha256 == h && module.same_compiled(&a), || {
                format!("cached module differs: {module:?}")
            })
        }
        Cached::Miss => Ok(()),
        other => Err(format!("just prepared: {other:?}")),
    }
}

/// `init` receives the params.
pub fn init_receives_params(d: &dyn SandboxDriver, fx: &Fixtures) -> Check {
    let params = r#"{"threshold":80.5}"#;
    let inst = start(d, &fx.reference, config("init", params, KvState::new()))?;
    let st = inst.state();
    ensure(
        st.get("params").map(Vec::as_slice) == Some(params.as_bytes()),
        || format!("params not seen by init: state {st:?}"),
    )
}

/// `on_batch` produces the reference monitor's alert and metric.
pub fn on_batch_emits(d: &dyn SandboxDriver, fx: &Fixtures) -> Check {
    let mut inst = start(d, &fx.reference, config("emit", "{}", KvState::new()))?;
    let out = inst
        .on_batch(&sample_records(3))
        .map_err(|f| f.to_string())?;
    ensure(out.alerts.len() == 1, || {
        format!("alerts: {:?}", out.alerts)
    })?;
    let a = &out.alerts[0];
    ensure(
        a.severity == Severity::Warning
            && a.device == "d1"
            && a.code == "seen"
            && a.message == "batch",
        || format!("alert: {a:?}"),
    )?;
    ensure(out.metrics.len() == 1, || {
        format!("metrics: {:?}", out.metrics)
    })?;
    let m = &out.metrics[0];
    ensure(
        m.device == "d1" && m.name == "records" && m.value == 3.0,
        || format!("metric: {m:?}"),
    )?;
    ensure(inst.fuel_consumed() >= out.fuel_used, || {
        "fuel total below batch fuel".into()
    })
}

/// The kv state exported from one instance restores into the next.
pub fn state_survives_restart(d: &dyn SandboxDriver, fx: &Fixtures) -> Check {
    let mut first = start(d, &fx.reference, config("kv", "{}", KvState::new()))?;
    for _ in 0..2 {
        first
            .on_batch(&sample_records(1))
            .map_err(|f| f.to_string())?;
    }
    let exported = first.state();
    ensure(counter(&exported) == Some(2), || {
        format!("state after 2 batches: {exported:?}")
    })?;
    drop(first);
    let mut second = start(d, &fx.reference, config("kv", "{}", exported))?;
    second
        .on_batch(&sample_records(1))
        .map_err(|f| f.to_string())?;
    let st = second.state();
    ensure(counter(&st) == Some(3), || {
        format!("state after restart + 1 batch: {st:?}")
    })
}

/// A resize applies in place; the instance keeps working and keeps its
/// state; a zero budget is refused.
pub fn resize_applies(d: &dyn SandboxDriver, fx: &Fixtures) -> Check {
    let mut inst = start(d, &fx.reference, config("resize", "{}", KvState::new()))?;
    inst.on_batch(&sample_records(1))
        .map_err(|f| f.to_string())?;
    inst.resize(Budget::new(32, 1000))
        .map_err(|e| e.to_string())?;
    inst.on_batch(&sample_records(2))
        .map_err(|f| f.to_string())?;
    inst.resize(Budget::new(16, 250))
        .map_err(|e| e.to_string())?;
    inst.on_batch(&sample_records(2))
        .map_err(|f| f.to_string())?;
    ensure(counter(&inst.state()) == Some(3), || {
        "state lost across resize".into()
    })?;
    ensure(inst.resize(Budget::new(0, 100)).is_err(), || {
        "zero memory accepted".into()
    })?;
    ensure(inst.usage().memory_bytes > 0, || {
        "usage reports no memory".into()
    })
}

/// Bad artifacts fail at prepare or instantiate with a clear error.
pub fn bad_artifacts_refused(d: &dyn SandboxDriver, fx: &Fixtures) -> Check {
    let h = sha256_hex(&fx.not_a_module);
    match d.prepare(&h, &fx.not_a_module) {
        Err(RuntimeError::InvalidArtifact { sha256, .. }) if sha256 == h => {}
        other => return Err(format!("not-a-module: {other:?}")),
    }
    match start(
        d,
        &fx.missing_exports,
        config("missing", "{}", KvState::new()),
    ) {
        Err(e) if e.contains("missing export") => {}
        Err(e) => return Err(format!("missing exports: unclear error {e}")),
        Ok(_) => return Err("missing exports accepted".into()),
    }
    match start(
        d,
        &fx.wrong_abi_version,
        config("abi", "{}", KvState::new()),
    ) {
        Err(e) if e.contains("ABI version 2") => Ok(()),
        Err(e) => Err(format!("wrong ABI: unclear error {e}")),
        Ok(_) => Err("wrong ABI version accepted".into()),
    }
}

/// Runs every check; returns each failure by name.
pub fn run_all(d: &dyn SandboxDriver, fx: &Fixtures) -> Result<(), BTreeMap<&'static str, String>> {
    let checks: [NamedCheck; 7] = [
        ("prepare_caches_by_hash", prepare_caches_by_hash),
        ("prepare_cached_is_consistent", prepare_cached_is_consistent),
        ("init_receives_params", init_receives_params),
        ("on_batch_emits", on_batch_emits),
        ("state_survives_restart", state_survives_restart),
        ("resize_applies", resize_applies),
        ("bad_artifacts_refused", bad_artifacts_refused),
    ];
    let failures: BTreeMap<_, _> = checks
        .iter()
        .filter_map(|(name, f)| f(d, fx).err().map(|e| (*name, e)))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}
