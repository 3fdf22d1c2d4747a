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
//!   QoS 2 packet-id tracking, keep-alive deadline, backpressure).
//! - [`topic`]: topic filter validation and matching.
//! - [`router`]: live fan-out to subscribers and client-id takeover.
//! - [`metrics`]: prometheus counters.
//! - [`driver`]: the per-connection socket task that owns a session.
//! - [`server`]: [`IngressServer`], the accept loop.
//! - [`bridge`]: [`run_bridge`], rumqttc subscriber to an external broker.
//!
//! # v3.1.1 has no negative acknowledgement
//! A v5 client gets PUBACK/PUBREC with reason 0x90 (topic name invalid) or
//! 0x99 (payload format invalid) for a publish we refuse. MQTT 3.1.1 has no
//! way to say "no": the refused publish is still PUBACKed (else the device
//! would retransmit it forever), dropped as invalid, counted in
//! `strata_ingress_rejects_total{reason}` and logged.
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
pub mod bridge;
pub mod codec;
pub mod config;
pub mod driver;
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

pub use bridge::{run_bridge, BridgeMetrics};
pub use config::{BridgeConfig, IngressConfig};
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
