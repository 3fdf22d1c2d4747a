//! The `central.toml` file: HTTP listen address, TLS material for dialing
//! hubs, the regions to federate, the hub request deadlines, central's data
//! directory, who may call the API (`[auth]`) and the HTTP connection limits
//! (`[http]`).
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data-dir = "strata-data/central"
//! request-timeout-ms = 5000
//! membership-timeout = "60s"
//! tls = { ca = "pki/ca.pem", cert = "pki/central.pem", key = "pki/central.key" }
//!
//! [http]
//! header-read-timeout = "10s"
//!
//! [[regions]]
//! name = "west"
//! hubs = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_net::TlsFiles;

/// Most hub addresses accepted per region (a Raft group is a handful of
/// replicas; hundreds means a config mistake).
const MAX_HUBS_PER_REGION: usize = 64;
/// Longest accepted timeout: longer only hides a dead hub from the user.
const MAX_TIMEOUT_MS: u64 = 600_000;
/// Longest accepted membership deadline (a catch-up of a large region may
/// take minutes, not hours).
const MAX_MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(3600);

/// Errors loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read central config {path}: {error}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// OS error (in the message, not chained, so it prints once).
        error: std::io::Error,
    },
    /// The file is not valid TOML or has unknown / mistyped keys.
    #[error("central config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// toml's message, which names the key and line.
        message: String,
    },
    /// The values are inconsistent; every problem is listed.
    #[error("invalid central config{}:\n  - {}", path_suffix(.path), .problems.join("\n  - "))]
    Invalid {
        /// The config file, when loaded from one.
        path: Option<PathBuf>,
        /// One message per problem, each naming the key.
        problems: Vec<String>,
    },
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

/// Configuration of the central server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CentralConfig {
    /// TCP address of the HTTP API (also `/metrics` and `/health`).
    /// Default `127.0.0.1:8080`; port 0 picks a free port.
    pub listen: SocketAddr,
    /// PEM files (CA, certificate, key) central presents when it dials hubs
    /// over mutual TLS. Required; no default.
    pub tls: TlsFiles,
    /// The regions to federate, each with its hubs' client-facing QUIC
    /// addresses. At least one is required; default none.
    pub regions: Vec<RegionConfig>,
    /// Deadline for one API operation against a region (all hub calls it
    /// makes, including leader discovery), in milliseconds. Default 5000.
    pub request_timeout_ms: u64,
    /// Deadline for dialing one hub (QUIC, TLS and hello), in milliseconds.
    /// Kept below the request timeout so a dead hub leaves time to try the
    /// others. Also bounds one replica's status in a region view. Default 2000.
    pub connect_timeout_ms: u64,
    /// Deadline for one membership change (`POST`/`DELETE` on
    /// `/api/v1/regions/{region}/replicas`). Adding a replica waits until
    /// the leader promoted it or refused it, which can take the hubs'
    /// `membership.catch-up-timeout`: keep this longer than that.
    /// Humantime (e.g. "60s"). Default "60s".
    #[serde(with = "humantime_serde")]
    pub membership_timeout: Duration,
    /// Central's own directory: it holds the operator token
    /// (`operator.token`). Created with mode 0700 if missing; refused if
    /// group or others may access it. Default `strata-data/central`
    /// (relative to the working directory).
    pub data_dir: PathBuf,
    /// Who may call the API: `[auth]`.
    pub auth: AuthConfig,
    /// HTTP connection and request limits: `[http]`.
    pub http: HttpConfig,
    /// Central's own Raft group: `[cluster]`. Default: this replica alone.
    pub cluster: ClusterConfig,
    /// The global scheduler on central's leader: `[global]`.
    pub global: GlobalTuning,
}

/// `[global]`: how often central's leader fetches region summaries and
/// re-splits global workloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct GlobalTuning {
    /// Time between rounds (re-split, reconcile the regions' monitors).
    /// Humantime, 100ms to 1m. Default "1s".
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Time between fetches of each region's summary (capacity, device
    /// locality). Humantime, 100ms to 1m. Default "2s". A region whose
    /// summary is older than 30 s is `unknown`: it keeps its shares and
    /// gets no new ones.
    #[serde(with = "humantime_serde")]
    pub summary_interval: Duration,
    /// Seed of the splitter's tie-breaking; unset picks one at start and
    /// logs it (a logged seed replays the same decisions). Default unset.
    pub seed: Option<u64>,
    /// Forecast-driven pre-scaling of autoscaled workloads:
    /// `[global.forecast]`.
    pub forecast: ForecastTuning,
}

impl Default for GlobalTuning {
    fn default() -> Self {
        GlobalTuning {
            interval: Duration::from_secs(1),
            summary_interval: Duration::from_secs(2),
            seed: None,
            forecast: ForecastTuning::default(),
        }
    }
}

/// `[global.forecast]`: the leader records each autoscaled workload's
/// measured load once per `step` into the replicated state and, once that
/// history covers the longest season (and two of the shortest), forecasts
/// `horizon` ahead with Holt-Winters and lets the autoscaler pre-scale for
/// the forecast's peak. Every replica must have the same `step`: the
/// history is replicated, and a leader with another step starts it afresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ForecastTuning {
    /// Record load and forecast. Off: reactive scaling only, no history
    /// writes. Default true.
    pub enabled: bool,
    /// Time per history point (the mean of that step's samples), at least
    /// `global.interval`. Humantime. Default "5m": the step the forecast
    /// crate measured, and a week of it (2016 points) fits twice in the
    /// history of 4096 points kept per workload.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// How far ahead the forecast's peak looks: cover the time a new
    /// instance needs to start and take load. At least `step`, at most the
    /// shortest season. Humantime. Default "30m".
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// Seasonal periods, one or two, ascending, each a multiple of `step`
    /// of at least 2 steps; two of the longest must fit in the 4096-point
    /// history. Humantime list. Default ["1d", "1w"].
    pub seasons: Vec<humantime_serde::Serde<Duration>>,
    /// Time between refits of a workload's model (between them it is only
    /// advanced over new points, which is cheap). At least `step`.
    /// Humantime. Default "1h".
    #[serde(with = "humantime_serde")]
    pub refit: Duration,
}

impl Default for ForecastTuning {
    fn default() -> Self {
        ForecastTuning {
            enabled: true,
            step: Duration::from_secs(300),
            horizon: Duration::from_secs(1800),
            seasons: vec![
                Duration::from_secs(86_400).into(),
                Duration::from_secs(7 * 86_400).into(),
            ],
            refit: Duration::from_secs(3600),
        }
    }
}

impl ForecastTuning {
    /// What the leader's forecasters run with; `None` when disabled.
    pub fn predictor(&self) -> Option<crate::global::prescale::PredictorSettings> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let step_ms = ms(self.step).max(1);
        self.enabled
            .then(|| crate::global::prescale::PredictorSettings {
                step_ms,
                horizon: self.horizon,
                seasons: self.season_durations(),
                refit_steps: (ms(self.refit) / step_ms).max(1),
            })
    }

    /// The seasons as plain durations.
    pub fn season_durations(&self) -> Vec<Duration> {
        self.seasons.iter().map(|s| **s).collect()
    }

    /// Every problem, each naming its key (`global.forecast.step`, …);
    /// `interval` is `global.interval`.
    pub fn problems(&self, interval: Duration) -> Vec<String> {
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        let key = |k: &str| format!("global.forecast.{k}");
        let mut p = Vec::new();
        let step = self.step;
        if step < interval || step > Duration::from_secs(3600) {
            p.push(format!(
                "{}: {} must be between global.interval ({}) and 1h: each step needs a sample",
                key("step"),
                fmt(step),
                fmt(interval)
            ));
        }
        if step.is_zero() {
            return p;
        }
        if self.horizon < step {
            p.push(format!(
                "{}: {} is shorter than step {}",
                key("horizon"),
                fmt(self.horizon),
                fmt(step)
            ));
        }
        if self.refit < step {
            p.push(format!(
                "{}: {} is shorter than step {}",
                key("refit"),
                fmt(self.refit),
                fmt(step)
            ));
        }
        let seasons = self.season_durations();
        if seasons.is_empty() || seasons.len() > 2 {
            p.push(format!(
                "{}: {} given, want one or two",
                key("seasons"),
                seasons.len()
            ));
        }
        if seasons.windows(2).any(|w| w[0] >= w[1]) {
            p.push(format!("{}: must be ascending", key("seasons")));
        }
        let step_ms = step.as_millis();
        for (i, s) in seasons.iter().enumerate() {
            if s.as_millis() % step_ms != 0 || s.as_millis() < 2 * step_ms {
                p.push(format!(
                    "{}[{i}]: {} must be a multiple of step {} and at least 2 steps",
                    key("seasons"),
                    fmt(*s),
                    fmt(step)
                ));
            }
        }
        if let Some(first) = seasons.first() {
            if self.horizon > *first {
                p.push(format!(
                    "{}: {} is longer than the shortest season {}",
                    key("horizon"),
                    fmt(self.horizon),
                    fmt(*first)
                ));
            }
        }
        if let Some(longest) = seasons.iter().max() {
            let points = crate::state::HISTORY_POINTS as u128;
            if 2 * longest.as_millis() > points * step_ms {
                p.push(format!(
                    "{}: two of the longest season ({}) need {} points at step {}, \
                     more than the {points} kept: use a longer step or a shorter season",
                    key("seasons"),
                    fmt(*longest),
                    2 * longest.as_millis() / step_ms,
                    fmt(step)
                ));
            }
        }
        p
    }
}

/// `[cluster]`: central's replicas form one Raft group that holds the
/// operator digest, the region registry, tenants and global workloads.
/// Any replica serves the API; writes go through the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// This replica's id, ≥ 1; one of `replicas` when they are listed.
    /// Default 1.
    pub id: u64,
    /// UDP address of the Raft peer listener (QUIC, mutual TLS with `tls`).
    /// Default `127.0.0.1:0` (a free port: fine for a group of one).
    pub peer_listen: SocketAddr,
    /// Every replica of the group, this one included. Empty (the default):
    /// this replica alone, a group of one.
    pub replicas: Vec<ClusterReplica>,
    /// Length of one Raft tick, ms. Default 100.
    pub tick_ms: u64,
    /// Ticks without hearing a leader before an election. Default 10.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats; less than `election-ticks`. Default 2.
    pub heartbeat_ticks: usize,
    /// Applied entries between writes of the state file (and with them the
    /// Raft log's compaction). Default 1000.
    pub checkpoint_every: u64,
}

/// One replica of central's group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterReplica {
    /// Replica id, ≥ 1, unique. Required.
    pub id: u64,
    /// Its Raft peer address, `host:port` (UDP). Required.
    pub peer_addr: String,
    /// Its HTTP API address, `host:port` (where clients are sent). Required.
    pub http_addr: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            id: 1,
            peer_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            replicas: Vec::new(),
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            checkpoint_every: 1000,
        }
    }
}

impl ClusterConfig {
    /// Every problem of `[cluster]`, keys prefixed with `cluster.`.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.id == 0 {
            p.push("cluster.id: must be at least 1".into());
        }
        if !self.replicas.is_empty() && !self.replicas.iter().any(|r| r.id == self.id) {
            p.push(format!(
                "cluster.replicas: this replica (cluster.id = {}) is not listed",
                self.id
            ));
        }
        if self.replicas.len() > 7 {
            p.push(format!(
                "cluster.replicas: {} replicas, at most 7",
                self.replicas.len()
            ));
        }
        let mut ids = BTreeSet::new();
        for (i, r) in self.replicas.iter().enumerate() {
            let key = format!("cluster.replicas[{i}]");
            if r.id == 0 {
                p.push(format!("{key}.id: must be at least 1"));
            } else if !ids.insert(r.id) {
                p.push(format!("{key}.id: {} is listed twice", r.id));
            }
            for (field, v) in [("peer-addr", &r.peer_addr), ("http-addr", &r.http_addr)] {
                if let Err(why) = check_host_port(v) {
                    p.push(format!("{key}.{field}: {v:?}: {why}"));
                }
            }
        }
        if !(10..=10_000).contains(&self.tick_ms) {
            p.push(format!(
                "cluster.tick-ms: {} must be in 10..=10000",
                self.tick_ms
            ));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            p.push(format!(
                "cluster.election-ticks: {} must exceed heartbeat-ticks ({}, at least 1)",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        if self.checkpoint_every == 0 {
            p.push("cluster.checkpoint-every: must be at least 1".into());
        }
        p
    }
}

/// `[auth]`: the operator token and what is open without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthConfig {
    /// The operator token file. Created (random 256-bit token, mode 0600)
    /// if missing; refused if group or others may read it. Default
    /// `<data-dir>/operator.token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Accept API requests that carry no token, as the operator, for labs.
    /// A request with a wrong token is still refused. Logs a warning at
    /// start. Default false.
    pub allow_anonymous: bool,
    /// Serve `/metrics` without a token (Prometheus scrapers usually have
    /// none). Set false to require the operator token there too. `/health`
    /// is always open. Default true.
    pub open_metrics: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_file: None,
            allow_anonymous: false,
            open_metrics: true,
        }
    }
}

/// `[http]`: limits of the API's HTTP/1.1 server. Each one that fires is
/// counted in `strata_central_http_limits_total{limit=...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpConfig {
    /// Time a client has to send a whole request head (request line and
    /// headers), from its first byte, or from the accept for a new
    /// connection. Stops slowloris clients. Default "10s".
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time an open keep-alive connection may sit without a request (and a
    /// response may sit unread) before it is closed. Default "60s".
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time one request may take from its complete head to its response,
    /// body upload included; then it answers 408 and the connection closes.
    /// Must exceed `request-timeout-ms` and `membership-timeout` (a replica
    /// add legitimately waits that long). Default "90s".
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Most open connections; a connection beyond it is closed at once.
    /// Default 1024.
    pub max_connections: usize,
    /// Largest request head (request line and headers), in bytes; larger
    /// answers 431. Default 16384 (16 KiB).
    pub max_header_bytes: usize,
    /// Largest JSON or TOML request body, in bytes; larger answers 413.
    /// Module uploads have their own limit (8 MiB). Default 1048576 (1 MiB).
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(90),
            max_connections: 1024,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Bounds of the `[http]` values: below them a normal client fails, above
/// them a limit no longer protects anything.
const HTTP_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));
const MAX_CONNECTIONS_RANGE: (usize, usize) = (1, 1 << 20);
/// Over 64 KiB hyper's own URI limit would answer first (without our body).
const MAX_HEADER_BYTES_RANGE: (usize, usize) = (1024, 64 * 1024);
const MAX_BODY_BYTES_RANGE: (usize, usize) = (1024, 64 * 1024 * 1024);

impl HttpConfig {
    /// Every problem of the `[http]` table, keys prefixed with `http.`.
    fn problems(&self, hub_request_timeout: Duration, membership_timeout: Duration) -> Vec<String> {
        let mut problems = Vec::new();
        let (lo, hi) = HTTP_TIMEOUT_RANGE;
        for (key, v) in [
            ("header-read-timeout", self.header_read_timeout),
            ("idle-timeout", self.idle_timeout),
            ("request-timeout", self.request_timeout),
        ] {
            if v < lo || v > hi {
                problems.push(format!(
                    "http.{key}: {} must be between {} and {}",
                    humantime::format_duration(v),
                    humantime::format_duration(lo),
                    humantime::format_duration(hi)
                ));
            }
        }
        if self.request_timeout <= hub_request_timeout {
            problems.push(format!(
                "http.request-timeout: {} must be longer than request-timeout-ms ({} ms), or \
                 slow hubs would end requests with 408 instead of their own error",
                humantime::format_duration(self.request_timeout),
                hub_request_timeout.as_millis()
            ));
        }
        if self.request_timeout <= membership_timeout {
            problems.push(format!(
                "http.request-timeout: {} must be longer than membership-timeout ({}), or a \
                 replica add that is still catching up would end with 408",
                humantime::format_duration(self.request_timeout),
                humantime::format_duration(membership_timeout)
            ));
        }
        for (key, v, (lo, hi)) in [
            (
                "max-connections",
                self.max_connections,
                MAX_CONNECTIONS_RANGE,
            ),
            (
                "max-header-bytes",
                self.max_header_bytes,
                MAX_HEADER_BYTES_RANGE,
            ),
            ("max-body-bytes", self.max_body_bytes, MAX_BODY_BYTES_RANGE),
        ] {
            if v < lo || v > hi {
                problems.push(format!("http.{key}: {v} must be in {lo}..={hi}"));
            }
        }
        problems
    }
}

/// One region: a name and the client-facing QUIC addresses of its hubs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegionConfig {
    /// Region name, as the hubs know it (they refuse a mismatch). Letters,
    /// digits, `-`, `_` and `.`; appears in API paths. Required.
    pub name: String,
    /// Hub addresses as `host:port` (client-facing QUIC port). More replicas
    /// are learned from the hubs' membership. At least one required.
    pub hubs: Vec<String>,
}

impl Default for CentralConfig {
    fn default() -> Self {
        CentralConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: TlsFiles::default(),
            regions: Vec::new(),
            request_timeout_ms: 5000,
            connect_timeout_ms: 2000,
            membership_timeout: Duration::from_secs(60),
            data_dir: PathBuf::from("strata-data/central"),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            cluster: ClusterConfig::default(),
            global: GlobalTuning::default(),
        }
    }
}

/// True for a name that is safe in a URL path segment and a metric label.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks `host:port` syntax without resolving the host.
pub(crate) fn check_host_port(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("expected host:port".into());
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("host is empty".into());
    }
    match port.parse::<u16>() {
        Ok(0) => Err("port 0 is not dialable".into()),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("port {port:?} is not a number in 1..=65535")),
    }
}

impl CentralConfig {
    /// Reads, parses and validates a TOML file. Every error names the file.
    pub fn load(path: &Path) -> Result<CentralConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let cfg: CentralConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        match cfg.validate() {
            Ok(()) => Ok(cfg),
            Err(ConfigError::Invalid { problems, .. }) => Err(ConfigError::Invalid {
                path: Some(path.to_owned()),
                problems,
            }),
            Err(e) => Err(e),
        }
    }

    /// Reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = self.tls.problems("tls");
        if self.regions.is_empty() {
            problems.push("regions: at least one region is required".into());
        }
        let mut names = BTreeSet::new();
        for (i, r) in self.regions.iter().enumerate() {
            let key = format!("regions[{i}]");
            if r.name.is_empty() {
                problems.push(format!("{key}.name: required"));
            } else if !valid_name(&r.name) {
                problems.push(format!(
                    "{key}.name: {:?} may only contain letters, digits, '-', '_' and '.' (max 64)",
                    r.name
                ));
            } else if !names.insert(r.name.as_str()) {
                problems.push(format!("{key}.name: region {:?} is listed twice", r.name));
            }
            if r.hubs.is_empty() {
                problems.push(format!("{key}.hubs: at least one hub address is required"));
            }
            if r.hubs.len() > MAX_HUBS_PER_REGION {
                problems.push(format!(
                    "{key}.hubs: {} addresses, at most {MAX_HUBS_PER_REGION}",
                    r.hubs.len()
                ));
            }
            let mut seen = BTreeSet::new();
            for (j, h) in r.hubs.iter().enumerate() {
                if let Err(why) = check_host_port(h) {
                    problems.push(format!("{key}.hubs[{j}]: {h:?}: {why}"));
                } else if !seen.insert(h.as_str()) {
                    problems.push(format!("{key}.hubs[{j}]: {h:?} is listed twice"));
                }
            }
        }
        for (key, v) in [
            ("request-timeout-ms", self.request_timeout_ms),
            ("connect-timeout-ms", self.connect_timeout_ms),
        ] {
            if v == 0 || v > MAX_TIMEOUT_MS {
                problems.push(format!("{key}: {v} must be in 1..={MAX_TIMEOUT_MS}"));
            }
        }
        if self.membership_timeout < Duration::from_millis(100)
            || self.membership_timeout > MAX_MEMBERSHIP_TIMEOUT
        {
            problems.push(format!(
                "membership-timeout: {} must be between 100ms and 1h",
                humantime_serde::re::humantime::format_duration(self.membership_timeout)
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data-dir: must not be empty".into());
        }
        if self
            .auth
            .token_file
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty() || f.file_name().is_none())
        {
            problems.push("auth.token-file: must name a file".into());
        }
        problems.extend(
            self.http
                .problems(self.request_timeout(), self.membership_timeout),
        );
        problems.extend(self.cluster.problems());
        for (key, v) in [
            ("global.interval", self.global.interval),
            ("global.summary-interval", self.global.summary_interval),
        ] {
            if v < Duration::from_millis(100) || v > Duration::from_secs(60) {
                problems.push(format!(
                    "{key}: {} must be between 100ms and 1m",
                    humantime::format_duration(v)
                ));
            }
        }
        problems.extend(self.global.forecast.problems(self.global.interval));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: None,
                problems,
            })
        }
    }

    /// The request deadline as a [`Duration`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The dial deadline as a [`Duration`].
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The operator token file: `auth.token-file`, else
    /// `<data-dir>/operator.token`.
    pub fn token_file(&self) -> PathBuf {
        self.auth
            .token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::auth::TOKEN_FILE_NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_in(dir: &Path) -> TlsFiles {
        let pki = strata_net::Pki::ensure(dir).unwrap();
        pki.node("central").unwrap()
    }

    #[test]
    fn parses_a_full_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let tls = tls_in(dir.path());
        let text = format!(
            "listen = \"127.0.0.1:0\"\nrequest-timeout-ms = 750\n\
             membership-timeout = \"80s\"\n\
             tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}\n\
             [[regions]]\nname = \"west\"\nhubs = [\"127.0.0.1:7101\", \"hub-2.local:7102\"]\n",
            tls.ca, tls.cert, tls.key
        );
        let path = dir.path().join("central.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = CentralConfig::load(&path).unwrap();
        assert_eq!(cfg.request_timeout_ms, 750);
        assert_eq!(cfg.connect_timeout_ms, 2000);
        assert_eq!(cfg.membership_timeout, Duration::from_secs(80));
        assert_eq!(cfg.regions[0].hubs.len(), 2);
        assert_eq!(CentralConfig::default().listen.port(), 8080);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:0\"\nrequest-timeout = 5\n").unwrap();
        let err = CentralConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("c.toml"), "{err}");
        assert!(err.contains("request-timeout"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem() {
        let cfg = CentralConfig {
            regions: vec![
                RegionConfig {
                    name: "west".into(),
                    hubs: vec!["nohost".into(), "h:0".into(), "h:1".into(), "h:1".into()],
                },
                RegionConfig {
                    name: "west".into(),
                    hubs: vec![],
                },
                RegionConfig {
                    name: "bad/name".into(),
                    hubs: vec![":80".into()],
                },
            ],
            request_timeout_ms: 0,
            membership_timeout: Duration::from_millis(10),
            data_dir: PathBuf::new(),
            auth: AuthConfig {
                token_file: Some("/".into()),
                ..AuthConfig::default()
            },
            http: HttpConfig {
                header_read_timeout: Duration::ZERO,
                idle_timeout: Duration::from_secs(7200),
                max_connections: 0,
                max_header_bytes: 100,
                max_body_bytes: usize::MAX,
                ..HttpConfig::default()
            },
            ..CentralConfig::default()
        };
        let Err(ConfigError::Invalid { problems, .. }) = cfg.validate() else {
            panic!("expected Invalid");
        };
        let all = problems.join("\n");
        for needle in [
            "tls.ca",
            "regions[0].hubs[0]",
            "regions[0].hubs[1]",
            "regions[0].hubs[3]: \"h:1\" is listed twice",
            "regions[1].name: region \"west\" is listed twice",
            "regions[1].hubs: at least one",
            "regions[2].name",
            "regions[2].hubs[0]: \":80\": host is empty",
            "request-timeout-ms",
            "membership-timeout",
            "data-dir",
            "auth.token-file",
            "http.header-read-timeout: 0s",
            "http.idle-timeout: 2h",
            "http.max-connections",
            "http.max-header-bytes",
            "http.max-body-bytes",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let empty = CentralConfig::default().validate().unwrap_err().to_string();
        assert!(empty.contains("at least one region"), "{empty}");
    }

    /// docs/config/central.toml is the reference users copy: it must parse,
    /// and the defaults it shows must be the real ones.
    #[test]
    fn documented_example_parses_with_true_defaults() {
        let doc: CentralConfig =
            toml::from_str(include_str!("../../docs/config/central.toml")).unwrap();
        let d = CentralConfig::default();
        assert_eq!(doc.listen, d.listen);
        assert_eq!(doc.request_timeout_ms, d.request_timeout_ms);
        assert_eq!(doc.connect_timeout_ms, d.connect_timeout_ms);
        assert_eq!(doc.membership_timeout, d.membership_timeout);
        assert_eq!(doc.data_dir, d.data_dir);
        assert_eq!(doc.auth, d.auth);
        assert_eq!(doc.http, d.http);
        assert_eq!(
            doc.global,
            GlobalTuning {
                seed: None,
                ..d.global
            }
        );
        assert_eq!(doc.regions.len(), 1);
    }

    #[test]
    fn forecast_settings_default_parse_and_report_every_problem() {
        let d = ForecastTuning::default();
        assert!(
            d.problems(Duration::from_secs(1)).is_empty(),
            "{:?}",
            d.problems(Duration::from_secs(1))
        );
        let p = d.predictor().unwrap();
        assert_eq!(
            (p.step_ms, p.refit_steps, p.periods()),
            (300_000, 12, vec![288, 2016])
        );
        assert_eq!(p.min_points(), 2016, "a week of history");
        let cfg: GlobalTuning = toml::from_str(
            "interval = \"100ms\"\n[forecast]\nstep = \"200ms\"\nhorizon = \"1s\"\n\
             seasons = [\"6s\"]\nrefit = \"2s\"\n",
        )
        .unwrap();
        assert!(cfg.forecast.problems(cfg.interval).is_empty());
        assert_eq!(cfg.forecast.predictor().unwrap().periods(), vec![30]);
        let bad = ForecastTuning {
            step: Duration::from_secs(60),
            horizon: Duration::from_secs(30),
            seasons: vec![
                Duration::from_secs(7 * 86_400).into(),
                Duration::from_secs(90).into(),
            ],
            refit: Duration::from_secs(1),
            enabled: true,
        };
        let all = bad.problems(Duration::from_secs(1)).join("\n");
        for needle in [
            "global.forecast.horizon: 30s is shorter than step 1m",
            "global.forecast.refit: 1s is shorter than step",
            "global.forecast.seasons: must be ascending",
            "global.forecast.seasons[1]: 1m 30s must be a multiple of step",
            "more than the 4096 kept",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let slow = ForecastTuning::default().problems(Duration::from_secs(600));
        assert!(slow[0].contains("global.forecast.step"), "{slow:?}");
        assert!(toml::from_str::<ForecastTuning>("stepp = \"1m\"").is_err());
        let off = ForecastTuning {
            enabled: false,
            ..ForecastTuning::default()
        };
        assert_eq!(off.predictor(), None);
    }

    #[test]
    fn http_durations_are_humantime_and_request_timeout_exceeds_the_hubs() {
        let mut cfg: CentralConfig = toml::from_str(
            "request-timeout-ms = 5000\n[http]\nheader-read-timeout = \"1500ms\"\n\
             request-timeout = \"5s\"\n[auth]\ntoken-file = \"/etc/strata/op.token\"\n",
        )
        .unwrap();
        assert_eq!(cfg.http.header_read_timeout, Duration::from_millis(1500));
        assert_eq!(cfg.token_file(), PathBuf::from("/etc/strata/op.token"));
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("http.request-timeout: 5s must be longer than request-timeout-ms"),
            "{err}"
        );
        cfg.auth.token_file = None;
        assert_eq!(
            cfg.token_file(),
            PathBuf::from("strata-data/central/operator.token")
        );
        let bad = toml::from_str::<CentralConfig>("[http]\nidle-timeout = 60\n");
        assert!(bad.is_err(), "a bare number is not a duration");
    }
}
