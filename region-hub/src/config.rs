//! The hub's TOML configuration and its validation.
//!
//! ```toml
//! region = "eu-west"
//! id = 1
//! data-dir = "/var/lib/strata/hub-1"
//! peer-listen = "0.0.0.0:7401"
//! client-listen = "0.0.0.0:7501"
//! metrics-listen = "127.0.0.1:9401"
//! peers = [
//!   { id = 1, peer-addr = "10.0.0.1:7401", client-addr = "10.0.0.1:7501" },
//!   { id = 2, peer-addr = "10.0.0.2:7401", client-addr = "10.0.0.2:7501" },
//!   { id = 3, peer-addr = "10.0.0.3:7401", client-addr = "10.0.0.3:7501" },
//! ]
//! tls = { ca = "pki/ca.pem", cert = "pki/hub-1.pem", key = "pki/hub-1.key" }
//! [raft]
//! tick-ms = 100
//! [membership]
//! catch-up-timeout = "30s"
//! [liveness]
//! suspect-after = "600ms"
//! [scheduler]
//! algorithm = "binpack"
//! lease-minimum = "1s"
//! [scheduler.pressure]
//! enter-percent = 90
//! leave-percent = 75
//! sustain = "30s"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_net::TlsFiles;
use strata_protocol::ReplicaInfo;

use crate::liveness::CoreConfig as LivenessConfig;
use crate::raft::{MembershipConfig, NodeConfig};
use crate::scheduler::{CoreConfig as SchedCoreConfig, LeaseConfig};
use crate::service::SchedSettings;
use crate::store::StoreConfig;
use strata_sched::{Algorithm, PressureConfig, SchedulerConfig};

/// The configuration was invalid; every problem is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hub configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    /// One message per problem, naming the field.
    pub problems: Vec<String>,
}

/// One member of the initial Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeerConfig {
    /// Raft id (≥ 1, unique). Required.
    pub id: u64,
    /// Hub ↔ hub QUIC address, `host:port`. Required.
    pub peer_addr: String,
    /// Edge / central QUIC address, `host:port`, given to edges as the
    /// leader hint. Required.
    pub client_addr: String,
}

/// Raft tuning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RaftTuning {
    /// Length of one Raft tick, in ms. Default 100.
    pub tick_ms: u64,
    /// Ticks without hearing a leader before an election. Default 10
    /// (one second with the default tick).
    pub election_ticks: usize,
    /// Ticks between leader heartbeats; less than `election-ticks`. Default 2.
    pub heartbeat_ticks: usize,
    /// Byte limit of entries in one append message. Default 4 194 304 (4 MiB).
    pub max_size_per_msg: u64,
    /// Append messages in flight per follower. Default 256.
    pub max_inflight_msgs: usize,
    /// Log entries kept behind each checkpoint so a briefly lagging
    /// follower catches up from the log rather than a snapshot. Default 1024.
    pub log_retain_entries: u64,
    /// Raft messages to one peer are framed up to this many bytes; a
    /// larger message (a snapshot, an append with a huge entry) goes on its
    /// own chunked stream, in chunks of half this. 1 KiB to 8 MiB. Default
    /// 8 388 608 (8 MiB).
    pub peer_frame_bytes: usize,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_size_per_msg: 4 * 1024 * 1024,
            max_inflight_msgs: 256,
            log_retain_entries: 1024,
            peer_frame_bytes: strata_consensus::quic::MAX_FRAME_TARGET,
        }
    }
}

/// Membership safety (`[membership]`): a new replica joins as a learner
/// and is promoted to voter only once it has caught up; the leader reports
/// members it cannot hear from. See `consensus/src/membership.rs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MembershipTuning {
    /// Deadline for a new replica to answer the leader and catch up as a
    /// learner; past it the add is refused with the reason and the learner
    /// removed. Raise it for regions whose snapshot takes longer to send.
    /// Humantime (e.g. "30s", "2m"). Default "30s".
    #[serde(with = "humantime_serde")]
    pub catch_up_timeout: Duration,
    /// A learner is caught up when its matched log index is within this
    /// many entries of the leader's last index; a member further behind is
    /// reported as lagging. Entries. Default 1000.
    pub max_lag_entries: u64,
    /// A member the leader has not heard from for this long is reported
    /// unreachable (the region is then degraded), and a learner is not
    /// caught up. Humantime; more than two heartbeat intervals. Default "2s".
    #[serde(with = "humantime_serde")]
    pub unreachable_after: Duration,
}

impl Default for MembershipTuning {
    fn default() -> Self {
        let d = MembershipConfig::default();
        MembershipTuning {
            catch_up_timeout: d.catch_up_timeout,
            max_lag_entries: d.max_lag_entries,
            unreachable_after: d.unreachable_after,
        }
    }
}

/// Edge failure detection (`[liveness]`): see `crate::liveness`. With the
/// edges' default 250 ms heartbeats, a SIGKILLed edge is declared down at
/// most `suspect-after + grace` (900 ms) after its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LivenessTuning {
    /// No heartbeat (nor batch) from an up edge for this long makes it
    /// suspect. Keep it above two of the edges' heartbeat periods
    /// (`uplink.heartbeat-ms`, 250 ms by default). Humantime, 100ms to 1h.
    /// Default "600ms".
    #[serde(with = "humantime_serde")]
    pub suspect_after: Duration,
    /// The grace period: a suspect edge not heard from for this long more
    /// is declared down. Humantime, at most 1h. Default "300ms".
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// A new leader declares no edge down that it has not heard from
    /// itself before this much of its own leadership has passed: edges
    /// need that long to notice the old leader is gone and find the new
    /// one, and a leader change must not look like a mass failure (an edge
    /// it heard and then lost is judged as usual). Humantime, at least
    /// suspect-after + grace. Default "5s".
    #[serde(with = "humantime_serde")]
    pub leader_grace: Duration,
    /// The leader replicates each heartbeating edge's latest report at
    /// least this often, so followers and the next leader are not blind.
    /// Humantime, 1s to 1h. Default "30s".
    #[serde(with = "humantime_serde")]
    pub report_interval: Duration,
    /// ...and when the report changed materially (monitor instances,
    /// capacity, assignments version), at most this often. Humantime, at
    /// most report-interval. Default "1s".
    #[serde(with = "humantime_serde")]
    pub report_min_interval: Duration,
    /// An edge declared down this many times within `flap-window` is
    /// flapping: it is declared back only after heartbeating steadily for
    /// `flap-hold`. At least 1. Default 3.
    pub flap_downs: u32,
    /// See `flap-downs`. Humantime, at least 1s. Default "1m".
    #[serde(with = "humantime_serde")]
    pub flap_window: Duration,
    /// See `flap-downs`. Humantime, at most 1h. Default "10s".
    #[serde(with = "humantime_serde")]
    pub flap_hold: Duration,
}

impl Default for LivenessTuning {
    fn default() -> Self {
        let d = LivenessConfig::default();
        LivenessTuning {
            suspect_after: Duration::from_millis(d.suspect_after_ms),
            grace: Duration::from_millis(d.grace_ms),
            leader_grace: Duration::from_millis(d.leader_grace_ms),
            report_interval: Duration::from_millis(d.report_interval_ms),
            report_min_interval: Duration::from_millis(d.report_min_interval_ms),
            flap_downs: d.flap_downs as u32,
            flap_window: Duration::from_millis(d.flap_window_ms),
            flap_hold: Duration::from_millis(d.flap_hold_ms),
        }
    }
}

impl LivenessTuning {
    /// The failure detector's configuration.
    pub fn core_config(&self) -> LivenessConfig {
        let ms = |d: Duration| d.as_millis() as u64;
        LivenessConfig {
            suspect_after_ms: ms(self.suspect_after),
            grace_ms: ms(self.grace),
            leader_grace_ms: ms(self.leader_grace),
            report_interval_ms: ms(self.report_interval),
            report_min_interval_ms: ms(self.report_min_interval),
            flap_downs: self.flap_downs as usize,
            flap_window_ms: ms(self.flap_window),
            flap_hold_ms: ms(self.flap_hold),
        }
    }

    fn problems(&self) -> Vec<String> {
        let f = |d: Duration| humantime_serde::re::humantime::format_duration(d).to_string();
        let hour = Duration::from_secs(3600);
        let mut p = Vec::new();
        if self.suspect_after < Duration::from_millis(100) || self.suspect_after > hour {
            p.push(format!(
                "liveness.suspect-after: {} must be between 100ms and 1h",
                f(self.suspect_after)
            ));
        }
        for (key, d) in [("grace", self.grace), ("flap-hold", self.flap_hold)] {
            if d > hour {
                p.push(format!("liveness.{key}: {} must be at most 1h", f(d)));
            }
        }
        if self.leader_grace < self.suspect_after + self.grace || self.leader_grace > hour {
            p.push(format!(
                "liveness.leader-grace: {} must be at least suspect-after + grace ({}) and at most 1h",
                f(self.leader_grace),
                f(self.suspect_after + self.grace)
            ));
        }
        if self.report_interval < Duration::from_secs(1) || self.report_interval > hour {
            p.push(format!(
                "liveness.report-interval: {} must be between 1s and 1h",
                f(self.report_interval)
            ));
        }
        if self.report_min_interval > self.report_interval {
            p.push(format!(
                "liveness.report-min-interval: {} must be at most report-interval ({})",
                f(self.report_min_interval),
                f(self.report_interval)
            ));
        }
        if self.flap_downs == 0 {
            p.push("liveness.flap-downs: must be at least 1".to_owned());
        }
        if self.flap_window < Duration::from_secs(1) || self.flap_window > hour {
            p.push(format!(
                "liveness.flap-window: {} must be between 1s and 1h",
                f(self.flap_window)
            ));
        }
        p
    }
}

/// The region scheduler (`[scheduler]`): ranking, and the leases of
/// `replace-after` workloads. See `crate::scheduler` for the lease
/// arithmetic these feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SchedulerTuning {
    /// How ranking weighs an edge's fullness: `binpack` (prefer fuller
    /// edges, keeping whole edges free) or `spread` (prefer emptier ones).
    /// Default `binpack`.
    pub algorithm: Algorithm,
    /// The lease minimum: the smallest `placement.replace-after` a spec may
    /// ask for (an edge stops such an instance when it cannot renew its
    /// lease for that long, so it must span several heartbeats).
    /// Humantime, 500ms to 1h. Default "1s".
    #[serde(with = "humantime_serde")]
    pub lease_minimum: Duration,
    /// Added to every lease the region counts before it replaces an
    /// instance: covers the edge stopping it (a callback in progress),
    /// processing delays and clock drift. Humantime, 100ms to 1h.
    /// Default "1s".
    #[serde(with = "humantime_serde")]
    pub lease_margin: Duration,
    /// How long a submit waits for the workload's first evaluation, so its
    /// answer says where it runs. Humantime, at most 1m. Default "2s".
    #[serde(with = "humantime_serde")]
    pub submit_wait: Duration,
    /// Feasible edges ranked per placement when a workload has soft rules
    /// (affinity, spread). At least 1. Default 100.
    pub soft_rule_candidates: u32,
    /// Rebalancing under pressure (`[scheduler.pressure]`): an edge whose
    /// instances' measured use stays at or above `enter-percent` of the
    /// capacity it offers monitors for `sustain` moves its lowest-priority
    /// movable instances elsewhere. Fields (all optional):
    /// - `enabled`: move anything at all (when false, pressure is still
    ///   measured and shown in `strata_hub_pressured_edges`). Default true.
    /// - `enter-percent`: percent of capacity, 1-100, at or above which a
    ///   dimension (CPU or memory) is hot. Default 90.
    /// - `leave-percent`: percent below which every dimension must fall for
    ///   the edge to calm down; below `enter-percent`. Default 75.
    /// - `sustain`: humantime; how long an edge must stay hot before it
    ///   sheds, and how long it waits between sheds. Default "30s".
    /// - `moves-per-window`: moves allowed in the whole region per
    ///   `window` (0: none). Default 4.
    /// - `window`: humantime, longer than 0. Default "5m".
    /// - `cooldown`: humantime; a moved instance is not moved again for
    ///   this long. Default "10m".
    /// - `sample-every`: humantime; how often the leader samples measured
    ///   use, longer than 0 and at most `sustain`. Default "5s".
    pub pressure: PressureConfig,
}

impl Default for SchedulerTuning {
    fn default() -> Self {
        SchedulerTuning {
            algorithm: Algorithm::Binpack,
            lease_minimum: Duration::from_secs(1),
            lease_margin: Duration::from_secs(1),
            submit_wait: Duration::from_secs(2),
            soft_rule_candidates: SchedulerConfig::default().soft_rule_candidates,
            pressure: PressureConfig::default(),
        }
    }
}

impl SchedulerTuning {
    /// The scheduler's ranking settings (one instance per edge: an edge
    /// keys instances by workload).
    pub fn sched_config(&self) -> SchedulerConfig {
        SchedulerConfig {
            algorithm: self.algorithm,
            soft_rule_candidates: self.soft_rule_candidates,
            one_per_node: true,
            ..SchedulerConfig::default()
        }
    }

    fn problems(&self) -> Vec<String> {
        let f = |d: Duration| humantime_serde::re::humantime::format_duration(d).to_string();
        let hour = Duration::from_secs(3600);
        let mut p = Vec::new();
        if self.lease_minimum < Duration::from_millis(500) || self.lease_minimum > hour {
            p.push(format!(
                "scheduler.lease-minimum: {} must be between 500ms and 1h",
                f(self.lease_minimum)
            ));
        }
        if self.lease_margin < Duration::from_millis(100) || self.lease_margin > hour {
            p.push(format!(
                "scheduler.lease-margin: {} must be between 100ms and 1h",
                f(self.lease_margin)
            ));
        }
        if self.submit_wait > Duration::from_secs(60) {
            p.push(format!(
                "scheduler.submit-wait: {} must be at most 1m",
                f(self.submit_wait)
            ));
        }
        if self.soft_rule_candidates == 0 {
            p.push("scheduler.soft-rule-candidates: must be at least 1".to_owned());
        }
        if let Err(errs) = self.pressure.validate() {
            p.extend(
                errs.into_iter()
                    .map(|e| format!("scheduler.pressure.{}: {}", e.field, e.message)),
            );
        }
        p
    }
}

/// Bounds on monitor instances' state checkpoints (`[checkpoints]`), which
/// edges send through their spools and the region keeps (one per instance)
/// for replacements. The leader stamps them into each batch that carries a
/// checkpoint, so every replica applies the same bounds; a checkpoint
/// beyond them is refused and counted
/// (`strata_hub_checkpoints_refused_total{reason}`), never an error. A full
/// region first evicts checkpoints no instance runs under any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckpointTuning {
    /// Largest state of one checkpoint, bytes. 1 to `max-region-bytes`.
    /// Default 65536.
    pub max_bytes: u64,
    /// Most checkpoint state bytes the region keeps, bytes. At most
    /// 4194304 (a quarter of a frame, so every checkpoint of the region
    /// fits in one edge's allocations answer next to the specs).
    /// Default 4194304.
    pub max_region_bytes: u64,
}

/// Most `checkpoints.max-region-bytes` (see [`CheckpointTuning`]).
pub const MAX_REGION_CHECKPOINT_BYTES: u64 = (strata_protocol::MAX_FRAME_LEN / 4) as u64;

impl Default for CheckpointTuning {
    fn default() -> Self {
        let d = crate::fsm::CheckpointLimits::default();
        CheckpointTuning {
            max_bytes: d.max_bytes,
            max_region_bytes: d.max_region_bytes,
        }
    }
}

impl CheckpointTuning {
    /// The limits the leader stamps into entries.
    pub fn limits(&self) -> crate::fsm::CheckpointLimits {
        crate::fsm::CheckpointLimits {
            max_bytes: self.max_bytes,
            max_region_bytes: self.max_region_bytes,
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_region_bytes == 0 || self.max_region_bytes > MAX_REGION_CHECKPOINT_BYTES {
            p.push(format!(
                "checkpoints.max-region-bytes: {} must be between 1 and {MAX_REGION_CHECKPOINT_BYTES}",
                self.max_region_bytes
            ));
        }
        if self.max_bytes == 0 || self.max_bytes > self.max_region_bytes {
            p.push(format!(
                "checkpoints.max-bytes: {} must be between 1 and max-region-bytes ({})",
                self.max_bytes, self.max_region_bytes
            ));
        }
        p
    }
}

/// The whole `hub.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HubConfig {
    /// Region served by this group. Required; `[A-Za-z0-9_.-]`, ≤ 64 chars.
    pub region: String,
    /// This replica's Raft id (≥ 1). Required.
    pub id: u64,
    /// Data directory: the Raft log goes to `<data-dir>/raft`, the store to
    /// `<data-dir>/<store.dir>` when `store.dir` is relative. Default `"data/hub"`.
    pub data_dir: PathBuf,
    /// Hub ↔ hub QUIC listen address. Default `0.0.0.0:7401`.
    pub peer_listen: SocketAddr,
    /// Edge / central QUIC listen address. Default `0.0.0.0:7501`.
    pub client_listen: SocketAddr,
    /// Prometheus `/metrics` + `/health` HTTP address; none when unset. Default unset.
    pub metrics_listen: Option<SocketAddr>,
    /// The initial group (1, 3 or 5 replicas, including this one), used on
    /// first start only. Required unless `join`; with `join`, the existing
    /// members to contact until the leader's snapshot brings the membership.
    pub peers: Vec<PeerConfig>,
    /// Start empty and wait to be added with `AddReplica` on the leader,
    /// instead of bootstrapping from `peers`. Default false.
    pub join: bool,
    /// Mutual-TLS material (PEM paths). Required.
    pub tls: TlsFiles,
    /// Raft tuning.
    pub raft: RaftTuning,
    /// Time between telemetry store checkpoints (after which the Raft log
    /// is compacted), in ms. Default 2000.
    pub checkpoint_interval_ms: u64,
    /// Telemetry store settings.
    pub store: StoreConfig,
    /// Membership safety.
    pub membership: MembershipTuning,
    /// Edge failure detection.
    pub liveness: LivenessTuning,
    /// The region scheduler.
    pub scheduler: SchedulerTuning,
    /// Bounds on monitor state checkpoints.
    pub checkpoints: CheckpointTuning,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            region: String::new(),
            id: 0,
            data_dir: PathBuf::from("data/hub"),
            peer_listen: SocketAddr::from(([0, 0, 0, 0], 7401)),
            client_listen: SocketAddr::from(([0, 0, 0, 0], 7501)),
            metrics_listen: None,
            peers: Vec::new(),
            join: false,
            tls: TlsFiles::default(),
            raft: RaftTuning::default(),
            checkpoint_interval_ms: 2000,
            store: StoreConfig::default(),
            membership: MembershipTuning::default(),
            liveness: LivenessTuning::default(),
            scheduler: SchedulerTuning::default(),
            checkpoints: CheckpointTuning::default(),
        }
    }
}

/// Longest accepted catch-up deadline: longer only hides a dead replica.
const MAX_CATCH_UP: Duration = Duration::from_secs(3600);

fn valid_addr(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

impl HubConfig {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<HubConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![e.to_string()],
        })
    }

    /// Checks everything and reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        if self.region.is_empty() || self.region.len() > 64 {
            p.push("region: required, at most 64 characters".to_owned());
        } else if !self
            .region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            p.push(format!(
                "region: {:?} may only contain [A-Za-z0-9_.-]",
                self.region
            ));
        }
        if self.id == 0 {
            p.push("id: required, must be at least 1".to_owned());
        }
        if self.data_dir.as_os_str().is_empty() {
            p.push("data-dir: required".to_owned());
        }
        if self.peer_listen == self.client_listen && self.peer_listen.port() != 0 {
            p.push(format!(
                "peer-listen and client-listen are both {}",
                self.peer_listen
            ));
        }
        if !self.join {
            if ![1, 3, 5].contains(&self.peers.len()) {
                p.push(format!(
                    "peers: the initial group must have 1, 3 or 5 replicas, got {}",
                    self.peers.len()
                ));
            }
            if self.id != 0 && !self.peers.iter().any(|m| m.id == self.id) {
                p.push(format!(
                    "peers: must include this replica (id {}), or set join = true",
                    self.id
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, m) in self.peers.iter().enumerate() {
            if m.id == 0 {
                p.push(format!("peers[{i}].id: must be at least 1"));
            } else if !seen.insert(m.id) {
                p.push(format!("peers[{i}].id: {} appears twice", m.id));
            }
            if !valid_addr(&m.peer_addr) {
                p.push(format!(
                    "peers[{i}].peer-addr: {:?} is not host:port",
                    m.peer_addr
                ));
            }
            if !valid_addr(&m.client_addr) {
                p.push(format!(
                    "peers[{i}].client-addr: {:?} is not host:port",
                    m.client_addr
                ));
            }
        }
        p.extend(self.tls.problems("tls"));
        let r = &self.raft;
        if r.tick_ms == 0 || r.tick_ms > 10_000 {
            p.push(format!("raft.tick-ms: {} must be 1..=10000", r.tick_ms));
        }
        if r.heartbeat_ticks == 0 {
            p.push("raft.heartbeat-ticks: must be at least 1".to_owned());
        }
        if r.election_ticks <= r.heartbeat_ticks {
            p.push(format!(
                "raft.election-ticks: {} must be greater than heartbeat-ticks {}",
                r.election_ticks, r.heartbeat_ticks
            ));
        }
        if r.max_size_per_msg < 4096 || r.max_size_per_msg > 8 * 1024 * 1024 {
            p.push(format!(
                "raft.max-size-per-msg: {} must be 4096..=8388608 bytes (peer frames are at most 16 MiB)",
                r.max_size_per_msg
            ));
        }
        if r.max_inflight_msgs == 0 {
            p.push("raft.max-inflight-msgs: must be at least 1".to_owned());
        }
        if !(1024..=strata_consensus::quic::MAX_FRAME_TARGET).contains(&r.peer_frame_bytes) {
            p.push(format!(
                "raft.peer-frame-bytes: {} must be 1024..=8388608 bytes",
                r.peer_frame_bytes
            ));
        }
        let m = &self.membership;
        if m.catch_up_timeout < Duration::from_secs(1) || m.catch_up_timeout > MAX_CATCH_UP {
            p.push(format!(
                "membership.catch-up-timeout: {} must be between 1s and 1h",
                humantime_serde::re::humantime::format_duration(m.catch_up_timeout)
            ));
        }
        if m.max_lag_entries == 0 {
            p.push("membership.max-lag-entries: must be at least 1".to_owned());
        }
        let heartbeats =
            Duration::from_millis(r.tick_ms.saturating_mul(2 * r.heartbeat_ticks as u64));
        if m.unreachable_after <= heartbeats {
            p.push(format!(
                "membership.unreachable-after: {} must exceed two heartbeat intervals ({} ms): \
                 a healthy member would flap to unreachable",
                humantime_serde::re::humantime::format_duration(m.unreachable_after),
                heartbeats.as_millis()
            ));
        }
        p.extend(self.liveness.problems());
        p.extend(self.scheduler.problems());
        p.extend(self.checkpoints.problems());
        if self.checkpoint_interval_ms < 100 {
            p.push(format!(
                "checkpoint-interval-ms: {} must be at least 100",
                self.checkpoint_interval_ms
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }

    /// The initial group as protocol records.
    pub fn initial_members(&self) -> Vec<ReplicaInfo> {
        self.peers
            .iter()
            .map(|m| ReplicaInfo {
                id: m.id,
                peer_addr: m.peer_addr.clone(),
                client_addr: m.client_addr.clone(),
                voter: true,
            })
            .collect()
    }

    /// The node core's slice of the configuration.
    pub fn node_config(&self) -> NodeConfig {
        NodeConfig {
            group: self.region.clone(),
            id: self.id,
            raft_dir: self.data_dir.join("raft"),
            initial_members: self.initial_members(),
            join: self.join,
            election_ticks: self.raft.election_ticks,
            heartbeat_ticks: self.raft.heartbeat_ticks,
            max_size_per_msg: self.raft.max_size_per_msg,
            max_inflight_msgs: self.raft.max_inflight_msgs,
            log_retain_entries: self.raft.log_retain_entries,
            membership: MembershipConfig {
                catch_up_timeout: self.membership.catch_up_timeout,
                max_lag_entries: self.membership.max_lag_entries,
                unreachable_after: self.membership.unreachable_after,
            },
        }
    }

    /// Time between store checkpoints.
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms)
    }

    /// Directories that must be private and are checked at start: the data
    /// directory, and the store's when it lies outside it.
    pub fn private_dirs(&self) -> Vec<PathBuf> {
        let store = self.store_config().dir;
        let mut dirs = vec![self.data_dir.clone()];
        if !store.starts_with(&self.data_dir) {
            dirs.push(store);
        }
        dirs
    }

    /// The store's configuration with its directory resolved.
    pub fn store_config(&self) -> StoreConfig {
        let mut s = self.store.clone();
        if s.dir.is_relative() {
            s.dir = self.data_dir.join(&s.dir);
        }
        s
    }

    /// The scheduler core's configuration. The leader-change bound is two
    /// election timeouts (see `crate::scheduler` for why).
    pub fn sched_core_config(&self) -> SchedCoreConfig {
        let election_ms = self
            .raft
            .tick_ms
            .saturating_mul(self.raft.election_ticks as u64);
        SchedCoreConfig {
            sched: self.scheduler.sched_config(),
            lease: LeaseConfig {
                margin_ms: self.scheduler.lease_margin.as_millis() as u64,
                leader_bound_ms: election_ms.saturating_mul(2),
            },
            carrier_refresh_ms: 1_000,
            pressure: self.scheduler.pressure,
        }
    }

    /// What the service checks submissions with.
    pub fn sched_settings(&self) -> SchedSettings {
        SchedSettings {
            config: self.scheduler.sched_config(),
            min_replace_after: self.scheduler.lease_minimum,
            submit_wait: self.scheduler.submit_wait,
        }
    }

    /// Tick interval.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.raft.tick_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_are_the_data_dir_and_an_outside_store() {
        let mut c = HubConfig {
            data_dir: "/d/hub".into(),
            ..HubConfig::default()
        };
        assert_eq!(c.private_dirs(), vec![PathBuf::from("/d/hub")]);
        c.store.dir = "/big/store".into();
        assert_eq!(
            c.private_dirs(),
            vec![PathBuf::from("/d/hub"), PathBuf::from("/big/store")]
        );
    }

    #[test]
    fn a_full_file_parses_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let pki = strata_net::Pki::ensure(dir.path()).unwrap();
        let tls = pki.node("hub-1").unwrap();
        let text = format!(
            r#"
region = "eu-west"
id = 1
data-dir = "{d}"
peer-listen = "127.0.0.1:7401"
client-listen = "127.0.0.1:7501"
metrics-listen = "127.0.0.1:9401"
peers = [
  {{ id = 1, peer-addr = "127.0.0.1:7401", client-addr = "127.0.0.1:7501" }},
  {{ id = 2, peer-addr = "127.0.0.1:7402", client-addr = "127.0.0.1:7502" }},
  {{ id = 3, peer-addr = "127.0.0.1:7403", client-addr = "127.0.0.1:7503" }},
]
tls = {{ ca = "{ca}", cert = "{cert}", key = "{key}" }}
checkpoint-interval-ms = 500
[raft]
tick-ms = 50
[store]
retention-ms = 0
[membership]
catch-up-timeout = "2m"
unreachable-after = "1500ms"
[liveness]
suspect-after = "400ms"
grace = "200ms"
leader-grace = "3s"
"#,
            d = dir.path().display(),
            ca = tls.ca.display(),
            cert = tls.cert.display(),
            key = tls.key.display(),
        );
        let cfg = HubConfig::from_toml(&text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.raft.tick_ms, 50);
        assert_eq!(cfg.raft.election_ticks, 10);
        assert_eq!(cfg.store_config().dir, dir.path().join("store"));
        assert_eq!(cfg.node_config().initial_members.len(), 3);
        let m = cfg.node_config().membership;
        assert_eq!(m.catch_up_timeout, Duration::from_secs(120));
        assert_eq!(m.unreachable_after, Duration::from_millis(1500));
        assert_eq!(m.max_lag_entries, 1000);
        let l = cfg.liveness.core_config();
        assert_eq!(
            (l.suspect_after_ms, l.grace_ms, l.leader_grace_ms),
            (400, 200, 3000)
        );
        assert_eq!(l.report_interval_ms, 30_000);
    }

    #[test]
    fn pressure_is_configured_in_its_own_table() {
        let cfg = HubConfig::from_toml(
            "region = \"r\"\n[scheduler.pressure]\nenabled = false\nenter-percent = 80\nsustain = \"1m\"\n",
        )
        .unwrap();
        let p = cfg.sched_core_config().pressure;
        assert!(!p.enabled);
        assert_eq!((p.enter_percent, p.leave_percent), (80, 75));
        assert_eq!(p.sustain, Duration::from_secs(60));
        let e = HubConfig::from_toml("region = \"r\"\n[scheduler.pressure]\nenter-pct = 80\n")
            .unwrap_err();
        assert!(e.to_string().contains("enter-pct"), "{e}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = HubConfig::from_toml("region = \"r\"\nregoin = \"x\"").unwrap_err();
        assert!(e.to_string().contains("regoin"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let cfg = HubConfig {
            region: "bad region".into(),
            peers: vec![
                PeerConfig {
                    id: 2,
                    peer_addr: "nope".into(),
                    client_addr: "h:1".into(),
                },
                PeerConfig {
                    id: 2,
                    peer_addr: "h:2".into(),
                    client_addr: "h:0".into(),
                },
            ],
            raft: RaftTuning {
                election_ticks: 2,
                ..RaftTuning::default()
            },
            membership: MembershipTuning {
                catch_up_timeout: Duration::from_millis(10),
                max_lag_entries: 0,
                unreachable_after: Duration::from_millis(400),
            },
            liveness: LivenessTuning {
                suspect_after: Duration::from_millis(50),
                leader_grace: Duration::from_millis(100),
                report_min_interval: Duration::from_secs(60),
                flap_downs: 0,
                ..LivenessTuning::default()
            },
            scheduler: SchedulerTuning {
                lease_minimum: Duration::from_millis(100),
                soft_rule_candidates: 0,
                pressure: PressureConfig {
                    enter_percent: 50,
                    leave_percent: 60,
                    sample_every: Duration::ZERO,
                    ..PressureConfig::default()
                },
                ..SchedulerTuning::default()
            },
            ..HubConfig::default()
        };
        let problems = cfg.validate().unwrap_err().problems;
        for want in [
            "region:",
            "id:",
            "1, 3 or 5",
            "appears twice",
            "peers[0].peer-addr",
            "peers[1].client-addr",
            "tls.ca",
            "election-ticks",
            "membership.catch-up-timeout",
            "membership.max-lag-entries",
            "membership.unreachable-after",
            "liveness.suspect-after",
            "liveness.leader-grace",
            "liveness.report-min-interval",
            "liveness.flap-downs",
            "scheduler.lease-minimum",
            "scheduler.soft-rule-candidates",
            "scheduler.pressure.leave-percent",
            "scheduler.pressure.sample-every",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "missing {want:?} in {problems:#?}"
            );
        }
    }

    /// docs/config/hub.toml is the reference users copy: it must parse,
    /// and the defaults it shows must be the real ones.
    #[test]
    fn documented_example_parses_with_true_defaults() {
        let doc = HubConfig::from_toml(include_str!("../../docs/config/hub.toml")).unwrap();
        let d = HubConfig::default();
        assert_eq!(doc.raft, d.raft);
        assert_eq!(doc.store, d.store);
        assert_eq!(doc.data_dir, d.data_dir);
        assert_eq!(doc.peer_listen, d.peer_listen);
        assert_eq!(doc.client_listen, d.client_listen);
        assert_eq!(doc.join, d.join);
        assert_eq!(doc.checkpoint_interval_ms, d.checkpoint_interval_ms);
        assert_eq!(doc.membership, d.membership);
        assert_eq!(doc.liveness, d.liveness);
        assert_eq!(doc.scheduler, d.scheduler);
        assert_eq!(doc.peers.len(), 3);
    }
}
