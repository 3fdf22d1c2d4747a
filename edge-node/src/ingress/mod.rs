//! MQTT ingress: the edge node's embedded MQTT 3.1.1 / 5 server for devices,
//! and a bridge mode that consumes an existing broker instead.
//!
//! Every accepted publish is decoded with
//! [`strata_protocol::telemetry::decode_payload`] and handed to an
//! [`IngestSink`] (the spool). A QoS 1 PUBACK / QoS 2 PUBREC is sent only
//! after the sink has said the record is durable, so an ack always means
//! "this reading cannot be lost any more".
//!
//! # Layout
//! - [`config`]: [`IngressConfig`] and [`BridgeConfig`] (serde, validated).
//! - [`auth`]: device identities (credentials file, argon2id passwords,
//!   client certificates), topic ACLs, hot reload, the TLS listener's config.
//! - [`codec`]: one version-agnostic packet vocabulary over rumqttc's v4 and
//!   v5 codecs; protocol-level detection from the CONNECT.
//! - [`session`]: the sans-IO per-connection state machine (ack ordering,
//!   QoS 2 packet-id tracking, keep-alive deadline, backpressure, time
//!   bounds on readings).
//! - [`bounds`]: the time bounds (`max-future-skew`, `max-past-age`
//!   tightened by the region's retention) and [`RegionRetention`], the cell
//!   the uplink publishes the hub's retention into.
//! - [`limits`]: per-source connection accounting (`max-connections-per-ip`).
//! - [`topic`]: topic filter validation and matching.
//! - [`router`]: live fan-out to subscribers and client-id takeover.
//! - [`metrics`]: prometheus counters.
//! - [`driver`]: the per-connection socket task that owns a session.
//! - [`server`]: [`IngressServer`], the accept loop.
//! - [`bridge`]: [`run_bridge`], rumqttc subscriber to an external broker.
//!
//! # Time bounds
//! A reading whose `ts` is more than `max-future-skew` (default 5m) ahead of
//! the edge's clock, or older than the past bound, is refused before it is
//! spooled and counted as `too_far_future` / `too_old`. The past bound is
//! `max-past-age` (default 7 days, the hub's default retention), tightened
//! to the region's store retention once a hub has announced it in a
//! heartbeat ack: a reading the hub would drop as expired right after
//! storing it must not be acknowledged. The bridge applies the same bounds.
//!
//! # v3.1.1 has no negative acknowledgement
//! A v5 client gets PUBACK/PUBREC with reason 0x90 (topic name invalid),
//! 0x99 (payload format invalid) or 0x83 (implementation specific error: a
//! valid reading outside the time bounds), with a reason string naming the
//! bound and by how much, for a publish we refuse. MQTT 3.1.1 has no way to
//! say "no". An undecodable publish is still PUBACKed (else the device would
//! retransmit it forever), dropped as invalid, counted in
//! `strata_ingress_rejects_total{reason}` and logged.
//!
//! A reading outside the time bounds follows `ingress.v3-refusal`:
//! - `"drop"` (default): PUBACK, discard, count, log. The device moves on.
//! - `"disconnect"`: no PUBACK for it (nor for anything after it on that
//!   connection), close the connection; what came before is still stored
//!   and acked.
//!
//! Why "drop" is the default for real devices with a bad clock: the usual
//! cause is a clock that is not set yet (an RTC reset to 1970 or 2000 after
//! a power loss, before NTP) or one that drifted. The reading's timestamp is
//! wrong, and retransmitting it cannot fix that: every retry carries the
//! same `ts`. Under "disconnect", a client that keeps unacked messages
//! across reconnects (mosquitto_pub does; so do persistent-session device
//! SDKs) resends the refused reading first after each reconnect and is
//! refused again, for ever: one bad reading blocks every good one queued
//! behind it, including those stamped after NTP fixed the clock. Under
//! "drop" the bad readings are lost, but they were unusable (nobody can
//! recover their true time), they are counted where an operator sees them,
//! and the device's good readings keep flowing. "disconnect" suits fleets
//! whose firmware treats a disconnect as "check your clock and discard",
//! and operators who prefer a loud failure.
//!
//! # Connection hygiene
//! Every limit is configurable and counted when it fires:
//! - `max-connections` (global; `strata_ingress_connections_refused_total`)
//!   and `max-connections-per-ip`
//!   (`strata_ingress_connections_refused_per_ip_total`). Devices behind one
//!   NAT share a source address, so the per-source default (1000) is a
//!   guard against one host taking all 10,000 slots, not a per-device
//!   limit: raise it for a gateway or carrier NAT fronting more devices.
//! - `max-keep-alive` (default 20m, AWS IoT's longest): a client asking for
//!   keep-alive 0 (none) or more than the cap is held to the cap (v5 clients
//!   are told via Server Keep Alive) and closed after 1.5 × the cap of
//!   silence, counted as `idle_timeout` (a client's own keep-alive firing is
//!   `keep_alive_timeout`).
//! - `connect-timeout-ms`: a connection that sends no CONNECT in time is
//!   closed and counted as `connect_timeout` (a partial CONNECT as
//!   `malformed_packet`).
//!
//! # Who may connect, publish and subscribe
//! Every client authenticates (see [`auth`]) unless `allow-anonymous` is
//! set. A refused CONNECT gets CONNACK v5 0x86 / 0x87 (v3.1.1: 4 / 5), a
//! client id held by *another* identity v5 0x85 (v3.1.1: 2); the same
//! identity takes its client id over as MQTT says. A publish outside the
//! identity's `strata/<tenant>/<devices>/…` is never decoded or stored: v5
//! QoS 1/2 get PUBACK/PUBREC 0x87 with a reason string, v5 QoS 0 is dropped.
//! **v3.1.1 cannot say no, and acking a refused publish would tell the
//! device it was stored, so the connection is closed** (earlier publishes'
//! acks are still sent first). Either way it is counted as
//! `publish_not_authorized`. A subscription outside `strata/<tenant>/`
//! gets SUBACK 0x87 (v3.1.1: 0x80). A revoked identity's connections are
//! closed (v5 DISCONNECT 0x87) at the next credentials reload.
//!
//! # Known limits
//! - Sessions are not persisted across connections: CONNACK always says
//!   `session_present = false` (allowed by the spec) and QoS 2 packet-id
//!   state lives only as long as the connection.
//! - Retained messages are not stored; the retain flag is ignored.
//! - Will messages are accepted in CONNECT but never published.
//! - Subscriptions are matched by a linear scan (fine for tens of
//!   subscribers; devices normally only publish).

pub mod auth;
pub mod bounds;
pub mod bridge;
pub mod codec;
pub mod config;
pub mod driver;
pub mod limits;
pub mod metrics;
pub mod router;
pub mod server;
pub mod session;
pub mod topic;

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests_auth;
#[cfg(test)]
mod tests_mosquitto;
#[cfg(test)]
mod tests_socket;

pub use bounds::{RegionRetention, TimeBounds};
pub use bridge::{run_bridge, BridgeMetrics};
pub use config::{BridgeConfig, IngressConfig, V3Refusal};
pub use metrics::IngressMetrics;
pub use server::IngressServer;

use std::net::SocketAddr;

use strata_protocol::TelemetryRecord;

/// Where accepted records go. The edge wires this to the spool.
pub trait IngestSink: Send + Sync + 'static {
    /// Resolves Ok only once every record is durable.
    fn submit(
        &self,
        records: Vec<TelemetryRecord>,
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send;
}

/// Why a sink could not make records durable.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink is shutting down and accepts nothing more.
    #[error("ingest sink is closed")]
    Closed,
    /// Writing failed (disk full, I/O error, …); the records are not durable.
    #[error("ingest sink failed: {0}")]
    Failed(String),
}

/// Errors of the ingress server and the bridge.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The configuration is invalid; every problem is listed.
    #[error("invalid ingress configuration: {}", problems.join("; "))]
    Config {
        /// One message per problem.
        problems: Vec<String>,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The device credentials file is unreadable or invalid.
    #[error(transparent)]
    Credentials(#[from] auth::CredentialsError),
    /// The MQTT-over-TLS listener's certificates or keys are unusable.
    #[error("MQTT TLS: {detail}")]
    Tls {
        /// What failed, naming the file.
        detail: String,
    },
    /// The bridge's broker address is not `host:port`.
    #[error("bridge broker address {broker:?} is not host:port")]
    BrokerAddress {
        /// The configured address.
        broker: String,
    },
}
