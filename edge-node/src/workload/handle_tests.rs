//! The workload host end to end inside one process: the real driver and
//! wasmtime sandbox, the real spool on a temp dir, the sample monitors from
//! `monitors/` and hostile modules written inline as WAT.

use std::path::Path;
use std::time::{Duration, Instant};

use strata_protocol::monitoring::{InstanceStatus, NodeResources};
use strata_protocol::scheduling::{AllocId, EdgeAllocation};
use strata_protocol::workload::{
    ArtifactRef, DeviceSelector, MonitorSpec, Placement, Resources, RestartMode, RestartPolicy,
    RuntimeKind,
};
use strata_protocol::{Metric, SpoolEntry, TelemetryRecord};

use super::*;
use crate::spool::{Spool, SpoolConfig};
use crate::uplink::{AssignmentTarget, AssignmentUpdate};
use crate::workload::sandbox::sha256_hex;

const WAIT: Duration = Duration::from_secs(10);

const ALLOC: &str = r#"
    (local $need i32)
    (local.set $need (i32.sub
      (i32.div_u (i32.add (i32.add (local.get $len) (i32.const 4096)) (i32.const 65535)) (i32.const 65536))
      (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then unreachable))))
    (i32.const 4096)"#;

/// Counts its batches in kv key `n` and emits the count as metric `batches`.
pub(super) const COUNTER: &str = r#"
    (i64.store (i32.const 128) (i64.const 0))
    (drop (call $kv_get (i32.const 80) (i32.const 1) (i32.const 128) (i32.const 8)))
    (i64.store (i32.const 128) (i64.add (i64.load (i32.const 128)) (i64.const 1)))
    (drop (call $kv_set (i32.const 80) (i32.const 1) (i32.const 128) (i32.const 8)))
    (call $metric (i32.const 0) (i32.const 2) (i32.const 48) (i32.const 7)
      (f64.convert_i64_u (i64.load (i32.const 128))))
    (i32.const 0)"#;
const LOOP: &str = "(loop $l (br $l)) (i32.const 0)";
const TRAP: &str = "unreachable";
/// Burns a few tens of ms of CPU per batch, then succeeds.
const SLOW: &str = r#"
    (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 4000000))))
    (i32.const 0)"#;

pub(super) fn wat(batch: &str) -> Vec<u8> {
    format!(
        r#"(module
  (import "strata" "emit_metric" (func $metric (param i32 i32 i32 i32 f64)))
  (import "strata" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "strata" "kv_set" (func $kv_set (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "d1")
  (data (i32.const 48) "batches")
  (data (i32.const 80) "n")
  (func (export "strata_abi_version") (result i32) (i32.const 1))
  (func (export "strata_alloc") (param $len i32) (result i32) {ALLOC})
  (func (export "strata_init") (param $p i32) (param $l i32) (result i32) (i32.const 0))
  (func (export "strata_on_batch") (param $p i32) (param $l i32) (result i32) {batch})
)"#
    )
    .into_bytes()
}

/// A sample monitor built by `monitors/build.sh`, or `None` (and a note)
/// when it has not been built.
pub(super) fn sample_module(name: &str) -> Option<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/monitors/wasm")
        .join(format!("{name}.wasm"));
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!(
                "SKIPPED: {}: {e}; build the sample monitors first (monitors/build.sh)",
                path.display()
            );
            None
        }
    }
}

pub(super) fn spec(
    tenant: &str,
    name: &str,
    module: &[u8],
    globs: &[&str],
    params: &str,
) -> MonitorSpec {
    MonitorSpec {
        name: name.into(),
        tenant: tenant.into(),
        runtime: RuntimeKind::Wasm,
        artifact: ArtifactRef {
            sha256: sha256_hex(module),
            size_bytes: module.len() as u64,
        },
        selector: DeviceSelector {
            tenant: tenant.into(),
            device_globs: globs.iter().map(|g| g.to_string()).collect(),
            tags: Default::default(),
        },
        params: params.into(),
        resources: Resources {
            memory_mib: 16,
            cpu_millicores: 100,
            min_memory_mib: None,
            max_memory_mib: None,
            min_cpu_millicores: None,
            max_cpu_millicores: None,
        },
        priority: 50,
        restart: RestartPolicy {
            mode: RestartMode::OnFailure,
            initial_backoff_ms: 20,
            max_backoff_ms: 100,
        },
        target: Placement::Node("edge-t".into()),
        generation: 1,
        placement: Default::default(),
    }
}

pub(super) fn key(tenant: &str, name: &str) -> InstanceKey {
    InstanceKey::new(tenant, name)
}

pub(super) fn test_cfg() -> WorkloadConfig {
    WorkloadConfig {
        worker_threads: 2,
        sample_interval_ms: 100,
        state_flush_interval_ms: 100,
        ..WorkloadConfig::default()
    }
}

pub(super) async fn open(dir: &Path, cfg: WorkloadConfig) -> (Spool, WorkloadHost) {
    let spool = Spool::open_std(SpoolConfig {
        dir: dir.join("spool"),
        ..SpoolConfig::default()
    })
    .await
    .unwrap();
    let host = WorkloadHost::start(HostOptions {
        edge: "edge-t".into(),
        dir: dir.join("monitors"),
        cfg,
        spool: spool.clone(),
        sampler: Box::new(|_| NodeResources {
            cpu_total_millicores: 2000,
            memory_total_bytes: 1 << 30,
            ..NodeResources::default()
        }),
        metrics: WorkloadMetrics::default(),
    })
    .await
    .unwrap();
    (spool, host)
}

/// Applies a full assignment set as the uplink would (from a blocking thread).
pub(super) async fn assign(
    host: &WorkloadHost,
    version: u64,
    monitors: Vec<MonitorSpec>,
    modules: &[&[u8]],
) {
    let h = host.clone();
    let artifacts = modules
        .iter()
        .map(|m| (sha256_hex(m), m.to_vec()))
        .collect();
    // As the region sends them: one allocation per spec, whose fence stays
    // while the generation does (so an unchanged spec keeps running).
    let allocations = monitors
        .into_iter()
        .map(|spec| EdgeAllocation {
            id: AllocId(
                spec.name
                    .bytes()
                    .chain(spec.tenant.bytes())
                    .fold(7u128, |h, b| h.wrapping_mul(31).wrapping_add(u128::from(b))),
            ),
            fencing_token: spec.generation,
            slot: 0,
            replace_after_ms: None,
            previous: None,
            checkpoint: None,
            spec,
        })
        .collect();
    apply_allocations(&h, version, allocations, artifacts).await;
}

/// Applies `allocations` (with the modules they need) as the uplink would:
/// from a blocking thread, with a granted lease.
pub(super) async fn apply_allocations(
    host: &WorkloadHost,
    version: u64,
    allocations: Vec<EdgeAllocation>,
    artifacts: Vec<(String, Vec<u8>)>,
) {
    let h = host.clone();
    let v = tokio::task::spawn_blocking(move || {
        h.apply(AssignmentUpdate {
            version,
            allocations,
            artifacts,
            requested_at: std::time::Instant::now(),
            lease_granted: true,
        })
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(v, version);
}

pub(super) fn status(host: &WorkloadHost, tenant: &str, name: &str) -> InstanceStatus {
    host.instance(&key(tenant, name))
        .unwrap_or_else(|| panic!("{tenant}/{name} not desired: {:#?}", host.status()))
}

pub(super) async fn wait(host: &WorkloadHost, what: &str, cond: impl FnMut(&WorkloadHost) -> bool) {
    if !host.wait_until(WAIT, cond).await {
        panic!("timed out waiting for {what}: {:#?}", host.status());
    }
}

pub(super) fn running(host: &WorkloadHost, tenant: &str, name: &str) -> bool {
    host.instance(&key(tenant, name))
        .is_some_and(|i| i.state == "running")
}

pub(super) fn readings(
    tenant: &str,
    device: &str,
    n: u64,
    spike_at: Option<u64>,
) -> Vec<TelemetryRecord> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x % 1000) as f64 / 1000.0 - 0.5;
            let bump = if Some(i) == spike_at { 40.0 } else { 0.0 };
            TelemetryRecord {
                tenant: tenant.into(),
                device: device.into(),
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

/// Every durable entry in the spool so far, and the sequence number the
/// next durable one will have.
pub(super) fn entries_and_next(spool: &Spool) -> (Vec<SpoolEntry>, u64) {
    let recs = spool.read(0, 1_000_000, usize::MAX).unwrap();
    let next = recs.last().map_or(1, |(seq, _)| seq + 1);
    let entries = recs
        .into_iter()
        .map(|(_, b)| {
            bincode::decode_from_slice::<SpoolEntry, _>(&b, bincode::config::standard())
                .unwrap()
                .0
        })
        .collect();
    (entries, next)
}

/// Waits (on the spool's durable sequence, not by sleeping) until `pred`
/// holds for the spooled entries.
pub(super) async fn wait_spool(
    spool: &Spool,
    what: &str,
    pred: impl Fn(&[SpoolEntry]) -> bool,
) -> Vec<SpoolEntry> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // Wait for the record after the last one read, not for
        // `stats().next_seq`: that counts appends still being fsynced, and
        // waiting past it would miss entries that became durable meanwhile.
        let (e, next) = entries_and_next(spool);
        if pred(&e) {
            return e;
        }
        if tokio::time::timeout_at(deadline, spool.wait_for(next))
            .await
            .is_err()
        {
            panic!("timed out waiting for {what} in the spool: {e:#?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zscore_alert_on_a_spike_is_spooled_for_its_tenant_only() {
    let Some(zscore) = sample_module("zscore") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (spool, host) = open(dir.path(), test_cfg()).await;
    let params = r#"{"metrics":["temperature"]}"#;
    assign(
        &host,
        1,
        vec![spec("acme", "z", &zscore, &["dev-*"], params)],
        &[&zscore],
    )
    .await;
    wait(&host, "z running", |h| running(h, "acme", "z")).await;

    // Another tenant's device with the same id sends the same spike: it
    // must neither reach the instance nor produce an alert.
    let other = readings("globex", "dev-7", 301, Some(300));
    assert_eq!(host.route(&other).queued, 0);
    let all = readings("acme", "dev-7", 301, Some(300));
    let (normal, spike) = all.split_at(300);
    host.route(normal);
    host.route(spike);
    wait(&host, "the alert", |h| status(h, "acme", "z").alerts >= 1).await;
    let e = wait_spool(&spool, "an alert", |e| {
        e.iter().any(|x| x.as_alert().is_some())
    })
    .await;
    let alerts: Vec<_> = e.iter().filter_map(SpoolEntry::as_alert).collect();
    assert!(!alerts.is_empty());
    for a in &alerts {
        assert_eq!(
            (a.tenant.as_str(), a.monitor.as_str(), a.edge.as_str()),
            ("acme", "z", "edge-t")
        );
        assert_eq!(a.device, "dev-7");
        assert_eq!(a.code, "zscore.anomaly");
        assert!(a.ts_ms > 1_600_000_000_000, "stamped with the edge's clock");
    }
    let st = status(&host, "acme", "z");
    assert_eq!(st.records_in, 301, "{st:#?}");
    assert_eq!(st.records_dropped, 0);
    host.shutdown().await;
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_instances_restart_with_backoff_while_a_neighbour_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_cfg();
    // Keep the fuel budget small so the loop dies fast.
    cfg.limits.callback_budget_ms = 20;
    let (spool, host) = open(dir.path(), cfg).await;
    let (good, looping, trap) = (wat(COUNTER), wat(LOOP), wat(TRAP));
    assign(
        &host,
        1,
        vec![
            spec("acme", "good", &good, &["*"], "{}"),
            spec("acme", "loop", &looping, &["*"], "{}"),
            spec("acme", "trap", &trap, &["*"], "{}"),
        ],
        &[&good, &looping, &trap],
    )
    .await;
    wait(&host, "all running", |h| {
        ["good", "loop", "trap"]
            .iter()
            .all(|n| running(h, "acme", n))
    })
    .await;
    for round in 1..=3u64 {
        let recs = readings("acme", "dev-1", 5, None);
        host.route(&recs);
        // Each hostile instance faults on the batch, backs off and comes
        // back; the neighbour processes every record meanwhile.
        wait(&host, &format!("round {round}"), |h| {
            ["loop", "trap"].iter().all(|n| {
                status(h, "acme", n).restarts >= round && h.starts(&key("acme", n)) > round
            }) && status(h, "acme", "good").records_in == 5 * round
        })
        .await;
    }
    let l = status(&host, "acme", "loop");
    assert!(
        l.reason.as_deref().unwrap_or("").contains("fuel")
            || l.reason.as_deref().unwrap_or("").contains("timeout")
            || l.reason.as_deref().unwrap_or("").contains("time budget"),
        "{l:#?}"
    );
    let t = status(&host, "acme", "trap");
    assert!(
        t.reason.as_deref().unwrap_or("").contains("unreachable"),
        "{t:#?}"
    );
    assert!(
        t.last_event.as_deref().unwrap_or("").starts_with("started")
            || t.last_event.as_deref().unwrap_or("").starts_with("fault"),
        "{t:#?}"
    );
    let g = status(&host, "acme", "good");
    assert_eq!((g.state.as_str(), g.restarts), ("running", 0), "{g:#?}");
    assert_eq!(g.records_dropped, 0);
    // The neighbour's derived metrics kept flowing into the spool.
    wait_spool(&spool, "3 metrics of the good instance", |e| {
        e.iter()
            .filter(|x| x.as_metric().is_some_and(|m| m.monitor == "good"))
            .count()
            >= 3
    })
    .await;
    host.shutdown().await;
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_instance_overflows_its_queue_without_slowing_routing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_cfg();
    cfg.queue_records = 8;
    cfg.max_batch_records = 1;
    // Generous per-callback limits: the point is slowness, not a fault.
    cfg.limits.callback_budget_ms = 2000;
    cfg.limits.max_deadline_ms = 5000;
    let (spool, host) = open(dir.path(), cfg).await;
    let slow = wat(SLOW);
    let mut s = spec("acme", "slow", &slow, &["*"], "{}");
    s.resources.cpu_millicores = 1000;
    assign(&host, 1, vec![s], &[&slow]).await;
    wait(&host, "slow running", |h| running(h, "acme", "slow")).await;

    let total = 200u64;
    let started = Instant::now();
    let mut longest_route = Duration::ZERO;
    let mut routed = 0;
    let mut dropped = 0;
    for _ in 0..total / 10 {
        let recs = readings("acme", "dev-1", 10, None);
        let t = Instant::now();
        let st = host.route(&recs);
        longest_route = longest_route.max(t.elapsed());
        routed += st.queued;
        dropped += st.dropped;
    }
    // Routing never waited for the instance: when the last route call
    // returned, records it had queued were still unprocessed (each callback
    // spins for millions of instructions). A route that waited for a queue
    // slot would have let the instance consume everything it queued.
    let consumed_when_routing_ended = status(&host, "acme", "slow").records_in;
    wait(&host, "the queue to drain", |h| {
        let s = status(h, "acme", "slow");
        s.records_in + s.records_dropped == total
    })
    .await;
    let s = status(&host, "acme", "slow");
    let per_callback = started.elapsed() / s.records_in.max(1) as u32;
    eprintln!(
        "slow instance: {s:?}; longest route {longest_route:?}, per callback {per_callback:?}"
    );
    assert!(s.records_dropped > 0, "{s:#?}");
    assert_eq!(s.records_dropped, dropped, "{s:#?}");
    let counter = host
        .metrics()
        .dropped
        .get_or_create(&super::metrics::InstanceLabels {
            tenant: "acme".into(),
            monitor: "slow".into(),
        })
        .get();
    assert_eq!(counter, dropped);
    assert_eq!(s.records_in, routed, "every queued record was delivered");
    assert!(
        consumed_when_routing_ended < routed,
        "routing waited for the instance: it had consumed {consumed_when_routing_ended} of \
         {routed} queued records when routing ended"
    );
    assert_eq!(s.state, "running", "slow is not faulty: {s:#?}");
    host.shutdown().await;
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_hub_resumes_state_and_reconciles_by_generation() {
    let dir = tempfile::tempdir().unwrap();
    let (a_mod, b_mod) = (wat(COUNTER), wat(&format!("{COUNTER}\n(nop)")));
    let a = spec("acme", "a", &a_mod, &["dev-*"], "{}");
    let b = spec("acme", "b", &b_mod, &["dev-*"], "{}");
    {
        let (spool, host) = open(dir.path(), test_cfg()).await;
        assign(&host, 1, vec![a.clone(), b.clone()], &[&a_mod, &b_mod]).await;
        wait(&host, "both running", |h| {
            running(h, "acme", "a") && running(h, "acme", "b")
        })
        .await;
        for _ in 0..2 {
            let n = status(&host, "acme", "a").records_in + 1;
            host.route(&readings("acme", "dev-1", 1, None));
            wait(&host, "a batch", |h| status(h, "acme", "a").records_in >= n).await;
        }
        host.shutdown().await;
        spool.close().await;
    }

    // Reboot with no hub: the persisted set runs again within 5 s.
    let t0 = Instant::now();
    let (spool, host) = open(dir.path(), test_cfg()).await;
    wait(&host, "both running after reboot", |h| {
        running(h, "acme", "a") && running(h, "acme", "b")
    })
    .await;
    let cold = t0.elapsed();
    assert!(cold < Duration::from_secs(5), "took {cold:?}");
    assert_eq!(host.applied_version(), 1);
    assert_eq!(host.starts(&key("acme", "a")), 1);
    // The kv counter continued where it stopped: third batch overall.
    host.route(&readings("acme", "dev-1", 1, None));
    wait_spool(&spool, "a's third batch metric", |e| {
        e.iter().any(|x| {
            x.as_metric()
                .is_some_and(|m| m.monitor == "a" && m.value == 3.0)
        })
    })
    .await;

    // The hub comes back with the same generations: nothing restarts.
    assign(&host, 2, vec![a.clone(), b.clone()], &[]).await;
    wait(&host, "reconcile to 2", |h| h.reconciled_version() == 2).await;
    assert_eq!(host.starts(&key("acme", "a")), 1);
    assert_eq!(host.starts(&key("acme", "b")), 1);
    assert!(running(&host, "acme", "a") && running(&host, "acme", "b"));

    // A new generation of `a` restarts `a` only.
    let mut a2 = a.clone();
    a2.generation = 2;
    assign(&host, 3, vec![a2, b.clone()], &[]).await;
    wait(&host, "a generation 2 running", |h| {
        h.reconciled_version() == 3
            && h.starts(&key("acme", "a")) == 2
            && status(h, "acme", "a").generation == 2
            && running(h, "acme", "a")
    })
    .await;
    assert_eq!(host.starts(&key("acme", "b")), 1);
    assert!(running(&host, "acme", "b"));

    // Removing `b` stops it and drops its persisted state.
    assign(&host, 4, vec![status_spec(&a, 2)], &[]).await;
    wait(&host, "b removed", |h| {
        h.reconciled_version() == 4 && h.instance(&key("acme", "b")).is_none()
    })
    .await;
    assert!(!dir.path().join("monitors/state/acme@b.kv").exists());
    assert_eq!(host.starts(&key("acme", "a")), 2);
    host.shutdown().await;
    spool.close().await;
}

fn status_spec(s: &MonitorSpec, generation: u64) -> MonitorSpec {
    MonitorSpec {
        generation,
        ..s.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_persisted_files_are_reported_and_refetched() {
    let dir = tempfile::tempdir().unwrap();
    let m = wat(COUNTER);
    let sha = sha256_hex(&m);
    {
        let (spool, host) = open(dir.path(), test_cfg()).await;
        assign(&host, 5, vec![spec("acme", "a", &m, &["*"], "{}")], &[&m]).await;
        wait(&host, "a running", |h| running(h, "acme", "a")).await;
        host.shutdown().await;
        spool.close().await;
    }
    // The module rots on disk.
    std::fs::write(
        dir.path().join(format!("monitors/artifacts/{sha}.wasm")),
        b"garbage",
    )
    .unwrap();
    let (spool, host) = open(dir.path(), test_cfg()).await;
    // Not fatal: the host runs, reports version 0 so the uplink fetches
    // the set again, and asks for the module.
    assert_eq!(host.applied_version(), 0);
    assert!(!host.has_artifact(&sha));
    assert_eq!(host.metrics().corrupt_files.get(), 1);
    wait(&host, "a waiting for its module", |h| {
        h.instance(&key("acme", "a")).is_some_and(|i| {
            i.state == "pending"
                && i.reason
                    .as_deref()
                    .unwrap_or("")
                    .contains("waiting for module")
        })
    })
    .await;
    assign(&host, 5, vec![spec("acme", "a", &m, &["*"], "{}")], &[&m]).await;
    assert_eq!(host.applied_version(), 5);
    // It was in backoff for the missing module; it comes back by itself.
    wait(&host, "a running again", |h| running(h, "acme", "a")).await;
    host.shutdown().await;
    spool.close().await;

    // A torn assignments file: the host starts empty instead of failing.
    std::fs::write(
        dir.path().join("monitors/assignments.json"),
        b"{\"version\": 5, \"moni",
    )
    .unwrap();
    let (spool, host) = open(dir.path(), test_cfg()).await;
    assert_eq!(host.applied_version(), 0);
    assert_eq!(host.metrics().corrupt_files.get(), 1);
    assert!(host.status().instances.is_empty());
    host.shutdown().await;
    spool.close().await;
}

/// Not a pass/fail test: numbers for BENCHMARKS.md. Run with
/// `cargo test -p edge-node --release --lib dispatch_measurement -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn dispatch_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_cfg();
    cfg.worker_threads = 0;
    cfg.memory_mib = 100_000;
    cfg.cpu_millicores = 100_000;
    let (spool, host) = open(dir.path(), cfg).await;
    let noop = wat("(i32.const 0)");
    let n_inst = 100usize;
    let specs: Vec<_> = (0..n_inst)
        .map(|i| {
            let mut s = spec(
                "acme",
                &format!("m{i}"),
                &noop,
                &[&format!("dev-{i}-*")],
                "{}",
            );
            s.resources.memory_mib = 1;
            s.resources.cpu_millicores = 100;
            s
        })
        .collect();
    let t0 = Instant::now();
    assign(&host, 1, specs, &[&noop]).await;
    wait(&host, "all running", |h| {
        let s = h.status();
        s.instances.len() == n_inst && s.instances.iter().all(|i| i.state == "running")
    })
    .await;
    let cold = t0.elapsed();
    let total = 200_000usize;
    let batches: Vec<Vec<TelemetryRecord>> = (0..total / 1000)
        .map(|b| {
            (0..1000)
                .map(|j| {
                    let mut r = readings("acme", "x", 1, None).remove(0);
                    r.device = format!("dev-{}-{}", (b * 1000 + j) % n_inst, j % 10);
                    r
                })
                .collect()
        })
        .collect();
    let t1 = Instant::now();
    let mut route_time = Duration::ZERO;
    for b in &batches {
        let t = Instant::now();
        host.route(b);
        route_time += t.elapsed();
    }
    wait(&host, "all processed", |h| {
        let s = h.status();
        s.instances
            .iter()
            .map(|i| i.records_in + i.records_dropped)
            .sum::<u64>()
            == total as u64
    })
    .await;
    let e2e = t1.elapsed();
    let dropped: u64 = host
        .status()
        .instances
        .iter()
        .map(|i| i.records_dropped)
        .sum();
    eprintln!(
        "{n_inst} instances started in {cold:?} ({:?} each); routing {:.0} ns/record; \
         end to end {:.0} records/s ({dropped} dropped)",
        cold / n_inst as u32,
        route_time.as_nanos() as f64 / total as f64,
        total as f64 / e2e.as_secs_f64(),
    );
    host.shutdown().await;
    spool.close().await;
}
