//! Fleet configuration: what to simulate, where to publish it and how fast.
//!
//! [`FleetConfig`] is filled from the CLI (see `main.rs`) or built directly by
//! in-process tests. [`FleetConfig::validate`] reports every problem at once,
//! so a user fixes a bad command line in one go.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most devices one simulator process drives.
pub const MAX_DEVICES: u32 = 100_000;
/// Default number of MQTT connections cap (`min(devices, 100)`).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 100;

/// The invalid parts of a [`FleetConfig`], all of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fleet configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    /// One human-readable message per problem, naming the field.
    pub problems: Vec<String>,
}

/// One simulated sensor; every reading carries all four, in this order
/// (alphabetical, the order the JSON decoder yields them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sensor {
    /// Relative humidity in %, a bounded wandering walk within 0..=100.
    Humidity,
    /// Electrical power in W: load steps between idle, mid and high levels.
    Power,
    /// Temperature in °C: per-device base, slow drift and a daily-ish sine.
    Temperature,
    /// Vibration RMS in g: a low noise floor with occasional noise bursts.
    Vibration,
}

impl Sensor {
    /// Every sensor, in metric order.
    pub const ALL: [Sensor; 4] = [
        Sensor::Humidity,
        Sensor::Power,
        Sensor::Temperature,
        Sensor::Vibration,
    ];

    /// Metric name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensor::Humidity => "humidity",
            Sensor::Power => "power",
            Sensor::Temperature => "temperature",
            Sensor::Vibration => "vibration",
        }
    }

    /// Position in [`Sensor::ALL`] and in a reading's value array.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Default spike excursion: far outside the sensor's normal range.
    pub fn default_spike(self) -> f64 {
        match self {
            Sensor::Humidity => 60.0,
            Sensor::Power => 2_000.0,
            Sensor::Temperature => 40.0,
            Sensor::Vibration => 20.0,
        }
    }
}

impl FromStr for Sensor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sensor::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!("unknown metric {s:?} (expected humidity, power, temperature or vibration)")
            })
    }
}

/// What an anomaly does to a device's readings inside its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnomalyKind {
    /// Adds `magnitude` (default [`Sensor::default_spike`]) to the value.
    Spike,
    /// Freezes the value at the one it had at the window's first reading.
    Stuck,
    /// The device publishes nothing for those readings. Its `seq` still
    /// advances, so a consumer sees a gap in the sequence; with `count` the
    /// device publishes fewer than `count` readings.
    Dropout,
}

/// An injected fault: which devices, which readings, what happens.
///
/// CLI form: `KIND:key=value,...`, e.g.
/// `spike:devices=0+7,start=100,duration=10,metric=temperature,magnitude=40`
/// or `dropout:fraction=0.05,start=500,duration=60`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnomalySpec {
    /// What happens.
    pub kind: AnomalyKind,
    /// Device indices (0-based) affected. Exactly one of `devices` and
    /// `fraction` must be given.
    #[serde(default)]
    pub devices: Vec<u32>,
    /// Fraction (0, 1] of devices affected, picked deterministically from the
    /// seed, the device and the anomaly's position in the list.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Affected metric; `None` means all four. Not allowed for `dropout`.
    #[serde(default)]
    pub metric: Option<Sensor>,
    /// First affected reading index (= seq).
    #[serde(default)]
    pub start: u64,
    /// Number of consecutive affected readings (≥ 1).
    pub duration: u64,
    /// Spike excursion added to the value (spike only; default per metric).
    #[serde(default)]
    pub magnitude: Option<f64>,
}

impl AnomalySpec {
    /// Whether reading `i` lies in the anomaly's window.
    pub fn covers(&self, i: u64) -> bool {
        i >= self.start && i - self.start < self.duration
    }

    fn problems(&self, n: usize, devices: u32, out: &mut Vec<String>) {
        let at = format!("anomalies[{n}] ({:?})", self.kind);
        match (self.devices.is_empty(), self.fraction) {
            (true, None) => out.push(format!("{at}: give `devices` or `fraction`")),
            (false, Some(_)) => out.push(format!("{at}: give `devices` or `fraction`, not both")),
            (_, Some(f)) if !(f > 0.0 && f <= 1.0) => {
                out.push(format!("{at}: fraction {f} must be in (0, 1]"))
            }
            _ => {}
        }
        if let Some(bad) = self.devices.iter().find(|d| **d >= devices) {
            out.push(format!(
                "{at}: device {bad} does not exist (devices = {devices})"
            ));
        }
        if self.duration == 0 {
            out.push(format!("{at}: duration must be at least 1 reading"));
        }
        if self.kind == AnomalyKind::Dropout && self.metric.is_some() {
            out.push(format!(
                "{at}: dropout affects whole readings; drop `metric`"
            ));
        }
        match (self.kind, self.magnitude) {
            (AnomalyKind::Spike, Some(m)) if !m.is_finite() => {
                out.push(format!("{at}: magnitude {m} must be finite"))
            }
            (AnomalyKind::Stuck | AnomalyKind::Dropout, Some(_)) => {
                out.push(format!("{at}: magnitude only applies to spike"))
            }
            _ => {}
        }
    }
}

impl FromStr for AnomalySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let kind = match kind {
            "spike" => AnomalyKind::Spike,
            "stuck" => AnomalyKind::Stuck,
            "dropout" => AnomalyKind::Dropout,
            other => {
                return Err(format!(
                    "unknown anomaly kind {other:?} in {s:?} (expected spike, stuck or dropout, \
                     e.g. spike:devices=0+3,start=100,duration=10)"
                ))
            }
        };
        let mut spec = AnomalySpec {
            kind,
            devices: Vec::new(),
            fraction: None,
            metric: None,
            start: 0,
            duration: 0,
            magnitude: None,
        };
        let mut saw_duration = false;
        for kv in rest.split(',').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got {kv:?} in {s:?}"))?;
            let bad = |e: &dyn std::fmt::Display| format!("bad {k}={v:?} in {s:?}: {e}");
            match k {
                "devices" | "device" => {
                    for d in v.split('+') {
                        spec.devices.push(d.parse().map_err(|e| bad(&e))?);
                    }
                }
                "fraction" => spec.fraction = Some(v.parse().map_err(|e| bad(&e))?),
                "metric" => spec.metric = Some(v.parse().map_err(|e: String| bad(&e))?),
                "start" => spec.start = v.parse().map_err(|e| bad(&e))?,
                "duration" => {
                    spec.duration = v.parse().map_err(|e| bad(&e))?;
                    saw_duration = true;
                }
                "magnitude" => spec.magnitude = Some(v.parse().map_err(|e| bad(&e))?),
                other => {
                    return Err(format!(
                        "unknown anomaly key {other:?} in {s:?} (expected devices, fraction, \
                         metric, start, duration, magnitude)"
                    ))
                }
            }
        }
        if !saw_duration {
            return Err(format!("anomaly {s:?} needs duration=<readings>"));
        }
        Ok(spec)
    }
}

/// Everything a fleet run needs. `Default` is a small, slow, valid fleet
/// except for `endpoints`, which must be given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FleetConfig {
    /// Tenant the devices belong to (topic segment). Default `demo`.
    pub tenant: String,
    /// Number of simulated devices, 1..=100,000. Default 10.
    pub devices: u32,
    /// Device names are `<prefix>-<index>`. Default `dev`.
    pub device_prefix: String,
    /// Seed of every random choice: readings, anomaly selection, jitter.
    /// Default 1.
    pub seed: u64,
    /// Edge MQTT endpoints `host:port`; device `d` uses `endpoints[d % n]`.
    /// Required, no default.
    pub endpoints: Vec<String>,
    /// MQTT connections the devices are multiplexed over, at least one per
    /// endpoint and at most one per device. Default `min(devices, 100)`
    /// (raised to the number of endpoints if needed).
    pub connections: Option<u32>,
    /// Readings per second per device; 0 = as fast as the window allows.
    /// Ignored for pacing and timestamps when `trace` is set. Default 1.
    pub rate_per_device: f64,
    /// Trace mode: the fleet's total publish rate follows this trace
    /// (daily/weekly patterns, surges, noise, played `compression` times
    /// faster), each connection publishing its devices' share, and readings
    /// are stamped when due (see [`crate::trace`] and `firmware-sim/trace.toml`).
    /// Default: unset (constant `rate-per-device`).
    pub trace: Option<crate::trace::TraceSpec>,
    /// Publish exactly this many readings per device (seq 0..count), wait
    /// for their PUBACKs, then stop. Default: unbounded.
    pub count: Option<u64>,
    /// Stop generating after this long (then drain acks). Default: unbounded.
    #[serde(with = "crate::config::duration_opt")]
    pub duration: Option<Duration>,
    /// MQTT QoS of publishes, 0 or 1. Default 1.
    pub qos: u8,
    /// Most unacknowledged QoS 1 publishes per connection, 1..=65535.
    /// Default 256.
    pub inflight: u32,
    /// Send the compact binary payload instead of JSON. Default false.
    pub binary: bool,
    /// Send payloads of exactly this many bytes, for benchmarks: the compact
    /// binary form with one metric (`temperature`) and a `pad` tag filling
    /// the rest (see [`crate::payload::encode_padded_into`]). Overrides
    /// `binary`. Range [`crate::payload::MIN_PADDED_BYTES`]..=
    /// [`crate::payload::MAX_PADDED_BYTES`]. Default: unset (natural size).
    pub payload_bytes: Option<u32>,
    /// Injected anomalies. Default none.
    pub anomalies: Vec<AnomalySpec>,
    /// Timestamp of reading 0 in ms since the epoch; reading `i` is stamped
    /// `start + i * interval` (see [`crate::model::ts_ms`]). Default: the
    /// wall clock when the run starts.
    pub start_ts_ms: Option<i64>,
    /// MQTT keep-alive in seconds; a PINGREQ goes out after half of it
    /// idle. Default 30.
    pub keep_alive_secs: u16,
    /// First reconnect delay; doubles per failed attempt, with jitter.
    /// Default 100 ms.
    #[serde(with = "crate::config::duration")]
    pub backoff_initial: Duration,
    /// Largest reconnect delay. Default 5 s.
    #[serde(with = "crate::config::duration")]
    pub backoff_max: Duration,
    /// Time allowed for a TCP connect plus CONNACK. Default 5 s.
    #[serde(with = "crate::config::duration")]
    pub connect_timeout: Duration,
    /// Once a connection has nothing more to send (count reached, duration
    /// over, shutdown), how long it keeps waiting for outstanding PUBACKs
    /// (reconnecting and retransmitting if needed). Default 30 s.
    #[serde(with = "crate::config::duration")]
    pub ack_deadline: Duration,
    /// MQTT client id prefix; connection `c` uses `<prefix>-<c>`. Default
    /// `sim-<tenant>-<pid>-<run>`, unique per run within the host.
    pub client_id_prefix: Option<String>,
    /// MQTT username sent in every CONNECT (an edge identity allowed to
    /// publish for `tenant` and these devices, e.g. `strata up`'s
    /// `demo-fleet`). Default: none (anonymous).
    pub username: Option<String>,
    /// Password sent with `username`. Default: none.
    pub password: Option<String>,
    /// Roam like devices of a mesh of gateways: a connection that cannot
    /// reach its endpoint tries the next one of `endpoints` (cyclically)
    /// instead of waiting for its own to come back, and stays where it got
    /// in. Unacked publishes are retransmitted there. Default false.
    pub failover: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            tenant: "demo".into(),
            devices: 10,
            device_prefix: "dev".into(),
            seed: 1,
            endpoints: Vec::new(),
            connections: None,
            rate_per_device: 1.0,
            trace: None,
            count: None,
            duration: None,
            qos: 1,
            inflight: 256,
            binary: false,
            payload_bytes: None,
            anomalies: Vec::new(),
            start_ts_ms: None,
            keep_alive_secs: 30,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            ack_deadline: Duration::from_secs(30),
            client_id_prefix: None,
            username: None,
            password: None,
            failover: false,
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= strata_protocol::telemetry::MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl FleetConfig {
    /// The number of connections this config runs with.
    pub fn effective_connections(&self) -> u32 {
        let endpoints = u32::try_from(self.endpoints.len()).unwrap_or(u32::MAX);
        self.connections.unwrap_or_else(|| {
            self.devices
                .min(DEFAULT_MAX_CONNECTIONS)
                .max(endpoints.min(self.devices))
        })
    }

    /// Checks every field and returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        if !valid_name(&self.tenant) {
            p.push(format!(
                "tenant {:?} must be 1-128 chars of [A-Za-z0-9_.-]",
                self.tenant
            ));
        }
        if !(1..=MAX_DEVICES).contains(&self.devices) {
            p.push(format!(
                "devices {} must be in 1..={MAX_DEVICES}",
                self.devices
            ));
        }
        // The longest device name must still be a valid topic segment.
        if !valid_name(&crate::model::device_name(&self.device_prefix, MAX_DEVICES)) {
            p.push(format!(
                "device-prefix {:?} must be chars of [A-Za-z0-9_.-], at most 120 long",
                self.device_prefix
            ));
        }
        if self.endpoints.is_empty() {
            p.push("endpoints: give at least one host:port".into());
        }
        for e in &self.endpoints {
            let ok = e
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0));
            if !ok {
                p.push(format!("endpoint {e:?} is not host:port"));
            }
        }
        // Only meaningful once devices and endpoints are themselves sane.
        if (1..=MAX_DEVICES).contains(&self.devices) && !self.endpoints.is_empty() {
            let conns = self.effective_connections();
            let needed = (self.endpoints.len() as u64).min(u64::from(self.devices));
            if u64::from(conns) < needed {
                p.push(format!(
                    "connections {conns} must be at least {needed} (one per endpoint in use)"
                ));
            }
            if conns > self.devices {
                p.push(format!(
                    "connections {conns} exceeds devices {} (a connection needs a device)",
                    self.devices
                ));
            }
        }
        if !(self.rate_per_device.is_finite() && self.rate_per_device >= 0.0) {
            p.push(format!(
                "rate-per-device {} must be a finite number ≥ 0 (0 = unlimited)",
                self.rate_per_device
            ));
        }
        if let Some(Err(e)) = self.trace.as_ref().map(|t| t.validate()) {
            p.extend(e.problems.into_iter().map(|m| format!("trace: {m}")));
        }
        if self.password.is_some() && self.username.is_none() {
            p.push("password is set without username".into());
        }
        if self
            .username
            .as_ref()
            .is_some_and(|u| u.is_empty() || u.len() > 65_535)
        {
            p.push("username must be 1-65535 bytes".into());
        }
        if self.count == Some(0) {
            p.push("count must be at least 1".into());
        }
        if self.duration == Some(Duration::ZERO) {
            p.push("duration must be positive".into());
        }
        if self.qos > 1 {
            p.push(format!("qos {} must be 0 or 1", self.qos));
        }
        if !(1..=u32::from(u16::MAX)).contains(&self.inflight) {
            p.push(format!("inflight {} must be in 1..=65535", self.inflight));
        }
        if let Some(n) = self.payload_bytes {
            let (lo, hi) = (
                crate::payload::MIN_PADDED_BYTES,
                crate::payload::MAX_PADDED_BYTES,
            );
            if !(lo..=hi).contains(&n) {
                p.push(format!("payload-bytes {n} must be in {lo}..={hi}"));
            }
        }
        if self.keep_alive_secs < 2 {
            p.push(format!(
                "keep-alive-secs {} must be at least 2",
                self.keep_alive_secs
            ));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            p.push(format!(
                "backoff must satisfy 0 < backoff-initial ({:?}) ≤ backoff-max ({:?})",
                self.backoff_initial, self.backoff_max
            ));
        }
        if self.connect_timeout.is_zero() {
            p.push("connect-timeout must be positive".into());
        }
        if let Some(prefix) = &self.client_id_prefix {
            if prefix.is_empty() || prefix.len() > 64 {
                p.push(format!("client-id-prefix {prefix:?} must be 1-64 bytes"));
            }
        }
        for (n, a) in self.anomalies.iter().enumerate() {
            a.problems(n, self.devices, &mut p);
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }
}

/// Parses `250ms`, `10s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (expected e.g. 500ms, 10s, 2m, 1h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// Serde as a human duration string (`"250ms"`), reading the same forms as
/// [`parse_duration`].
pub(crate) mod duration {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// [`duration`] for an optional field.
pub(crate) mod duration_opt {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_with_endpoint_is_valid() {
        let cfg = FleetConfig {
            endpoints: vec!["127.0.0.1:1883".into()],
            ..FleetConfig::default()
        };
        cfg.validate().unwrap();
        assert_eq!(cfg.effective_connections(), 10);
    }

    #[test]
    fn every_problem_is_reported() {
        let cfg = FleetConfig {
            tenant: "bad tenant".into(),
            devices: 0,
            qos: 2,
            inflight: 0,
            payload_bytes: Some(10),
            rate_per_device: -1.0,
            trace: Some(crate::trace::TraceSpec {
                base_rate: 0.0,
                ..Default::default()
            }),
            anomalies: vec!["stuck:devices=99,duration=0,magnitude=3".parse().unwrap()],
            ..FleetConfig::default()
        };
        let err = cfg.validate().unwrap_err();
        let text = err.to_string();
        for needle in [
            "tenant",
            "devices 0",
            "endpoints",
            "qos 2",
            "inflight 0",
            "rate-per-device",
            "device 99",
            "duration must",
            "magnitude only",
            "payload-bytes 10",
            "trace: base-rate 0",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text}");
        }
        assert!(err.problems.len() >= 11, "{text}");
    }

    #[test]
    fn connections_cover_endpoints() {
        let mut cfg = FleetConfig {
            devices: 5,
            endpoints: vec!["a:1".into(), "b:2".into(), "c:3".into()],
            connections: Some(2),
            ..FleetConfig::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("connections 2"));
        cfg.connections = Some(6);
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("exceeds devices"));
        cfg.connections = None;
        cfg.devices = 2;
        assert_eq!(cfg.effective_connections(), 2);
        cfg.validate().unwrap();
        cfg.endpoints.push("nope".into());
        assert!(cfg.validate().unwrap_err().to_string().contains("\"nope\""));
    }

    #[test]
    fn anomaly_parsing() {
        let a: AnomalySpec =
            "spike:devices=0+7,start=100,duration=10,metric=temperature,magnitude=40"
                .parse()
                .unwrap();
        assert_eq!(a.kind, AnomalyKind::Spike);
        assert_eq!(a.devices, vec![0, 7]);
        assert_eq!(a.metric, Some(Sensor::Temperature));
        assert_eq!((a.start, a.duration, a.magnitude), (100, 10, Some(40.0)));
        assert!(a.covers(100) && a.covers(109) && !a.covers(110) && !a.covers(99));
        let d: AnomalySpec = "dropout:fraction=0.5,duration=3".parse().unwrap();
        assert_eq!(d.fraction, Some(0.5));
        for bad in [
            "boom:duration=1",
            "spike:devices=x,duration=1",
            "spike:devices=1",
            "stuck:foo=1,duration=2",
            "spike:metric=rpm,duration=1",
        ] {
            assert!(bad.parse::<AnomalySpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn serde_round_trip() {
        let cfg = FleetConfig {
            endpoints: vec!["127.0.0.1:1883".into()],
            duration: Some(Duration::from_secs(3)),
            anomalies: vec!["dropout:devices=1,start=2,duration=3".parse().unwrap()],
            ..FleetConfig::default()
        };
        let json = serde_json::to_string(&cfg).unwrap();
        let back: FleetConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        let unknown = serde_json::from_str::<FleetConfig>(r#"{"devicez": 3}"#);
        assert!(unknown.is_err());
    }
}
