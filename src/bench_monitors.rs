//! `strata bench-monitors`: the device-monitor numbers of BENCHMARKS.md,
//! measured on this machine with the real runtime, host and binary.
//!
//! 1. **Cold start**: compiling a sample module (wasmtime, uncached), and
//!    instantiating it plus running its `init` from the cache.
//! 2. **Dispatch overhead**: `WorkloadHost::route` (selector match, bounded
//!    enqueue) per record and instance, and the end-to-end rate at which
//!    instances consume what was routed, for 1, 10 and 100 instances that
//!    each watch every device.
//! 3. **Instances per edge at a telemetry rate**: z-score instances that each
//!    watch every device (the worst case: every record fans out to every
//!    instance), fed `--rate` records/s for `--step`; the count doubles until
//!    an instance drops records or the backlog left when the feed stops
//!    takes more than 250 ms to drain. Reports the largest count that kept
//!    up and the memory it took.
//! 4. **The edge binary**: its size on disk and its resident memory, idle
//!    with no monitor and with 100 persisted monitors running (no hub
//!    reachable), against KubeEdge EdgeCore's published ~70 MB footprint.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use edge_node::spool::{Spool, SpoolConfig};
use edge_node::uplink::{AssignmentTarget, AssignmentUpdate};
use edge_node::workload::sandbox::{
    sha256_hex, InstanceConfig, KvState, RuntimeLimits, SandboxDriver, WasmDriver, WasmDriverConfig,
};
use edge_node::workload::{
    Assignments, Budget, HostOptions, InstanceKey, WorkloadConfig, WorkloadHost, WorkloadMetrics,
    WorkloadStore,
};
use firmware_sim::parse_duration;
use serde_json::json;
use strata_protocol::scheduling::{AllocId, EdgeAllocation};
use strata_protocol::workload::{
    ArtifactRef, DeviceSelector, MonitorSpec, Placement, Resources, RestartPolicy, RuntimeKind,
};
use strata_protocol::{Metric, TelemetryRecord};

/// `strata bench-monitors` options.
#[derive(Debug, Clone, clap::Args)]
pub struct MonitorBenchArgs {
    /// Telemetry rate for the instances-per-edge search, records/s.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Devices sending that telemetry (round robin).
    #[arg(long, default_value_t = 1000)]
    pub devices: u32,
    /// Length of each step of the instances-per-edge search (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub step: Duration,
    /// Largest instance count the search tries.
    #[arg(long, default_value_t = 1600)]
    pub max_instances: usize,
    /// Directory holding the built sample monitors
    /// [default: `target/monitors/wasm`, next to this binary's directory].
    #[arg(long)]
    pub modules: Option<PathBuf>,
    /// Skip the edge-node process measurements (size and RSS).
    #[arg(long)]
    pub skip_process: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// Runs every measurement and prints a Markdown summary.
pub async fn bench_monitors(args: MonitorBenchArgs) -> anyhow::Result<()> {
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("binary has no directory")?
        .to_path_buf();
    let modules = match &args.modules {
        Some(p) => p.clone(),
        None => exe_dir
            .parent()
            .context("binary directory has no parent")?
            .join("monitors/wasm"),
    };
    let load = |name: &str| {
        let p = modules.join(format!("{name}.wasm"));
        std::fs::read(&p).with_context(|| {
            format!(
                "{}: build the sample monitors first with ./monitors/build.sh",
                p.display()
            )
        })
    };
    let zscore = load("zscore")?;
    let threshold = load("threshold")?;
    let tmp = tempfile::Builder::new()
        .prefix("strata-bench-monitors-")
        .tempdir()?;

    println!("## Cold start");
    let cold = cold_start(&zscore)?;
    println!(
        "compile zscore.wasm ({} KiB, uncached): median {:.2} ms; instantiate + init from the cache: median {:.1} us, p99 {:.1} us",
        zscore.len() / 1024,
        ms(cold.compile_median),
        us(cold.instantiate_median),
        us(cold.instantiate_p99)
    );

    println!("\n## Dispatch overhead (every instance watches every device)");
    let mut dispatch = Vec::new();
    for n in [1usize, 10, 100] {
        let d = dispatch_run(tmp.path(), &threshold, n, 100_000).await?;
        println!(
            "{n:>4} instances: route {:.0} ns per record per instance; instances consumed {:.0} record-deliveries/s end to end",
            d.route_ns_per_delivery, d.deliveries_per_s
        );
        dispatch.push(d);
    }

    println!(
        "\n## Instances per edge at {} records/s from {} devices (every instance watches every device)",
        args.rate, args.devices
    );
    let mut steps = Vec::new();
    let mut n = 25usize;
    let mut best = None;
    while n <= args.max_instances {
        let s = capacity_step(tmp.path(), &zscore, n, &args).await?;
        println!(
            "{n:>5} instances: {} record-deliveries/s asked, dropped {}, drained in {:.0} ms, +{} MiB RSS ({:.0} KiB per instance) -> {}",
            s.deliveries_per_s,
            s.dropped,
            ms(s.drain),
            s.rss_delta_bytes >> 20,
            s.rss_delta_bytes as f64 / 1024.0 / n as f64,
            if s.kept_up { "kept up" } else { "fell behind" }
        );
        let kept_up = s.kept_up;
        steps.push(s);
        if !kept_up {
            break;
        }
        best = Some(n);
        n *= 2;
    }

    let process = if args.skip_process {
        None
    } else {
        println!("\n## The edge-node binary");
        let p = process_run(tmp.path(), &exe_dir, &threshold).await?;
        println!(
            "size {:.1} MiB; RSS idle {:.1} MiB, with 100 monitors running {:.1} MiB (KubeEdge EdgeCore: ~70 MB published)",
            mib(p.binary_bytes),
            mib(p.rss_idle),
            mib(p.rss_100)
        );
        Some(p)
    };

    println!("\n| measurement | result |\n| --- | --- |");
    println!(
        "| instance cold start: compile (uncached) | {:.2} ms |",
        ms(cold.compile_median)
    );
    println!(
        "| instance cold start: instantiate + init (cached) | {:.1} us median, {:.1} us p99 |",
        us(cold.instantiate_median),
        us(cold.instantiate_p99)
    );
    for d in &dispatch {
        println!(
            "| dispatch, {} instances | {:.0} ns/record/instance; {:.0} deliveries/s consumed |",
            d.instances, d.route_ns_per_delivery, d.deliveries_per_s
        );
    }
    println!(
        "| instances per edge at {} records/s, all devices watched | {} |",
        args.rate,
        match (best, steps.last().filter(|s| !s.kept_up)) {
            (Some(b), Some(f)) => format!("{b} ({} fell behind)", f.instances),
            (Some(b), None) => format!("at least {b} (the most tried)"),
            (None, _) => "none kept up".to_owned(),
        }
    );
    if let Some(p) = &process {
        println!("| edge-node binary size | {:.1} MiB |", mib(p.binary_bytes));
        println!(
            "| edge-node RSS idle / 100 monitors | {:.1} MiB / {:.1} MiB (EdgeCore ~70 MB: {:.1}x / {:.1}x less) |",
            mib(p.rss_idle),
            mib(p.rss_100),
            70e6 / p.rss_idle as f64,
            70e6 / p.rss_100 as f64
        );
    }

    if let Some(path) = &args.json {
        let doc = json!({
            "cold_start": {
                "compile_median_ms": ms(cold.compile_median),
                "instantiate_median_us": us(cold.instantiate_median),
                "instantiate_p99_us": us(cold.instantiate_p99),
            },
            "dispatch": dispatch.iter().map(|d| json!({
                "instances": d.instances,
                "route_ns_per_delivery": d.route_ns_per_delivery,
                "deliveries_per_s": d.deliveries_per_s,
            })).collect::<Vec<_>>(),
            "capacity": {
                "rate": args.rate,
                "devices": args.devices,
                "best": best,
                "steps": steps.iter().map(|s| json!({
                    "instances": s.instances,
                    "dropped": s.dropped,
                    "drain_ms": ms(s.drain),
                    "rss_delta_bytes": s.rss_delta_bytes,
                    "kept_up": s.kept_up,
                })).collect::<Vec<_>>(),
            },
            "process": process.as_ref().map(|p| json!({
                "binary_bytes": p.binary_bytes,
                "rss_idle_bytes": p.rss_idle,
                "rss_100_monitors_bytes": p.rss_100,
            })),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

struct Cold {
    compile_median: Duration,
    instantiate_median: Duration,
    instantiate_p99: Duration,
}

fn cold_start(module: &[u8]) -> anyhow::Result<Cold> {
    let sha = sha256_hex(module);
    let mut compiles = Vec::new();
    for _ in 0..5 {
        // A fresh driver has an empty cache: this is a real compile.
        let d = WasmDriver::new(WasmDriverConfig::default())?;
        let t = Instant::now();
        d.prepare(&sha, module)?;
        compiles.push(t.elapsed());
    }
    let d = WasmDriver::new(WasmDriverConfig::default())?;
    let prepared = d.prepare(&sha, module)?;
    let mut inst = Vec::new();
    let mut keep = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        let x = d.instantiate(
            &prepared,
            InstanceConfig {
                key: InstanceKey::new("bench", format!("m{i}")),
                params_json: r#"{"metrics":["temperature"]}"#.into(),
                budget: Budget::new(16, 100),
                state: KvState::new(),
                limits: RuntimeLimits::default(),
            },
        )?;
        inst.push(t.elapsed());
        keep.push(x); // instances stay alive, as on a real node
    }
    Ok(Cold {
        compile_median: quantile(&mut compiles, 0.5),
        instantiate_median: quantile(&mut inst, 0.5),
        instantiate_p99: quantile(&mut inst, 0.99),
    })
}

struct Dispatch {
    instances: usize,
    route_ns_per_delivery: f64,
    deliveries_per_s: f64,
}

async fn dispatch_run(
    root: &Path,
    module: &[u8],
    n: usize,
    records: usize,
) -> anyhow::Result<Dispatch> {
    let mut cfg = big_host_cfg();
    cfg.queue_records = records; // measure dispatch, not drops
    let (host, _spool) = start_host(root, &format!("dispatch-{n}"), cfg).await?;
    let params = r#"{"metrics":["temperature"],"above":1000.0}"#;
    deploy(&host, module, n, params).await?;
    let batches = make_batches(records, 1000, 500);
    let routed_before = host.metrics().routed.get();
    let t0 = Instant::now();
    let mut route_time = Duration::ZERO;
    // As ingest does: the batch is handed over after the spool append and
    // its records are moved into the queues, not copied.
    for b in batches {
        let t = Instant::now();
        let st = host.route_owned(b);
        route_time += t.elapsed();
        anyhow::ensure!(st.dropped == 0, "dispatch run dropped {}", st.dropped);
    }
    let deliveries = (records * n) as u64;
    let target = routed_before + deliveries;
    let done = host
        .wait_until(Duration::from_secs(120), move |h| {
            h.metrics().processed.get() >= target
        })
        .await;
    anyhow::ensure!(
        done,
        "instances did not consume the routed records in 120 s"
    );
    let e2e = t0.elapsed();
    host.shutdown().await;
    Ok(Dispatch {
        instances: n,
        route_ns_per_delivery: route_time.as_nanos() as f64 / deliveries as f64,
        deliveries_per_s: deliveries as f64 / e2e.as_secs_f64(),
    })
}

struct Step {
    instances: usize,
    deliveries_per_s: u64,
    dropped: u64,
    drain: Duration,
    rss_delta_bytes: u64,
    kept_up: bool,
}

async fn capacity_step(
    root: &Path,
    module: &[u8],
    n: usize,
    args: &MonitorBenchArgs,
) -> anyhow::Result<Step> {
    let rss0 = rss_self();
    let (host, _spool) = start_host(root, &format!("capacity-{n}"), big_host_cfg()).await?;
    deploy(
        &host,
        module,
        n,
        r#"{"metrics":["temperature"],"window":60}"#,
    )
    .await?;
    // Feed `rate` records/s in 10 ms ticks for `step`.
    let per_tick = (args.rate as usize / 100).max(1);
    let ticks = (args.step.as_millis() / 10) as usize;
    let batches = make_batches(per_tick * ticks, args.devices as usize, per_tick);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut dropped = 0u64;
    let processed0 = host.metrics().processed.get();
    let routed0 = host.metrics().routed.get();
    for b in batches {
        tick.tick().await;
        dropped += host.route_owned(b).dropped;
    }
    let ended = Instant::now();
    let routed = host.metrics().routed.get() - routed0;
    let drained = host
        .wait_until(Duration::from_secs(2), move |h| {
            h.metrics().processed.get() - processed0 >= routed
        })
        .await;
    let drain = ended.elapsed();
    let rss_delta_bytes = rss_self().saturating_sub(rss0);
    host.shutdown().await;
    Ok(Step {
        instances: n,
        deliveries_per_s: u64::from(args.rate) * n as u64,
        dropped,
        drain,
        rss_delta_bytes,
        // Kept up: nothing dropped, and the backlog at the end of the feed
        // was gone within a quarter second of input.
        kept_up: dropped == 0 && drained && drain < Duration::from_millis(250),
    })
}

struct ProcessRun {
    binary_bytes: u64,
    rss_idle: u64,
    rss_100: u64,
}

async fn process_run(root: &Path, exe_dir: &Path, module: &[u8]) -> anyhow::Result<ProcessRun> {
    let bin = exe_dir.join("edge-node");
    let binary_bytes = std::fs::metadata(&bin)
        .with_context(|| {
            format!(
                "{}: build it with cargo build --release --workspace --bins",
                bin.display()
            )
        })?
        .len();
    let pki = strata_net::Pki::ensure(&root.join("pki"))?;
    let tls = pki.node("edge-bench")?;
    let mut rss = Vec::new();
    for monitors in [0usize, 100] {
        let data = root.join(format!("edge-{monitors}"));
        if monitors > 0 {
            // Persisted assignments, as a node that synced once has them:
            // they start at boot without any hub.
            let store = WorkloadStore::open(data.join("monitors"))?;
            let sha = sha256_hex(module);
            store.put_artifact(&sha, module)?;
            store.save_assignments(&Assignments {
                version: 1,
                monitors: Vec::new(),
                allocations: (0..monitors)
                    .map(|i| {
                        allocation(
                            i,
                            spec(
                                &format!("m{i}"),
                                module,
                                r#"{"metrics":["temperature"],"above":1000.0}"#,
                            ),
                        )
                    })
                    .collect(),
            })?;
        }
        let cfg = format!(
            "name = \"edge-bench\"\ndata-dir = {:?}\nhubs = [\"127.0.0.1:9\"]\n\
             tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}\n\
             [ingress]\nlisten = \"127.0.0.1:0\"\n[monitors]\nmemory-mib = 100000\ncpu-millicores = 100000\n",
            data.display().to_string(),
            tls.ca.display().to_string(),
            tls.cert.display().to_string(),
            tls.key.display().to_string(),
        );
        let cfg_path = root.join(format!("edge-{monitors}.toml"));
        std::fs::write(&cfg_path, cfg)?;
        let mut child = tokio::process::Command::new(&bin)
            .arg("--config")
            .arg(&cfg_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child.id().context("edge-node exited at once")?;
        // Settle: boot, start the monitors, a few failed dials to the hub.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .context("edge-node exited early; run it by hand to see why")?;
        let r = edge_node::sysinfo::parse_status_rss(&status).context("no VmRSS")?;
        rss.push(r);
        child.kill().await.ok();
    }
    Ok(ProcessRun {
        binary_bytes,
        rss_idle: rss[0],
        rss_100: rss[1],
    })
}

fn big_host_cfg() -> WorkloadConfig {
    WorkloadConfig {
        memory_mib: 1_000_000,
        cpu_millicores: 1_000_000,
        ..WorkloadConfig::default()
    }
}

async fn start_host(
    root: &Path,
    name: &str,
    cfg: WorkloadConfig,
) -> anyhow::Result<(WorkloadHost, Spool)> {
    let dir = root.join(name);
    let spool = Spool::open_std(SpoolConfig {
        dir: dir.join("spool"),
        ..SpoolConfig::default()
    })
    .await?;
    let mut sampler = edge_node::sysinfo::NodeSampler::new(&dir);
    let host = WorkloadHost::start(HostOptions {
        edge: "bench".into(),
        dir: dir.join("monitors"),
        cfg,
        spool: spool.clone(),
        sampler: Box::new(move |now| sampler.sample(now)),
        metrics: WorkloadMetrics::default(),
    })
    .await?;
    Ok((host, spool))
}

fn spec(name: &str, module: &[u8], params: &str) -> MonitorSpec {
    MonitorSpec {
        name: name.into(),
        tenant: "bench".into(),
        runtime: RuntimeKind::Wasm,
        artifact: ArtifactRef {
            sha256: sha256_hex(module),
            size_bytes: module.len() as u64,
        },
        selector: DeviceSelector {
            tenant: "bench".into(),
            device_globs: vec!["dev-*".into()],
            tags: Default::default(),
        },
        params: params.into(),
        resources: Resources {
            memory_mib: 4,
            // A full core's callback budget: this measures the host, not
            // how a tight budget shrinks batches.
            cpu_millicores: 1000,
            min_memory_mib: None,
            max_memory_mib: None,
            min_cpu_millicores: None,
            max_cpu_millicores: None,
        },
        priority: 50,
        restart: RestartPolicy::default(),
        target: Placement::LeastLoaded,
        generation: 1,
        placement: Default::default(),
    }
}

/// Instance `i` of `spec` as the region would place it (kept on disconnect).
fn allocation(i: usize, spec: MonitorSpec) -> EdgeAllocation {
    EdgeAllocation {
        id: AllocId(i as u128 + 1),
        fencing_token: i as u64 + 1,
        slot: 0,
        spec,
        replace_after_ms: None,
        previous: None,
        checkpoint: None,
    }
}

/// Assigns `n` instances of `module` and waits until all run.
async fn deploy(host: &WorkloadHost, module: &[u8], n: usize, params: &str) -> anyhow::Result<()> {
    let update = AssignmentUpdate {
        version: 1,
        allocations: (0..n)
            .map(|i| allocation(i, spec(&format!("m{i}"), module, params)))
            .collect(),
        artifacts: vec![(sha256_hex(module), module.to_vec())],
        requested_at: Instant::now(),
        lease_granted: true,
    };
    let h = host.clone();
    tokio::task::spawn_blocking(move || h.apply(update)).await??;
    let ok = host
        .wait_until(Duration::from_secs(120), move |h| {
            let s = h.status();
            s.instances.len() == n && s.instances.iter().all(|i| i.state == "running")
        })
        .await;
    anyhow::ensure!(ok, "{n} instances did not all start within 120 s");
    Ok(())
}

/// `total` readings over `devices` devices, cut into batches of `per_batch`.
fn make_batches(total: usize, devices: usize, per_batch: usize) -> Vec<Vec<TelemetryRecord>> {
    let base = 1_700_000_000_000i64;
    (0..total)
        .map(|i| TelemetryRecord {
            tenant: "bench".into(),
            device: format!("dev-{}", i % devices.max(1)),
            ts_ms: base + (i / devices.max(1)) as i64 * 1000,
            seq: Some((i / devices.max(1)) as u64),
            metrics: vec![Metric {
                name: "temperature".into(),
                value: 21.0 + (i % 7) as f64 * 0.1,
            }],
            tags: Vec::new(),
        })
        .collect::<Vec<_>>()
        .chunks(per_batch.max(1))
        .map(<[TelemetryRecord]>::to_vec)
        .collect()
}

fn rss_self() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| edge_node::sysinfo::parse_status_rss(&s))
        .unwrap_or(0)
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}
