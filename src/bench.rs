//! `strata bench`: a reproducible ingest benchmark on the local machine, in
//! one run, with one load generator (the `firmware-sim` library):
//!
//! 1. Strata peak: an in-process cluster (3 hub replicas, edges on
//!    ephemeral ports, no central) takes QoS 1 publishes of exact-size
//!    payloads as fast as the connections' windows allow for `--duration`.
//!    A PUBACK means the edge spool fsynced the record. The headline is the
//!    *committed* rate: the records the Raft leader has stored (committed
//!    on a majority and applied), counted once it has stored everything
//!    acknowledged, divided by the time from the first publish to then.
//! 2. Strata latency: PUBACK p50/p99 with the load paced at
//!    `--latency-load` (default half) of the committed peak.
//! 3. The same two phases against Mosquitto 2 (`persistence false`),
//!    started here with a generated config on a free port.
//!
//! It prints a table and the ratio Strata committed / Mosquitto acked, and
//! writes everything (with the machine and its load) to `--json`.
//!
//! The Strata edges authenticate devices as in production: the load
//! generator logs in with one argon2id-hashed fleet credential per phase
//! tenant (one hash per credential, then cached). `--anonymous` runs the
//! same phases with `allow-anonymous` instead, for the comparison.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use firmware_sim::{parse_duration, FleetConfig, Summary};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::up::{ClusterOptions, LocalCluster, Ports};

/// `strata bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Length of each load phase (e.g. 15s, 1m).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub duration: Duration,
    /// MQTT connections of the load generator.
    #[arg(long, default_value_t = 100)]
    pub connections: u32,
    /// Simulated devices, spread over the connections.
    #[arg(long, default_value_t = 1000)]
    pub devices: u32,
    /// Exact size of every publish payload, bytes (binary form padded).
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: u32,
    /// Most unacknowledged QoS 1 publishes per connection.
    #[arg(long, default_value_t = 256)]
    pub inflight: u32,
    /// Strata edge nodes; the connections are spread over them.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub edges: u16,
    /// Strata hub replicas (1, 3 or 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub hubs: u64,
    /// Load of the latency phases, as a fraction of each system's peak.
    #[arg(long, default_value_t = 0.5)]
    pub latency_load: f64,
    /// Longest wait, after the load, for the leader to store everything acked.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub commit_timeout: Duration,
    /// Cluster state directory [default: a temporary directory, deleted afterwards].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Measure Strata only.
    #[arg(long)]
    pub skip_mosquitto: bool,
    /// The Mosquitto broker binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    pub mosquitto: PathBuf,
    /// Run the Strata phases without device authentication
    /// (allow-anonymous), to compare with the default authenticated run.
    #[arg(long)]
    pub anonymous: bool,
}

/// The fleet of one phase: `rate_per_device` 0 is as fast as the windows
/// allow. Every phase uses its own tenant, so the hubs' per-device
/// deduplication never drops a later phase's readings as repeats.
pub fn fleet_config(
    a: &BenchArgs,
    tenant: &str,
    endpoints: Vec<String>,
    rate_per_device: f64,
) -> FleetConfig {
    FleetConfig {
        tenant: tenant.into(),
        devices: a.devices,
        seed: 1,
        endpoints,
        connections: Some(a.connections),
        rate_per_device,
        duration: Some(a.duration),
        qos: 1,
        inflight: a.inflight,
        payload_bytes: Some(a.payload_bytes),
        ack_deadline: Duration::from_secs(60),
        ..Default::default()
    }
}

/// Every problem with the arguments, before anything starts.
pub fn check_args(a: &BenchArgs) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let endpoints = (0..a.edges)
        .map(|i| format!("127.0.0.1:{}", i + 1))
        .collect();
    if let Err(e) = fleet_config(a, "bench", endpoints, 0.0).validate() {
        problems.extend(e.problems);
    }
    if a.hubs % 2 == 0 {
        problems.push(format!("--hubs must be 1, 3 or 5, got {}", a.hubs));
    }
    if !(a.latency_load > 0.0 && a.latency_load <= 1.0) {
        problems.push(format!(
            "--latency-load must be in (0, 1], got {}",
            a.latency_load
        ));
    }
    anyhow::ensure!(
        problems.is_empty(),
        "invalid benchmark options:\n  - {}",
        problems.join("\n  - ")
    );
    Ok(())
}

/// `count / secs`, 0 for an empty interval.
pub fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Per-device rate that puts the whole fleet at `fraction` of `peak`.
pub fn paced_rate_per_device(peak: f64, fraction: f64, devices: u32) -> f64 {
    (peak * fraction / f64::from(devices.max(1))).max(1e-3)
}

/// `a / b`, `None` when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// The Mosquitto config of the benchmark: one loopback listener, no
/// persistence (so no fsync), Nagle off like the Strata edge, quiet logs.
pub fn mosquitto_config(port: u16) -> String {
    format!(
        "# Generated by `strata bench`.\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence false\n\
         set_tcp_nodelay true\n\
         connection_messages false\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n"
    )
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds (USER_HZ 100).
/// The command name may contain spaces and parentheses: skip past the last
/// `)`.
pub fn parse_proc_cpu_secs(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11); // fields 14 and 15
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

fn cpu_secs(pid: u32) -> Option<f64> {
    parse_proc_cpu_secs(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// 1-minute load average.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// One load phase's outcome.
#[derive(Debug, Clone)]
struct Phase {
    summary: Summary,
    /// 1-minute load average when the phase started.
    load_before: Option<f64>,
    /// CPU seconds of this process (cluster + load generator) and of the
    /// broker process, when separate.
    cpu_self: Option<f64>,
    cpu_broker: Option<f64>,
}

impl Phase {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "summary": self.summary,
            "load-avg-before": self.load_before,
            "cpu-secs-bench-process": self.cpu_self,
            "cpu-secs-broker": self.cpu_broker,
        })
    }
}

/// What the leader stored after a phase.
#[derive(Debug, Clone, Copy)]
struct Committed {
    records: u64,
    /// From the first publish until the leader stored everything acked.
    secs: f64,
    /// Time after the load generator finished until then.
    lag_secs: f64,
    caught_up: bool,
    /// Longest hub status round trip seen meanwhile (a Raft loop stall).
    max_raft_stall_ms: f64,
    /// Records the FSM dropped as already stored (batches resent after an
    /// uplink connection loss), and store checkpoints taken, per replica.
    duplicates: u64,
    checkpoints: u64,
}

impl Committed {
    fn rate(&self) -> f64 {
        rate(self.records, self.secs)
    }
}

/// Runs one fleet phase, printing progress once per second; the leader's
/// stored count (when given a probe) is shown beside it. Fails if
/// `broker_failed` resolves first (a cluster component or the broker died).
async fn run_phase(
    label: &str,
    cfg: FleetConfig,
    probe: Option<Arc<Probe>>,
    broker_pid: Option<u32>,
    broker_failed: impl std::future::Future<Output = anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Phase> {
    let load_before = loadavg();
    let (self_cpu0, broker_cpu0) = (cpu_secs(std::process::id()), broker_pid.and_then(cpu_secs));
    let tag = label.to_owned();
    let progress: firmware_sim::ProgressFn = Box::new(move |p| match &probe {
        Some(s) => eprintln!("{tag}: {p}  stored {}", s.stored.load(Relaxed)),
        None => eprintln!("{tag}: {p}"),
    });
    let summary = tokio::select! {
        r = firmware_sim::run(cfg, shutdown.child_token(), Some(progress)) => r?,
        r = broker_failed => anyhow::bail!("{label}: the system under test stopped during the run: {:?}", r.err()),
    };
    anyhow::ensure!(
        !shutdown.is_cancelled(),
        "interrupted during the {label} phase"
    );
    let d = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
    Ok(Phase {
        load_before,
        cpu_self: d(cpu_secs(std::process::id()), self_cpu0),
        cpu_broker: d(broker_pid.and_then(cpu_secs), broker_cpu0),
        summary,
    })
}

/// Live numbers shared by the poller and the phases.
#[derive(Debug, Default)]
struct Probe {
    /// The leader's stored records at the last poll.
    stored: AtomicU64,
    /// Longest `status()` round trip of any hub since the last reset, µs.
    /// The status request waits in the Raft thread's inbox, so this is the
    /// longest stall of a replica's Raft loop (a checkpoint, a big apply).
    max_status_us: AtomicU64,
}

/// Polls every hub's status every 100 ms into `probe` until `stop`.
fn spawn_poller(
    hubs: Vec<region_hub::raft::driver::NodeHandle>,
    probe: Arc<Probe>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let mut statuses = Vec::with_capacity(hubs.len());
            for h in &hubs {
                let t = Instant::now();
                statuses.extend(h.status().await.ok());
                let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                probe.max_status_us.fetch_max(us, Relaxed);
            }
            if let Some(n) = crate::up::pick_leader_stored(&statuses) {
                probe.stored.store(n, Relaxed);
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
}

/// Waits until the leader stored `target` records; `Committed` counts from
/// `started` (the first publish) and `load_done`.
async fn wait_committed(
    cluster: &LocalCluster,
    base: u64,
    acked: u64,
    started: Instant,
    load_done: Instant,
    timeout: Duration,
) -> Committed {
    let mut stored = base;
    let caught_up = loop {
        if let Some(n) = cluster.leader_stored().await {
            stored = n;
            if n >= base + acked {
                break true;
            }
        }
        if load_done.elapsed() > timeout {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let now = Instant::now();
    Committed {
        records: stored - base,
        secs: now.duration_since(started).as_secs_f64(),
        lag_secs: now.duration_since(load_done).as_secs_f64(),
        caught_up,
        max_raft_stall_ms: 0.0,
        duplicates: 0,
        checkpoints: 0,
    }
}

struct StrataResults {
    peak: Phase,
    committed: Committed,
    paced_rate: f64,
    paced: Phase,
    paced_committed: Committed,
}

async fn bench_strata(
    a: &BenchArgs,
    data_dir: &Path,
    run_id: u64,
    shutdown: &CancellationToken,
) -> anyhow::Result<StrataResults> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // One fleet identity per phase tenant, as a real deployment would have.
    let password = crate::device_cli::generate_password();
    let tenants = [format!("b{run_id}-peak"), format!("b{run_id}-paced")];
    let credentials = data_dir.join("devices.toml");
    if !a.anonymous {
        for t in &tenants {
            let entry = edge_node::ingress::auth::IdentityEntry {
                username: format!("{t}-fleet"),
                tenant: t.clone(),
                devices: "*".into(),
                password_hash: None,
                client_cert: false,
            };
            crate::device_cli::add_identity(&credentials, entry, Some(&password))?;
        }
    }
    let opts = ClusterOptions {
        credentials: Some(credentials),
        allow_anonymous: a.anonymous,
        data_dir: data_dir.to_owned(),
        region: "bench".into(),
        hubs: a.hubs,
        edges: a.edges,
        central: false,
        ports: Ports::Ephemeral,
        // In this process: the measurement counts its CPU.
        edge_processes: None,
    };
    let mut cluster = LocalCluster::start(&opts, shutdown.child_token()).await?;
    let result = async {
        cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let probe = Arc::new(Probe::default());
        let poll_stop = CancellationToken::new();
        let _guard = poll_stop.clone().drop_guard();
        spawn_poller(cluster.hubs.clone(), probe.clone(), poll_stop);
        let endpoints = cluster.mqtt_endpoints();
        let fleet = |tenant: &str, per_device| {
            let login = !a.anonymous;
            FleetConfig {
                username: login.then(|| format!("{tenant}-fleet")),
                password: login.then(|| password.clone()),
                ..fleet_config(a, tenant, endpoints.clone(), per_device)
            }
        };

        eprintln!(
            "strata: peak phase ({:?}, unpaced, device authentication {})",
            a.duration,
            if a.anonymous { "off" } else { "on" }
        );
        let cfg = fleet(&tenants[0], 0.0);
        let (peak, committed) =
            measure_strata(&mut cluster, cfg, "strata peak", &probe, a, shutdown).await?;
        let paced_rate = committed.rate() * a.latency_load;
        eprintln!("strata: latency phase, paced at {paced_rate:.0} records/s");
        let per_device = paced_rate_per_device(committed.rate(), a.latency_load, a.devices);
        let cfg = fleet(&tenants[1], per_device);
        let (paced, paced_committed) =
            measure_strata(&mut cluster, cfg, "strata paced", &probe, a, shutdown).await?;
        anyhow::Ok(StrataResults {
            peak,
            committed,
            paced_rate,
            paced,
            paced_committed,
        })
    }
    .await;
    cluster.stop().await;
    result
}

/// One Strata phase, then the wait until the leader stored it all.
async fn measure_strata(
    cluster: &mut LocalCluster,
    cfg: FleetConfig,
    label: &str,
    probe: &Arc<Probe>,
    a: &BenchArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Phase, Committed)> {
    let base = cluster.leader_stored().await.unwrap_or(0);
    // Every replica applies the same entries: the largest count is the
    // group's (a lagging replica has simply not caught up).
    let counts = |c: &LocalCluster| {
        let max = |f: fn(&region_hub::metrics::HubMetrics) -> u64| {
            c.hub_metrics.iter().map(f).max().unwrap_or(0)
        };
        (max(|m| m.duplicates_total()), max(|m| m.checkpoints.get()))
    };
    let (dup0, ckpt0) = counts(cluster);
    probe.max_status_us.store(0, Relaxed);
    let started = Instant::now();
    let phase = run_phase(
        label,
        cfg,
        Some(probe.clone()),
        None,
        cluster.first_exit(),
        shutdown,
    )
    .await?;
    let done = Instant::now();
    let acked = phase.summary.acked;
    let mut committed = wait_committed(cluster, base, acked, started, done, a.commit_timeout).await;
    committed.max_raft_stall_ms = probe.max_status_us.load(Relaxed) as f64 / 1000.0;
    let (dup1, ckpt1) = counts(cluster);
    (committed.duplicates, committed.checkpoints) = (dup1 - dup0, ckpt1 - ckpt0);
    Ok((phase, committed))
}

struct MosquittoResults {
    version: String,
    peak: Phase,
    paced_rate: f64,
    paced: Phase,
}

/// A Mosquitto process with a generated config, killed on drop.
struct Mosquitto {
    child: tokio::process::Child,
    addr: SocketAddr,
}

impl Mosquitto {
    async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Mosquitto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for mosquitto")?
            .port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, mosquitto_config(port))
            .with_context(|| format!("writing {}", conf.display()))?;
        let log = std::fs::File::create(dir.join("mosquitto.log"))?;
        let child = tokio::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install Debian's `mosquitto`, or pass --mosquitto PATH or --skip-mosquitto)",
                    bin.display()
                )
            })?;
        let mut m = Mosquitto {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(m.addr).await.is_err() {
            if let Some(status) = m.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default();
                anyhow::bail!("mosquitto exited at start ({status}): {log}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "mosquitto not listening on {} after 10s",
                m.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(m)
    }

    /// Resolves only if the broker exits.
    async fn exited(&mut self) -> anyhow::Result<()> {
        let status = self.child.wait().await?;
        anyhow::bail!("mosquitto exited: {status}")
    }
}

fn mosquitto_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "mosquitto (unknown version)".into())
}

async fn bench_mosquitto(
    a: &BenchArgs,
    dir: &Path,
    run_id: u64,
    shutdown: &CancellationToken,
) -> anyhow::Result<MosquittoResults> {
    let mut m = Mosquitto::start(&a.mosquitto, dir).await?;
    let pid = m.child.id();
    let endpoints = vec![m.addr.to_string()];
    eprintln!(
        "mosquitto: peak phase ({:?}, unpaced) on {}",
        a.duration, m.addr
    );
    let cfg = fleet_config(a, &format!("b{run_id}-peak"), endpoints.clone(), 0.0);
    let peak = run_phase("mosquitto peak", cfg, None, pid, m.exited(), shutdown).await?;
    let paced_rate = peak.summary.throughput * a.latency_load;
    eprintln!("mosquitto: latency phase, paced at {paced_rate:.0} records/s");
    let per_device = paced_rate_per_device(peak.summary.throughput, a.latency_load, a.devices);
    let cfg = fleet_config(a, &format!("b{run_id}-paced"), endpoints, per_device);
    let paced = run_phase("mosquitto paced", cfg, None, pid, m.exited(), shutdown).await?;
    let _ = m.child.kill().await;
    Ok(MosquittoResults {
        version: mosquitto_version(&a.mosquitto),
        peak,
        paced_rate,
        paced,
    })
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// The results table (Markdown, so it can go into BENCHMARKS.md as is).
fn render(a: &BenchArgs, s: &StrataResults, m: Option<&MosquittoResults>) -> String {
    let mut t = String::new();
    let strata_name = format!(
        "Strata ({} hubs, {} edges, fsync + Raft, {})",
        a.hubs,
        a.edges,
        if a.anonymous {
            "anonymous"
        } else {
            "device auth"
        }
    );
    t.push_str(
        "| system | peak acked/s | committed/s | latency load | PUBACK p50 | PUBACK p99 |\n",
    );
    t.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    t.push_str(&format!(
        "| {strata_name} | {:.0} | **{:.0}** | {:.0}/s | {} | {} |\n",
        s.peak.summary.throughput,
        s.committed.rate(),
        s.paced.summary.throughput,
        ms(s.paced.summary.latency_us.p50),
        ms(s.paced.summary.latency_us.p99),
    ));
    if let Some(m) = m {
        t.push_str(&format!(
            "| {} (persistence false) | **{:.0}** | n/a | {:.0}/s | {} | {} |\n",
            m.version,
            m.peak.summary.throughput,
            m.paced.summary.throughput,
            ms(m.paced.summary.latency_us.p50),
            ms(m.paced.summary.latency_us.p99),
        ));
        if let Some(r) = ratio(s.committed.rate(), m.peak.summary.throughput) {
            t.push_str(&format!(
                "\nRatio Strata committed / Mosquitto QoS 1 acked: **{r:.2}**\n"
            ));
        }
    }
    t
}

fn results_json(
    a: &BenchArgs,
    s: &StrataResults,
    m: Option<&MosquittoResults>,
) -> serde_json::Value {
    let committed = |c: &Committed| {
        json!({
            "records": c.records, "secs": c.secs, "rate": c.rate(),
            "lag-after-load-secs": c.lag_secs, "caught-up": c.caught_up,
            "max-raft-stall-ms": c.max_raft_stall_ms,
            "duplicates-dropped": c.duplicates, "checkpoints": c.checkpoints,
        })
    };
    json!({
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu-model": cpu_model(),
            "load-avg-at-end": loadavg(),
        },
        "options": {
            "duration-secs": a.duration.as_secs_f64(), "connections": a.connections,
            "devices": a.devices, "payload-bytes": a.payload_bytes, "inflight": a.inflight,
            "qos": 1, "hubs": a.hubs, "edges": a.edges, "latency-load": a.latency_load,
            "device-authentication": !a.anonymous,
        },
        "strata": {
            "peak": s.peak.to_json(),
            "committed": committed(&s.committed),
            "paced-target-rate": s.paced_rate,
            "paced": s.paced.to_json(),
            "paced-committed": committed(&s.paced_committed),
        },
        "mosquitto": m.map(|m| json!({
            "version": m.version,
            "peak": m.peak.to_json(),
            "paced-target-rate": m.paced_rate,
            "paced": m.paced.to_json(),
        })),
        "ratio-strata-committed-to-mosquitto-acked":
            m.and_then(|m| ratio(s.committed.rate(), m.peak.summary.throughput)),
    })
}

/// Runs the whole benchmark.
pub async fn bench(a: BenchArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    check_args(&a)?;
    let temp;
    let data_dir = match &a.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("strata-bench-").tempdir()?;
            temp.path().to_owned()
        }
    };
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    eprintln!(
        "strata bench: {} connections, {} devices, {}-byte payloads, QoS 1, inflight {}, {:?} per phase; {} CPUs ({}), load average {:?}; data in {}",
        a.connections, a.devices, a.payload_bytes, a.inflight, a.duration,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model(), loadavg(), data_dir.display()
    );
    let strata = bench_strata(&a, &data_dir.join("strata"), run_id, &shutdown).await?;
    let mosquitto = if a.skip_mosquitto {
        None
    } else {
        let dir = data_dir.join("mosquitto");
        std::fs::create_dir_all(&dir)?;
        Some(bench_mosquitto(&a, &dir, run_id, &shutdown).await?)
    };
    let table = render(&a, &strata, mosquitto.as_ref());
    let c = &strata.committed;
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{table}")?;
    writeln!(
        out,
        "Strata committed {} records in {:.2}s ({:.2}s after the load ended; longest Raft loop stall {:.0} ms; \
         {} resent records dropped as duplicates; {} checkpoints){}.",
        c.records,
        c.secs,
        c.lag_secs,
        c.max_raft_stall_ms,
        c.duplicates,
        c.checkpoints,
        if c.caught_up {
            ""
        } else {
            " — TIMED OUT before storing everything acked"
        }
    )?;
    if let Some(path) = &a.json {
        let doc = results_json(&a, &strata, mosquitto.as_ref());
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "Results written to {}.", path.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(extra: &[&str]) -> BenchArgs {
        let mut v = vec!["bench"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().bench
    }

    #[test]
    fn defaults_match_the_documented_benchmark() {
        let a = args(&[]);
        assert_eq!(
            (
                a.duration,
                a.connections,
                a.devices,
                a.payload_bytes,
                a.hubs
            ),
            (Duration::from_secs(15), 100, 1000, 64, 3)
        );
        check_args(&a).unwrap();
        let cfg = fleet_config(&a, "t", vec!["127.0.0.1:1".into()], 0.0);
        assert_eq!(
            (cfg.qos, cfg.payload_bytes, cfg.effective_connections()),
            (1, Some(64), 100)
        );
    }

    #[test]
    fn every_bad_option_is_reported_at_once() {
        let a = args(&[
            "--connections",
            "5000",
            "--payload-bytes",
            "8",
            "--latency-load",
            "2",
            "--hubs",
            "2",
        ]);
        let text = check_args(&a).unwrap_err().to_string();
        for needle in [
            "connections 5000",
            "payload-bytes 8",
            "--latency-load",
            "--hubs",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text}");
        }
    }

    #[test]
    fn rates_and_ratios() {
        assert_eq!(rate(1000, 2.0), 500.0);
        assert_eq!(rate(5, 0.0), 0.0);
        assert_eq!(ratio(30.0, 60.0), Some(0.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert!((paced_rate_per_device(40_000.0, 0.5, 1000) - 20.0).abs() < 1e-9);
        assert!(
            paced_rate_per_device(0.0, 0.5, 1000) > 0.0,
            "never unpaced (0)"
        );
    }

    #[test]
    fn mosquitto_config_listens_on_loopback_without_persistence() {
        let c = mosquitto_config(18_833);
        assert!(c.contains("listener 18833 127.0.0.1\n"));
        assert!(c.contains("persistence false\n"));
        assert!(c.contains("allow_anonymous true\n"));
    }

    #[test]
    fn proc_stat_cpu_time() {
        let line = "4242 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0";
        assert_eq!(parse_proc_cpu_secs(line), Some(4.0));
        assert_eq!(parse_proc_cpu_secs("garbage"), None);
        assert!(cpu_secs(std::process::id()).is_some());
    }
}
