//! Ingress metrics (prometheus-client) and a per-connection log limiter.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use strata_protocol::RejectReason;

/// Label of the rejects counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// [`RejectReason::as_str`] or a protocol-level reason.
    pub reason: &'static str,
}

/// Protocol-level reject reasons, next to the payload ones of
/// [`RejectReason`].
pub const PROTOCOL_REASONS: [&str; 6] = [
    "malformed_packet",
    "packet_too_large",
    "protocol_error",
    "topic_alias_invalid",
    "keep_alive_timeout",
    "bad_filter",
];

/// Connection limits that close a connection when they fire, next to
/// [`PROTOCOL_REASONS`]: the server's keep-alive cap
/// (`ingress.max-keep-alive`) and `ingress.connect-timeout-ms` passing
/// without a CONNECT.
pub const LIMIT_REASONS: [&str; 2] = [super::session::IDLE_TIMEOUT, "connect_timeout"];

/// Counters of the embedded server. Cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct IngressMetrics {
    /// Open TCP connections.
    pub connections: Gauge,
    /// TCP connections accepted since start.
    pub connections_total: Counter,
    /// Connections refused because `max-connections` was reached.
    pub connections_refused: Counter,
    /// Records accepted (decoded and submitted to the sink).
    pub publishes_accepted: Counter,
    /// Rejected publishes / packets by reason.
    pub rejects: Family<ReasonLabel, Counter>,
    /// Bytes read from clients.
    pub bytes_in: Counter,
    /// PUBACK/PUBREC/PUBCOMP packets sent.
    pub acks_sent: Counter,
    /// Seconds from submit to the sink resolving.
    pub submit_latency: Histogram,
    /// Sink submits that failed (records not durable, connection closed).
    pub submit_failures: Counter,
    /// Live deliveries dropped because a subscriber's queue was full.
    pub subscriber_drops: Counter,
    /// Connections holding at least one subscription.
    pub subscribers: Gauge,
    /// Connections refused because their source reached
    /// `max-connections-per-ip`.
    pub connections_refused_per_ip: Counter,
}

impl IngressMetrics {
    /// Creates the metrics and registers them under `strata_ingress_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = IngressMetrics {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            connections_refused: Counter::default(),
            publishes_accepted: Counter::default(),
            rejects: Family::default(),
            bytes_in: Counter::default(),
            acks_sent: Counter::default(),
            submit_latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            submit_failures: Counter::default(),
            subscriber_drops: Counter::default(),
            subscribers: Gauge::default(),
            connections_refused_per_ip: Counter::default(),
        };
        // Pre-create every label so dashboards see zeros, not gaps.
        for r in RejectReason::ALL {
            let _ = m.rejects.get_or_create(&ReasonLabel { reason: r.as_str() });
        }
        for r in PROTOCOL_REASONS {
            let _ = m.rejects.get_or_create(&ReasonLabel { reason: r });
        }
        for r in super::bounds::TIME_BOUND_REASONS
            .into_iter()
            .chain(LIMIT_REASONS)
        {
            let _ = m.rejects.get_or_create(&ReasonLabel { reason: r });
        }
        let reg = registry.sub_registry_with_prefix("strata_ingress");
        reg.register(
            "connections",
            "Open MQTT TCP connections",
            m.connections.clone(),
        );
        reg.register(
            "connections_accepted",
            "MQTT TCP connections accepted",
            m.connections_total.clone(),
        );
        reg.register(
            "connections_refused",
            "Connections refused at max-connections",
            m.connections_refused.clone(),
        );
        reg.register(
            "publishes_accepted",
            "Telemetry records accepted and submitted to the spool",
            m.publishes_accepted.clone(),
        );
        reg.register(
            "rejects",
            "Rejected publishes and packets by reason",
            m.rejects.clone(),
        );
        reg.register(
            "bytes_in",
            "Bytes read from MQTT clients",
            m.bytes_in.clone(),
        );
        reg.register(
            "acks_sent",
            "PUBACK/PUBREC/PUBCOMP packets sent",
            m.acks_sent.clone(),
        );
        reg.register(
            "submit_latency_seconds",
            "Time from submitting a batch to the spool until it is durable",
            m.submit_latency.clone(),
        );
        reg.register(
            "submit_failures",
            "Spool submits that failed",
            m.submit_failures.clone(),
        );
        reg.register(
            "subscriber_drops",
            "Live deliveries dropped because a subscriber queue was full",
            m.subscriber_drops.clone(),
        );
        reg.register(
            "subscribers",
            "Connections holding at least one subscription",
            m.subscribers.clone(),
        );
        reg.register(
            "connections_refused_per_ip",
            "Connections refused at max-connections-per-ip",
            m.connections_refused_per_ip.clone(),
        );
        m
    }

    /// Counts one rejection.
    pub fn reject(&self, reason: &'static str) {
        self.rejects.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Current value of the rejects counter for `reason` (tests, status).
    pub fn rejects_for(&self, reason: &'static str) -> u64 {
        self.rejects.get_or_create(&ReasonLabel { reason }).get()
    }
}

/// Allows at most `burst` log lines per `window_ms` per connection and
/// counts what it suppressed, so a flood of bad publishes cannot flood the
/// log. Time is passed in.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    burst: u32,
    window_ms: u64,
    window_start: u64,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// `burst` lines per `window_ms`.
    pub fn new(burst: u32, window_ms: u64) -> Self {
        LogLimiter {
            burst,
            window_start: 0,
            window_ms,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged now. When a new window starts, returns
    /// how many lines were suppressed in the previous ones (to log once).
    pub fn allow(&mut self, now_ms: u64) -> (bool, u64) {
        let mut report = 0;
        if now_ms.saturating_sub(self.window_start) >= self.window_ms {
            self.window_start = now_ms;
            self.used = 0;
            report = std::mem::take(&mut self.suppressed);
        }
        if self.used < self.burst {
            self.used += 1;
            (true, report)
        } else {
            self.suppressed += 1;
            (false, report)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_bursts_then_suppresses_then_reports() {
        let mut l = LogLimiter::new(2, 1000);
        assert_eq!(l.allow(0), (true, 0));
        assert_eq!(l.allow(1), (true, 0));
        assert_eq!(l.allow(2), (false, 0));
        assert_eq!(l.allow(3), (false, 0));
        assert_eq!(l.allow(1000), (true, 2));
        assert_eq!(l.allow(1001), (true, 0));
    }

    #[test]
    fn registers_and_encodes() {
        let mut reg = Registry::default();
        let m = IngressMetrics::register(&mut reg);
        m.reject("invalid_json");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains("strata_ingress_rejects_total{reason=\"invalid_json\"} 1"),
            "{out}"
        );
        assert!(out.contains("strata_ingress_rejects_total{reason=\"malformed_packet\"} 0"));
        for r in [
            "too_far_future",
            "too_old",
            "idle_timeout",
            "connect_timeout",
        ] {
            assert!(
                out.contains(&format!("strata_ingress_rejects_total{{reason=\"{r}\"}} 0")),
                "{r}: {out}"
            );
        }
        assert!(out.contains("strata_ingress_connections_refused_per_ip_total 0"));
        assert!(out.contains("strata_ingress_connections "));
        assert!(out.contains("strata_ingress_connections_accepted_total"));
    }
}
