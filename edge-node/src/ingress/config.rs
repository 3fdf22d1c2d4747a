//! Ingress and bridge configuration (TOML, kebab-case, every field
//! defaulted and validated all at once).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auth::{AuthConfig, TlsConfig};
use super::IngressError;

/// The embedded MQTT server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngressConfig {
    /// TCP address devices connect to. Default `127.0.0.1:1883`.
    pub listen: SocketAddr,
    /// Largest MQTT packet accepted, in bytes (whole packet). Larger packets
    /// close the connection (v5: DISCONNECT 0x95 first). Default 262144.
    pub max_packet_bytes: usize,
    /// Records per connection submitted to the spool but not yet durable;
    /// at the limit the connection stops reading (backpressure, never
    /// drops). Default 4096.
    pub max_inflight: usize,
    /// Concurrent TCP connections; further ones are closed at once.
    /// Default 10000.
    pub max_connections: usize,
    /// Messages queued per subscriber for live fan-out; overflow drops that
    /// subscriber's copy and counts it. Default 1024.
    pub subscriber_queue: usize,
    /// Milliseconds a new connection may take to send its CONNECT.
    /// Default 10000.
    pub connect_timeout_ms: u64,
    /// Milliseconds a write to a client may stall before the connection is
    /// closed (a client that stops reading). Default 30000.
    pub write_timeout_ms: u64,
    /// TCP address of the MQTT-over-TLS listener (e.g. `0.0.0.0:8883`),
    /// configured by `[ingress.tls]`. Default: none (no TLS listener).
    pub tls_listen: Option<SocketAddr>,
    /// Device authentication: credentials file, anonymous access, reload.
    pub auth: AuthConfig,
    /// The TLS listener's certificate and client-certificate policy.
    pub tls: TlsConfig,
    /// How far ahead of the edge's clock a reading's `ts` may be (humantime,
    /// e.g. "5m"); later readings are refused before they are spooled.
    /// Default "5m".
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// How old a reading's `ts` may be (humantime); older readings are
    /// refused before they are spooled. The region's store retention, which
    /// the hub announces in every heartbeat ack, tightens it when stricter.
    /// Default "7days" (the hub's default retention).
    #[serde(with = "humantime_serde")]
    pub max_past_age: Duration,
    /// What an MQTT 3.1.1 connection gets for a reading refused by the time
    /// bounds, since 3.1.1 has no negative acknowledgement: "drop" (PUBACK,
    /// discard, count) or "disconnect" (no PUBACK, close the connection).
    /// See the ingress module docs for why "drop" is the default.
    pub v3_refusal: V3Refusal,
    /// Longest keep-alive the server grants (humantime, whole seconds,
    /// 1s..=65535s). A client asking for 0 (none) or more gets this one (v5
    /// clients are told in the CONNACK's Server Keep Alive), so an idle
    /// session is closed after 1.5 times it. Default "20m".
    #[serde(with = "humantime_serde")]
    pub max_keep_alive: Duration,
    /// Concurrent TCP connections from one source (an IPv4 address, or an
    /// IPv6 /64: one host's usual allocation); further ones are closed at
    /// once and counted. Devices behind one NAT share a source, so this is a
    /// guard against one host taking every slot, not a per-device limit.
    /// Default 1000 (at least 1; above `max-connections` it never fires).
    pub max_connections_per_ip: usize,
}

/// What a refused reading does to an MQTT 3.1.1 connection (`ingress.v3-refusal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum V3Refusal {
    /// PUBACK it (so the device moves on), discard it, count and log it.
    #[default]
    Drop,
    /// Send no PUBACK for it and close the connection (after acking what
    /// came before it); the device sees a disconnect.
    Disconnect,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_packet_bytes: 262_144,
            max_inflight: 4096,
            max_connections: 10_000,
            subscriber_queue: 1024,
            connect_timeout_ms: 10_000,
            write_timeout_ms: 30_000,
            max_future_skew: Duration::from_secs(5 * 60),
            max_past_age: Duration::from_secs(7 * 24 * 3600),
            v3_refusal: V3Refusal::Drop,
            max_keep_alive: Duration::from_secs(20 * 60),
            max_connections_per_ip: 1000,
            tls_listen: None,
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// Smallest packet limit we accept: a CONNECT with a long client id and a
/// minimal telemetry publish must fit.
const MIN_PACKET_BYTES: usize = 1024;
/// MQTT's remaining-length field cannot describe more than this.
const MAX_MQTT_PACKET: usize = 268_435_455;
/// Largest `max-future-skew`: a clock a day off is broken, not skewed.
const MAX_FUTURE_SKEW: Duration = Duration::from_secs(24 * 3600);
/// Largest `max-past-age` (100 years): room for any backfill, and `now -
/// age` stays far from overflowing.
const MAX_PAST_AGE: Duration = Duration::from_secs(36_525 * 24 * 3600);
/// MQTT's keep-alive is a 16-bit count of seconds.
const MAX_KEEP_ALIVE_S: u64 = 65_535;

impl IngressConfig {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), IngressError> {
        let mut problems = Vec::new();
        if !(MIN_PACKET_BYTES..=MAX_MQTT_PACKET).contains(&self.max_packet_bytes) {
            problems.push(format!(
                "max-packet-bytes = {} must be in {MIN_PACKET_BYTES}..={MAX_MQTT_PACKET}",
                self.max_packet_bytes
            ));
        }
        if self.max_inflight == 0 {
            problems.push("max-inflight must be at least 1".into());
        }
        if self.max_connections == 0 {
            problems.push("max-connections must be at least 1".into());
        }
        if self.subscriber_queue == 0 {
            problems.push("subscriber-queue must be at least 1".into());
        }
        if self.connect_timeout_ms == 0 {
            problems.push("connect-timeout-ms must be at least 1".into());
        }
        if self.write_timeout_ms == 0 {
            problems.push("write-timeout-ms must be at least 1".into());
        }
        problems.extend(self.time_bound_problems());
        let ka = self.max_keep_alive;
        if ka.subsec_nanos() != 0 || !(1..=MAX_KEEP_ALIVE_S).contains(&ka.as_secs()) {
            problems.push(format!(
                "max-keep-alive = {:?} must be whole seconds in 1s..=65535s",
                humantime::format_duration(ka).to_string()
            ));
        }
        if self.max_connections_per_ip == 0 {
            problems.push("max-connections-per-ip must be at least 1".into());
        }
        problems.extend(self.auth.problems());
        problems.extend(self.tls.problems(self.tls_listen.is_some()));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(IngressError::Config { problems })
        }
    }

    /// Problems with the time bounds alone: they also apply to the bridge,
    /// so they are checked when the embedded server is off.
    pub fn time_bound_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let human = |d: Duration| humantime::format_duration(d).to_string();
        if self.max_future_skew.is_zero() || self.max_future_skew > MAX_FUTURE_SKEW {
            problems.push(format!(
                "max-future-skew = {:?} must be positive and at most {:?}",
                human(self.max_future_skew),
                human(MAX_FUTURE_SKEW)
            ));
        }
        if self.max_past_age.is_zero() || self.max_past_age > MAX_PAST_AGE {
            problems.push(format!(
                "max-past-age = {:?} must be positive and at most {:?}",
                human(self.max_past_age),
                human(MAX_PAST_AGE)
            ));
        }
        problems
    }

    /// The time bounds in force given the region's announced retention
    /// (`None` before the first heartbeat ack).
    pub fn time_bounds(&self, region_retention_ms: Option<u64>) -> super::bounds::TimeBounds {
        super::bounds::TimeBounds::effective(
            self.max_future_skew,
            self.max_past_age,
            region_retention_ms,
        )
    }

    /// The bounds for the bridge path: these limits, tightened by
    /// `retention` as the region announces it.
    pub fn live_bounds(
        &self,
        retention: super::bounds::RegionRetention,
    ) -> super::bounds::LiveBounds {
        super::bounds::LiveBounds::new(self.max_future_skew, self.max_past_age, retention)
    }

    /// The keep-alive granted, in seconds (validated to fit MQTT's 16 bits).
    pub fn max_keep_alive_s(&self) -> u16 {
        u16::try_from(self.max_keep_alive.as_secs()).unwrap_or(u16::MAX)
    }
}

/// Bridge mode: consume telemetry from an existing broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BridgeConfig {
    /// Broker address, `host:port`. Default `127.0.0.1:1883`.
    pub broker: String,
    /// Topic filter subscribed to. Default `strata/+/+/telemetry`.
    pub topic: String,
    /// MQTT client id; must be stable across restarts so the broker keeps
    /// the persistent session and redelivers unacknowledged messages.
    /// Default `strata-edge-bridge`.
    pub client_id: String,
    /// Subscription QoS, 1 or 2 (0 would lose data). Default 1.
    pub qos: u8,
    /// Keep-alive sent to the broker, seconds. Default 30.
    pub keep_alive_s: u64,
    /// First reconnect delay, milliseconds; doubles up to
    /// `max-backoff-ms`. Default 200.
    pub min_backoff_ms: u64,
    /// Longest reconnect delay, milliseconds. Default 10000.
    pub max_backoff_ms: u64,
    /// Records submitted to the sink but not yet durable; the broker's own
    /// in-flight window normally bounds this first. Default 4096.
    pub max_inflight: usize,
    /// Largest packet accepted from the broker, bytes. Default 262144.
    pub max_packet_bytes: usize,
    /// Username sent to the broker. Default: none (anonymous).
    pub username: Option<String>,
    /// Password sent with `username`. Default: none.
    pub password: Option<String>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            broker: "127.0.0.1:1883".into(),
            topic: "strata/+/+/telemetry".into(),
            client_id: "strata-edge-bridge".into(),
            qos: 1,
            keep_alive_s: 30,
            min_backoff_ms: 200,
            max_backoff_ms: 10_000,
            max_inflight: 4096,
            max_packet_bytes: 262_144,
            username: None,
            password: None,
        }
    }
}

impl BridgeConfig {
    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), IngressError> {
        let mut problems = Vec::new();
        if self.broker_host_port().is_none() {
            problems.push(format!("broker = {:?} is not host:port", self.broker));
        }
        if !super::topic::valid_filter(&self.topic) {
            problems.push(format!(
                "topic = {:?} is not a valid MQTT topic filter",
                self.topic
            ));
        }
        if self.client_id.is_empty() || self.client_id.len() > 65_535 {
            problems.push(
                "client-id must be 1-65535 bytes (a persistent session needs a stable id)".into(),
            );
        }
        if !(1..=2).contains(&self.qos) {
            problems.push(format!(
                "qos = {} must be 1 or 2 (QoS 0 can lose telemetry)",
                self.qos
            ));
        }
        if self.keep_alive_s == 0 || self.keep_alive_s > u16::MAX as u64 {
            problems.push(format!(
                "keep-alive-s = {} must be in 1..=65535",
                self.keep_alive_s
            ));
        }
        if self.min_backoff_ms == 0 || self.min_backoff_ms > self.max_backoff_ms {
            problems.push(format!(
                "min-backoff-ms = {} must be at least 1 and at most max-backoff-ms = {}",
                self.min_backoff_ms, self.max_backoff_ms
            ));
        }
        if self.max_inflight == 0 {
            problems.push("max-inflight must be at least 1".into());
        }
        if !(MIN_PACKET_BYTES..=MAX_MQTT_PACKET).contains(&self.max_packet_bytes) {
            problems.push(format!(
                "max-packet-bytes = {} must be in {MIN_PACKET_BYTES}..={MAX_MQTT_PACKET}",
                self.max_packet_bytes
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            problems.push("password is set without username".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(IngressError::Config { problems })
        }
    }

    /// Splits `broker` into host and port.
    pub fn broker_host_port(&self) -> Option<(String, u16)> {
        let (host, port) = self.broker.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        Some((host.to_owned(), port.parse().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_parse_from_empty_toml() {
        let c: IngressConfig = toml::from_str("").unwrap();
        assert_eq!(c, IngressConfig::default());
        c.validate().unwrap();
        let b: BridgeConfig = toml::from_str("").unwrap();
        b.validate().unwrap();
        assert_eq!(b.broker_host_port(), Some(("127.0.0.1".into(), 1883)));
    }

    #[test]
    fn humantime_fields_and_policy_parse() {
        let c: IngressConfig = toml::from_str(
            "max-future-skew = \"30s\"\nmax-past-age = \"2days\"\nv3-refusal = \"disconnect\"\n\
             max-keep-alive = \"90s\"\nmax-connections-per-ip = 5",
        )
        .unwrap();
        assert_eq!(c.max_future_skew, Duration::from_secs(30));
        assert_eq!(c.max_past_age, Duration::from_secs(2 * 86_400));
        assert_eq!(c.v3_refusal, V3Refusal::Disconnect);
        assert_eq!(c.max_keep_alive_s(), 90);
        assert_eq!(c.max_connections_per_ip, 5);
        c.validate().unwrap();
        assert!(toml::from_str::<IngressConfig>("max-future-skew = 300").is_err());
        assert!(toml::from_str::<IngressConfig>("v3-refusal = \"ignore\"").is_err());
        // Serialised back in the same human form.
        let text = toml::to_string(&IngressConfig::default()).unwrap();
        assert!(text.contains("max-past-age = \"7days\""), "{text}");
    }

    #[test]
    fn kebab_case_and_unknown_fields() {
        let c: IngressConfig =
            toml::from_str("listen = \"0.0.0.0:1884\"\nmax-packet-bytes = 4096").unwrap();
        assert_eq!(c.max_packet_bytes, 4096);
        assert!(toml::from_str::<IngressConfig>("max_packet_bytes = 4096").is_err());
    }

    #[test]
    fn every_problem_is_reported() {
        let c = IngressConfig {
            max_packet_bytes: 1,
            max_inflight: 0,
            subscriber_queue: 0,
            ..Default::default()
        };
        match c.validate() {
            Err(IngressError::Config { problems }) => assert_eq!(problems.len(), 3, "{problems:?}"),
            other => panic!("{other:?}"),
        }
        let c = IngressConfig {
            max_future_skew: Duration::ZERO,
            max_past_age: Duration::from_secs(200 * 365 * 86_400),
            max_keep_alive: Duration::from_millis(1500),
            max_connections_per_ip: 0,
            ..Default::default()
        };
        match c.validate() {
            Err(IngressError::Config { problems }) => {
                assert_eq!(problems.len(), 4, "{problems:?}");
                assert!(
                    problems[0].starts_with("max-future-skew = \"0s\""),
                    "{problems:?}"
                );
                assert!(problems[2].contains("1s 500ms"), "{problems:?}");
            }
            other => panic!("{other:?}"),
        }
        let b = BridgeConfig {
            broker: "nope".into(),
            topic: "a/#/b".into(),
            qos: 0,
            ..Default::default()
        };
        match b.validate() {
            Err(IngressError::Config { problems }) => assert_eq!(problems.len(), 3, "{problems:?}"),
            other => panic!("{other:?}"),
        }
    }
}
