//! `firmware-sim`: simulate a device fleet publishing telemetry over MQTT.
//! Wiring only: CLI → [`FleetConfig`], tracing, Ctrl-C → cancel, summary.
//!
//! Exit codes: 0 done, 1 run failed or readings left unacknowledged,
//! 2 bad command line, 130 second Ctrl-C.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use firmware_sim::{parse_duration, AnomalySpec, FleetConfig, Progress, ProgressFn};
use tokio_util::sync::CancellationToken;

/// Simulate N devices of a tenant publishing seeded telemetry to Strata edge
/// nodes over MQTT; doubles as a load generator.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Edge MQTT endpoint host:port (repeatable; device d uses endpoint d % n).
    #[arg(long = "endpoint", required = true, value_name = "HOST:PORT")]
    endpoints: Vec<String>,
    /// Tenant the devices belong to.
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// Number of devices (1..=100000).
    #[arg(long, default_value_t = 10)]
    devices: u32,
    /// Device name prefix: devices are <prefix>-<index>.
    #[arg(long, default_value = "dev")]
    device_prefix: String,
    /// Seed for readings, anomaly selection and reconnect jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// MQTT connections to multiplex devices over [default: min(devices, 100)].
    #[arg(long)]
    connections: Option<u32>,
    /// Readings per second per device; 0 = as fast as possible.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Trace mode: the fleet's total rate follows the trace in this TOML
    /// file (daily/weekly patterns, surges, noise, time-compressed; see
    /// firmware-sim/trace.toml). Replaces --rate.
    #[arg(long, value_name = "PATH")]
    trace: Option<std::path::PathBuf>,
    /// Publish exactly K readings per device (seq 0..K), await their acks, exit.
    /// Readings suppressed by a dropout anomaly are not published (their seq is skipped).
    #[arg(long, value_name = "K")]
    count: Option<u64>,
    /// Stop after this long (e.g. 30s, 5m), then drain acks.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// MQTT QoS, 0 or 1.
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Most unacked QoS 1 publishes per connection.
    #[arg(long, default_value_t = 256)]
    inflight: u32,
    /// Send the compact binary payload instead of JSON.
    #[arg(long)]
    binary: bool,
    /// Send payloads of exactly N bytes (binary form, one metric, padded
    /// with a tag); for benchmarks.
    #[arg(long, value_name = "N")]
    payload_bytes: Option<u32>,
    /// Inject an anomaly (repeatable), e.g. spike:devices=0+3,start=100,duration=10,metric=temperature
    /// or dropout:fraction=0.1,start=50,duration=20 (kinds: spike, stuck, dropout; start and
    /// duration count readings; a dropped reading's seq still advances, leaving a visible gap).
    #[arg(long = "anomaly", value_name = "SPEC")]
    anomalies: Vec<AnomalySpec>,
    /// Timestamp of reading 0 in ms since the epoch [default: now].
    #[arg(long)]
    start_ts_ms: Option<i64>,
    /// MQTT keep-alive, seconds.
    #[arg(long, default_value_t = 30)]
    keep_alive_secs: u16,
    /// First reconnect delay (doubles per failure, jittered).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    backoff_initial: Duration,
    /// Largest reconnect delay.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    backoff_max: Duration,
    /// Timeout for TCP connect plus CONNACK.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// How long to wait for outstanding acks once nothing new is sent.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    ack_deadline: Duration,
    /// MQTT client id prefix (connection c uses <prefix>-<c>).
    #[arg(long)]
    client_id_prefix: Option<String>,
    /// MQTT username (an edge identity allowed to publish for --tenant).
    #[arg(long)]
    username: Option<String>,
    /// MQTT password (visible to other local users in the process list;
    /// prefer --password-file).
    #[arg(long, conflicts_with = "password_file")]
    password: Option<String>,
    /// Read the MQTT password from the first line of this file.
    #[arg(long, value_name = "PATH")]
    password_file: Option<std::path::PathBuf>,
    /// A connection that cannot reach its endpoint moves to the next one
    /// (devices roaming to another gateway when theirs fails).
    #[arg(long)]
    failover: bool,
    /// No progress line on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

impl Cli {
    fn into_config(self) -> Result<FleetConfig, String> {
        let password = match (&self.password, &self.password_file) {
            (_, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("--password-file {}: {e}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            (p, None) => p.clone(),
        };
        let trace = match &self.trace {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| firmware_sim::trace::parse_trace_toml(&text))
                    .map_err(|e| format!("--trace {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(FleetConfig {
            tenant: self.tenant,
            devices: self.devices,
            device_prefix: self.device_prefix,
            seed: self.seed,
            endpoints: self.endpoints,
            connections: self.connections,
            rate_per_device: self.rate,
            trace,
            count: self.count,
            duration: self.duration,
            qos: self.qos,
            inflight: self.inflight,
            binary: self.binary,
            payload_bytes: self.payload_bytes,
            anomalies: self.anomalies,
            start_ts_ms: self.start_ts_ms,
            keep_alive_secs: self.keep_alive_secs,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
            connect_timeout: self.connect_timeout,
            ack_deadline: self.ack_deadline,
            client_id_prefix: self.client_id_prefix,
            username: self.username,
            password,
            failover: self.failover,
        })
    }
}

fn progress_printer() -> ProgressFn {
    let tty = std::io::stderr().is_terminal();
    Box::new(move |p: &Progress| {
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r\x1b[2K{p}")
        } else {
            writeln!(err, "{p}")
        };
        let _ = err.flush();
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (quiet, json) = (cli.quiet, cli.json);
    let cfg = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: draining in-flight publishes (Ctrl-C again to quit now)");
            token.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let progress = (!quiet).then(progress_printer);
    let summary = match firmware_sim::run(cfg, shutdown, progress).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("\nerror: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if !quiet && std::io::stderr().is_terminal() {
        eprintln!();
    }
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{summary}");
    }
    Ok(if summary.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
