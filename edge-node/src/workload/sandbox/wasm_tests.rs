//! Tests of the wasm driver: the conformance suite, then containment of
//! hostile guests written inline as WAT (no guest build needed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conformance::{self, config, sample_records, Fixtures};
use super::*;
use crate::workload::model::Budget;

/// Builds a monitor module from parts; unset parts are the reference
/// monitor's (see `conformance` module docs).
pub(super) struct Wat {
    abi: i32,
    alloc: &'static str,
    init: &'static str,
    batch: &'static str,
    extra: &'static str,
}

const ALLOC: &str = r#"
    (local $need i32)
    ;; pages needed so that [4096, 4096 + len) is inside memory
    (local.set $need (i32.sub
      (i32.div_u (i32.add (i32.add (local.get $len) (i32.const 4096)) (i32.const 65535)) (i32.const 65536))
      (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then unreachable))))
    (i32.const 4096)"#;

const INIT: &str = r#"
    (drop (call $kv_set (i32.const 64) (i32.const 6) (local.get $p) (local.get $l)))
    (call $log (i32.const 1) (i32.const 64) (i32.const 6))
    (i32.const 0)"#;

const BATCH: &str = r#"
    (i64.store (i32.const 128) (i64.const 0))
    (drop (call $kv_get (i32.const 80) (i32.const 1) (i32.const 128) (i32.const 8)))
    (i64.store (i32.const 128) (i64.add (i64.load (i32.const 128)) (i64.const 1)))
    (drop (call $kv_set (i32.const 80) (i32.const 1) (i32.const 128) (i32.const 8)))
    (call $alert (i32.const 1) (i32.const 0) (i32.const 2) (i32.const 16) (i32.const 4) (i32.const 32) (i32.const 5))
    ;; bincode varint: the first byte is the record count below 251
    (call $metric (i32.const 0) (i32.const 2) (i32.const 48) (i32.const 7)
      (f64.convert_i32_u (i32.load8_u (local.get $p))))
    (i32.const 0)"#;

impl Wat {
    pub(super) const fn reference() -> Self {
        Wat {
            abi: 1,
            alloc: ALLOC,
            init: INIT,
            batch: BATCH,
            extra: "",
        }
    }

    const fn batch(batch: &'static str) -> Self {
        Wat {
            batch,
            ..Wat::reference()
        }
    }

    pub(super) fn build(&self) -> Vec<u8> {
        format!(
            r#"(module
  (import "strata" "emit_alert" (func $alert (param i32 i32 i32 i32 i32 i32 i32)))
  (import "strata" "emit_metric" (func $metric (param i32 i32 i32 i32 f64)))
  (import "strata" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "strata" "kv_set" (func $kv_set (param i32 i32 i32 i32) (result i32)))
  (import "strata" "kv_delete" (func $kv_delete (param i32 i32)))
  (import "strata" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "d1")
  (data (i32.const 16) "seen")
  (data (i32.const 32) "batch")
  (data (i32.const 48) "records")
  (data (i32.const 64) "params")
  (data (i32.const 80) "n")
  (func (export "strata_abi_version") (result i32) (i32.const {abi}))
  (func (export "strata_alloc") (param $len i32) (result i32) {alloc})
  (func (export "strata_init") (param $p i32) (param $l i32) (result i32) {init})
  (func (export "strata_on_batch") (param $p i32) (param $l i32) (result i32) {batch})
  {extra}
)"#,
            abi = self.abi,
            alloc = self.alloc,
            init = self.init,
            batch = self.batch,
            extra = self.extra,
        )
        .into_bytes()
    }
}

pub(super) fn fixtures() -> Fixtures {
    Fixtures {
        reference: Wat::reference().build(),
        not_a_module: vec![0xde, 0xad, 0xbe, 0xef, 0xff, 0x00],
        missing_exports: b"(module (memory (export \"memory\") 1))".to_vec(),
        wrong_abi_version: Wat {
            abi: 2,
            ..Wat::reference()
        }
        .build(),
    }
}

fn driver() -> WasmDriver {
    WasmDriver::new(WasmDriverConfig::default()).unwrap()
}

fn start(d: &WasmDriver, wat: &Wat, name: &str) -> Result<Box<dyn SandboxInstance>, RuntimeError> {
    let bytes = wat.build();
    let m = d.prepare(&sha256_hex(&bytes), &bytes)?;
    d.instantiate(&m, config(name, "{}", KvState::new()))
}

/// A fresh reference instance in the same driver still works.
fn assert_driver_healthy(d: &WasmDriver) {
    let mut i = start(d, &Wat::reference(), "after").unwrap();
    let out = i.on_batch(&sample_records(2)).unwrap();
    assert_eq!(out.metrics[0].value, 2.0);
}

#[test]
fn conformance_suite_passes() {
    let d = driver();
    if let Err(failures) = conformance::run_all(&d, &fixtures()) {
        panic!("conformance failures: {failures:#?}");
    }
}

#[test]
fn init_output_arrives_with_first_batch() {
    let d = driver();
    let mut i = start(&d, &Wat::reference(), "logs").unwrap();
    let out = i.on_batch(&sample_records(1)).unwrap();
    assert_eq!(out.logs.len(), 1);
    assert_eq!(out.logs[0].message, "params");
    assert_eq!(out.logs[0].level, LogLevel::Info);
    assert!(out.fuel_used > 0);
    let out = i.on_batch(&sample_records(1)).unwrap();
    assert!(out.logs.is_empty());
}

const LOOP: &str = "(loop $l (br $l)) (i32.const 0)";
const BOMB: &str = "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i32.const 0)";
const UNREACHABLE: &str = "unreachable";
const FLOOD: &str = r#"(loop $l
      (call $alert (i32.const 0) (i32.const 0) (i32.const 2) (i32.const 16) (i32.const 4) (i32.const 32) (i32.const 5))
      (br $l)) (i32.const 0)"#;
const OOB_ALERT: &str = r#"(call $alert (i32.const 1) (i32.const 0x7fff0000) (i32.const 10)
      (i32.const 16) (i32.const 4) (i32.const 32) (i32.const 5)) (i32.const 0)"#;

/// Runs one hostile module; returns its fault after checking it is sticky
/// and came within a bounded time.
fn hostile_fault(d: &WasmDriver, wat: &Wat) -> InstanceFault {
    let mut i = start(d, wat, "hostile").unwrap();
    let t = Instant::now();
    let fault = i.on_batch(&sample_records(1)).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        i.on_batch(&sample_records(1)).unwrap_err(),
        fault,
        "fault not sticky"
    );
    assert!(i.resize(Budget::new(32, 500)).is_err());
    fault
}

#[test]
fn hostile_guests_are_contained_while_a_neighbour_runs() {
    let d = Arc::new(driver());
    // A healthy neighbour on another thread, sharing the engine and cache.
    let stop = Arc::new(AtomicBool::new(false));
    let mut healthy = start(&d, &Wat::reference(), "neighbour").unwrap();
    let neighbour = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut batches = 0u64;
            while !stop.load(Ordering::Relaxed) || batches == 0 {
                let out = healthy.on_batch(&sample_records(5)).unwrap();
                assert_eq!(out.alerts.len(), 1);
                batches += 1;
            }
            let n = healthy.state()["n"].clone();
            (batches, u64::from_le_bytes(n.try_into().unwrap()))
        })
    };

    let f = hostile_fault(&d, &Wat::batch(LOOP));
    assert!(
        matches!(
            f,
            InstanceFault::FuelExhausted { .. } | InstanceFault::Timeout { .. }
        ),
        "{f:?}"
    );
    assert_driver_healthy(&d);

    let f = hostile_fault(&d, &Wat::batch(BOMB));
    assert!(
        matches!(f, InstanceFault::MemoryLimit { limit_bytes, .. } if limit_bytes == 16 << 20),
        "{f:?}"
    );
    assert_driver_healthy(&d);

    let f = hostile_fault(&d, &Wat::batch(UNREACHABLE));
    assert!(
        matches!(&f, InstanceFault::Trap(m) if m.contains("unreachable")),
        "{f:?}"
    );
    assert_driver_healthy(&d);

    let f = hostile_fault(&d, &Wat::batch(FLOOD));
    assert_eq!(f, InstanceFault::AlertFlood { limit: 1000 });
    assert_driver_healthy(&d);

    let f = hostile_fault(&d, &Wat::batch(OOB_ALERT));
    assert!(
        matches!(&f, InstanceFault::AbiViolation(m) if m.contains("emit_alert device")),
        "{f:?}"
    );
    assert_driver_healthy(&d);

    stop.store(true, Ordering::Relaxed);
    let (batches, n) = neighbour.join().unwrap();
    assert_eq!(batches, n, "neighbour lost or repeated a batch");
}

#[test]
fn abi_violations_are_faults_not_panics() {
    let d = driver();
    let cases: [(&str, Wat); 6] = [
        (
            "severity 9",
            Wat::batch(
                r#"(call $alert (i32.const 9) (i32.const 0) (i32.const 2) (i32.const 16) (i32.const 4)
                  (i32.const 32) (i32.const 5)) (i32.const 0)"#,
            ),
        ),
        (
            "not finite",
            Wat::batch(
                r#"(call $metric (i32.const 0) (i32.const 2) (i32.const 48) (i32.const 7) (f64.const nan))
                  (i32.const 0)"#,
            ),
        ),
        (
            "kv_get out",
            Wat::batch(
                r#"(drop (call $kv_get (i32.const 80) (i32.const 1) (i32.const 65530) (i32.const 100)))
                  (i32.const 0)"#,
            ),
        ),
        (
            "kv_set value",
            Wat::batch(
                "(drop (call $kv_set (i32.const 80) (i32.const 1) (i32.const 0) (i32.const -1))) (i32.const 0)",
            ),
        ),
        (
            "not UTF-8",
            Wat {
                extra: r#"(data (i32.const 200) "\ff\fe")"#,
                ..Wat::batch(
                    r#"(call $metric (i32.const 200) (i32.const 2) (i32.const 48) (i32.const 7) (f64.const 1))
                      (i32.const 0)"#,
                )
            },
        ),
        (
            "strata_alloc result",
            Wat {
                alloc: "(i32.const -16)",
                ..Wat::reference()
            },
        ),
    ];
    for (want, wat) in cases {
        let r = start(&d, &wat, "abi").map(|mut i| {
            i.on_batch(&sample_records(1))
                .expect_err("violation accepted")
        });
        let fault = match r {
            Ok(f) => f,
            // A bad alloc breaks init already.
            Err(RuntimeError::Fault { fault, .. }) => fault,
            Err(e) => panic!("{want}: {e}"),
        };
        assert!(
            matches!(&fault, InstanceFault::AbiViolation(m) if m.contains(want)),
            "{want}: {fault:?}"
        );
    }
    assert_driver_healthy(&d);
}

#[test]
fn stack_overflow_and_batch_failure_are_faults() {
    let d = driver();
    let f = hostile_fault(
        &d,
        &Wat {
            extra: "(func $rec (call $rec))",
            ..Wat::batch("(call $rec) (i32.const 0)")
        },
    );
    assert!(
        matches!(&f, InstanceFault::Trap(m) if m.contains("stack")),
        "{f:?}"
    );
    let f = hostile_fault(&d, &Wat::batch("(i32.const 3)"));
    assert_eq!(f, InstanceFault::BatchFailed(3));
}

#[test]
fn init_failures_are_reported_with_the_instance() {
    let d = driver();
    for (init, want) in [
        ("(i32.const 7)", "init-failed"),
        ("(loop $l (br $l)) (i32.const 0)", "fuel-exhausted"),
    ] {
        let err = start(
            &d,
            &Wat {
                init,
                ..Wat::reference()
            },
            "bad-init",
        )
        .unwrap_err();
        match &err {
            RuntimeError::Fault {
                instance, fault, ..
            } => {
                assert_eq!(instance.to_string(), "acme/bad-init");
                assert!(
                    fault.label() == want
                        || (want == "fuel-exhausted" && fault.label() == "timeout"),
                    "{err}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn faulted_callback_rolls_back_its_kv_writes() {
    let d = driver();
    let wat = Wat::batch(
        "(drop (call $kv_set (i32.const 16) (i32.const 4) (i32.const 0) (i32.const 2))) unreachable",
    );
    let mut i = start(&d, &wat, "rollback").unwrap();
    assert!(i.on_batch(&sample_records(1)).is_err());
    let st = i.state();
    assert!(!st.contains_key("seen"), "{st:?}");
    assert_eq!(st["params"], b"{}");
}

#[test]
fn kv_quota_and_key_limit_return_minus_one() {
    let d = driver();
    // metric value = kv_set's return code.
    let wat = Wat::batch(
        r#"(call $metric (i32.const 0) (i32.const 2) (i32.const 48) (i32.const 7)
             (f64.convert_i32_s (call $kv_set (i32.const 80) (i32.const 1) (i32.const 0) (i32.const 65536))))
           (call $metric (i32.const 0) (i32.const 2) (i32.const 48) (i32.const 7)
             (f64.convert_i32_s (call $kv_set (i32.const 0) (i32.const 257) (i32.const 0) (i32.const 1))))
           (call $metric (i32.const 0) (i32.const 2) (i32.const 48) (i32.const 7)
             (f64.convert_i32_s (call $kv_set (i32.const 80) (i32.const 1) (i32.const 0) (i32.const 1000))))
           (i32.const 0)"#,
    );
    let mut i = start(&d, &wat, "quota").unwrap();
    let out = i.on_batch(&sample_records(1)).unwrap();
    let codes: Vec<f64> = out.metrics.iter().map(|m| m.value).collect();
    assert_eq!(codes, vec![-1.0, -1.0, 0.0]);
    assert_eq!(i.state()["n"].len(), 1000);
}

#[test]
fn log_lines_are_capped_and_counted() {
    let d = driver();
    // 200 lines of 2000 bytes each.
    let wat = Wat::batch(
        r#"(local $i i32)
           (loop $l
             (call $log (i32.const 2) (i32.const 0) (i32.const 2000))
             (local.set $i (i32.add (local.get $i) (i32.const 1)))
             (br_if $l (i32.lt_u (local.get $i) (i32.const 200))))
           (i32.const 0)"#,
    );
    let mut i = start(&d, &wat, "logs").unwrap();
    let out = i.on_batch(&sample_records(1)).unwrap();
    let batch_logs: Vec<_> = out
        .logs
        .iter()
        .filter(|l| l.level == LogLevel::Warn)
        .collect();
    assert_eq!(batch_logs.len(), 100);
    assert!(batch_logs.iter().all(|l| l.message.len() == 1024));
    assert_eq!(out.logs_dropped, 200, "100 over the count + 100 cut");
}

#[test]
fn resize_lets_memory_grow_in_place() {
    let d = driver();
    // Grows by 3 MiB, traps if refused.
    let wat = Wat::batch(
        "(if (i32.eq (memory.grow (i32.const 48)) (i32.const -1)) (then unreachable)) (i32.const 0)",
    );
    let bytes = wat.build();
    let m = d.prepare(&sha256_hex(&bytes), &bytes).unwrap();
    let small = |name| InstanceConfig {
        budget: Budget::new(2, 500),
        ..config(name, "{}", KvState::new())
    };
    let mut tight = d.instantiate(&m, small("tight")).unwrap();
    let f = tight.on_batch(&sample_records(1)).unwrap_err();
    assert!(
        matches!(f, InstanceFault::MemoryLimit { limit_bytes, .. } if limit_bytes == 2 << 20),
        "{f:?}"
    );

    let mut roomy = d.instantiate(&m, small("roomy")).unwrap();
    roomy.resize(Budget::new(8, 500)).unwrap();
    roomy.on_batch(&sample_records(1)).unwrap();
    assert!(roomy.usage().memory_bytes > 3 << 20);
    // Linear memory cannot shrink below what is in use.
    let err = roomy.resize(Budget::new(2, 500)).unwrap_err();
    assert!(err.to_string().contains("acme/roomy"), "{err}");
}

#[test]
fn initial_memory_above_budget_fails_instantiation() {
    let d = driver();
    let bytes = Wat::reference().build();
    let bytes = String::from_utf8(bytes)
        .unwrap()
        .replace(
            "(memory (export \"memory\") 1)",
            "(memory (export \"memory\") 64)",
        )
        .into_bytes();
    let m = d.prepare(&sha256_hex(&bytes), &bytes).unwrap();
    let cfg = InstanceConfig {
        budget: Budget::new(1, 500),
        ..config("big", "{}", KvState::new())
    };
    let err = d.instantiate(&m, cfg).unwrap_err();
    assert!(err.to_string().contains("acme/big"), "{err}");
}

#[test]
fn cache_is_bounded_and_reuses_compilations() {
    let d = WasmDriver::new(WasmDriverConfig {
        module_cache_entries: 2,
        ..WasmDriverConfig::default()
    })
    .unwrap();
    let mods: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            Wat {
                extra: ["", "(func)", "(func) (func)"][i],
                ..Wat::reference()
            }
            .build()
        })
        .collect();
    let first = d.prepare(&sha256_hex(&mods[0]), &mods[0]).unwrap();
    for m in &mods {
        d.prepare(&sha256_hex(m), m).unwrap();
    }
    assert_eq!(d.cached_modules(), 2);
    // mods[0] was least recently used and evicted: a new compilation.
    let again = d.prepare(&sha256_hex(&mods[0]), &mods[0]).unwrap();
    assert!(!first.same_compiled(&again));
    // Instances of an evicted handle still work.
    let mut i = d
        .instantiate(&first, config("old", "{}", KvState::new()))
        .unwrap();
    i.on_batch(&sample_records(1)).unwrap();
}

#[test]
fn invalid_configs_list_every_problem() {
    let d = driver();
    let bytes = Wat::reference().build();
    let m = d.prepare(&sha256_hex(&bytes), &bytes).unwrap();
    let cfg = InstanceConfig {
        budget: Budget::new(0, 0),
        limits: RuntimeLimits {
            fuel_per_core_ms: 0,
            ..RuntimeLimits::default()
        },
        ..config("cfg", "{}", KvState::new())
    };
    match d.instantiate(&m, cfg).unwrap_err() {
        RuntimeError::InvalidConfig { problems, .. } => {
            assert_eq!(problems.len(), 3, "{problems:?}")
        }
        e => panic!("{e}"),
    }
    assert!(WasmDriver::new(WasmDriverConfig {
        module_cache_entries: 0,
        epoch_tick_ms: 0,
        ..WasmDriverConfig::default()
    })
    .is_err());
}

#[test]
fn limits_scale_with_millicores() {
    let l = RuntimeLimits::default();
    assert_eq!(l.fuel_per_callback(1000), 100_000_000);
    assert_eq!(l.fuel_per_callback(250), 25_000_000);
    assert_eq!(l.deadline_ms(1000), 100);
    assert_eq!(l.deadline_ms(500), 200);
    assert_eq!(l.deadline_ms(50), 1000);
}

/// Cold start and dispatch cost; prints, asserts nothing timing-related.
/// `cargo test -p edge-node --lib workload::sandbox::wasm_tests::cold_start -- --ignored --nocapture`
#[test]
#[ignore]
fn cold_start_and_dispatch_measurement() {
    let d = driver();
    let bytes = Wat::batch("(i32.const 0)").build();
    let h = sha256_hex(&bytes);
    let t = Instant::now();
    let m = d.prepare(&h, &bytes).unwrap();
    let prepare = t.elapsed();
    let t = Instant::now();
    let _cached = d.prepare(&h, &bytes).unwrap();
    let prepare_cached = t.elapsed();
    const N: u32 = 200;
    let t = Instant::now();
    let mut insts: Vec<_> = (0..N)
        .map(|i| {
            d.instantiate(&m, config(&format!("i{i}"), "{}", KvState::new()))
                .unwrap()
        })
        .collect();
    let instantiate = t.elapsed() / N;
    let one = sample_records(1);
    let many = sample_records(1000);
    let inst = &mut insts[0];
    let t = Instant::now();
    for _ in 0..1000 {
        inst.on_batch(&one).unwrap();
    }
    let per_call = t.elapsed() / 1000;
    let t = Instant::now();
    for _ in 0..20 {
        inst.on_batch(&many).unwrap();
    }
    let per_record = t.elapsed() / 20_000;
    println!(
        "prepare (compile) {prepare:?}; prepare (cached) {prepare_cached:?}; \
         instantiate+init {instantiate:?} (avg of {N}); on_batch(1 record) {per_call:?}; \
         per record in 1000-record batches {per_record:?}"
    );
}
