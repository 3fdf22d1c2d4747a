//! The telemetry record and how devices send it.
//!
//! Devices publish to `strata/<tenant>/<device>/telemetry`. The payload is
//! either JSON:
//!
//! ```json
//! {"ts": 1732600000000, "seq": 42, "metrics": {"temperature": 21.5}, "tags": {"fw": "1.2"}}
//! ```
//!
//! (`ts` in milliseconds since the Unix epoch, required; `seq` optional; at
//! least one finite numeric metric; tags optional string values) or the
//! compact binary form: the magic bytes [`BINARY_MAGIC`] followed by the
//! bincode 2 encoding of [`BinaryReading`].

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Magic prefix of a compact binary payload ("SB" + format version 1).
pub const BINARY_MAGIC: [u8; 3] = [b'S', b'B', 1];
/// Largest accepted payload, in bytes.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024;
/// Most metrics one record may carry.
pub const MAX_METRICS: usize = 256;
/// Most tags one record may carry.
pub const MAX_TAGS: usize = 64;
/// Longest tenant, device, metric or tag name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// One named metric value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub struct Metric {
    /// Metric name, e.g. `temperature`.
    pub name: String,
    /// Always finite: the decoders reject NaN and infinities.
    pub value: f64,
}

/// One string tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Tag {
    /// Tag key.
    pub key: String,
    /// Tag value.
    pub value: String,
}

/// One reading from one device: the unit everything downstream stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub struct TelemetryRecord {
    /// Tenant that owns the device.
    pub tenant: String,
    /// Device id, unique within its tenant.
    pub device: String,
    /// Reading time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Device-side sequence number, when the device sends one. Stores use
    /// it to make a device's at-least-once retransmissions idempotent.
    pub seq: Option<u64>,
    /// Named values; never empty.
    pub metrics: Vec<Metric>,
    /// Optional tags.
    pub tags: Vec<Tag>,
}

/// The compact binary payload body (after [`BINARY_MAGIC`]).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct BinaryReading {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Optional device sequence number.
    pub seq: Option<u64>,
    /// (name, value) pairs.
    pub metrics: Vec<(String, f64)>,
    /// (key, value) pairs.
    pub tags: Vec<(String, String)>,
}

/// A device address parsed from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRef {
    /// Tenant segment of the topic.
    pub tenant: String,
    /// Device segment of the topic.
    pub device: String,
}

/// Why a publish was rejected: a closed set, so it can label a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The topic is not `strata/<tenant>/<device>/telemetry`.
    UnknownTopic,
    /// A tenant or device segment is empty, too long or has bad characters.
    BadName,
    /// The payload is larger than [`MAX_PAYLOAD_LEN`].
    Oversize,
    /// Not valid JSON, or JSON of the wrong shape.
    InvalidJson,
    /// The binary form failed to decode.
    InvalidBinary,
    /// No `ts` field.
    MissingTimestamp,
    /// `ts` is not an integer number of milliseconds.
    BadTimestamp,
    /// A metric value is not a number.
    NonNumericMetric,
    /// A metric value is NaN or infinite.
    NonFiniteMetric,
    /// No metrics at all, or too many metrics or tags.
    BadMetricCount,
    /// A tag value is not a string.
    BadTag,
}

impl RejectReason {
    /// Every reason, for pre-registering counters.
    pub const ALL: [RejectReason; 11] = [
        RejectReason::UnknownTopic,
        RejectReason::BadName,
        RejectReason::Oversize,
        RejectReason::InvalidJson,
        RejectReason::InvalidBinary,
        RejectReason::MissingTimestamp,
        RejectReason::BadTimestamp,
        RejectReason::NonNumericMetric,
        RejectReason::NonFiniteMetric,
        RejectReason::BadMetricCount,
        RejectReason::BadTag,
    ];

    /// Stable snake_case label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownTopic => "unknown_topic",
            RejectReason::BadName => "bad_name",
            RejectReason::Oversize => "oversize",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::InvalidBinary => "invalid_binary",
            RejectReason::MissingTimestamp => "missing_timestamp",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::NonNumericMetric => "non_numeric_metric",
            RejectReason::NonFiniteMetric => "non_finite_metric",
            RejectReason::BadMetricCount => "bad_metric_count",
            RejectReason::BadTag => "bad_tag",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected publish: the closed reason plus a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct PayloadError {
    /// Counter label.
    pub reason: RejectReason,
    /// What exactly was wrong, for the log line.
    pub detail: String,
}

impl PayloadError {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        PayloadError {
            reason,
            detail: detail.into(),
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Parses `strata/<tenant>/<device>/telemetry`.
pub fn parse_topic(topic: &str) -> Result<DeviceRef, PayloadError> {
    let mut parts = topic.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("strata"), Some(tenant), Some(device), Some("telemetry"), None) => {
            if !valid_name(tenant) || !valid_name(device) {
                return Err(PayloadError::new(
                    RejectReason::BadName,
                    format!("tenant and device must be 1-{MAX_NAME_LEN} chars of [A-Za-z0-9_.-] in topic {topic:?}"),
                ));
            }
            Ok(DeviceRef {
                tenant: tenant.to_owned(),
                device: device.to_owned(),
            })
        }
        _ => Err(PayloadError::new(
            RejectReason::UnknownTopic,
            format!("topic {topic:?} is not strata/<tenant>/<device>/telemetry"),
        )),
    }
}

/// The topic a device publishes its telemetry to.
pub fn telemetry_topic(tenant: &str, device: &str) -> String {
    format!("strata/{tenant}/{device}/telemetry")
}

/// Decodes a publish payload (JSON or binary) for the device in the topic.
pub fn decode_payload(dev: &DeviceRef, payload: &[u8]) -> Result<TelemetryRecord, PayloadError> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(PayloadError::new(
            RejectReason::Oversize,
            format!(
                "payload of {} bytes exceeds {MAX_PAYLOAD_LEN}",
                payload.len()
            ),
        ));
    }
    let record = if payload.starts_with(&BINARY_MAGIC) {
        decode_binary(dev, &payload[BINARY_MAGIC.len()..])?
    } else {
        decode_json(dev, payload)?
    };
    validate(&record)?;
    Ok(record)
}

fn decode_binary(dev: &DeviceRef, body: &[u8]) -> Result<TelemetryRecord, PayloadError> {
    let cfg = bincode::config::standard().with_limit::<MAX_PAYLOAD_LEN>();
    let (r, used): (BinaryReading, usize) = bincode::decode_from_slice(body, cfg)
        .map_err(|e| PayloadError::new(RejectReason::InvalidBinary, e.to_string()))?;
    if used != body.len() {
        return Err(PayloadError::new(
            RejectReason::InvalidBinary,
            format!("{} trailing bytes", body.len() - used),
        ));
    }
    Ok(TelemetryRecord {
        tenant: dev.tenant.clone(),
        device: dev.device.clone(),
        ts_ms: r.ts_ms,
        seq: r.seq,
        metrics: r
            .metrics
            .into_iter()
            .map(|(name, value)| Metric { name, value })
            .collect(),
        tags: r
            .tags
            .into_iter()
            .map(|(key, value)| Tag { key, value })
            .collect(),
    })
}

#[derive(Deserialize)]
struct JsonReading {
    ts: Option<serde_json::Value>,
    seq: Option<u64>,
    #[serde(default)]
    metrics: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    tags: serde_json::Map<String, serde_json::Value>,
}

fn decode_json(dev: &DeviceRef, payload: &[u8]) -> Result<TelemetryRecord, PayloadError> {
    let r: JsonReading = serde_json::from_slice(payload)
        .map_err(|e| PayloadError::new(RejectReason::InvalidJson, e.to_string()))?;
    let ts = r.ts.ok_or_else(|| {
        PayloadError::new(
            RejectReason::MissingTimestamp,
            "field `ts` (ms) is required",
        )
    })?;
    let ts_ms = ts.as_i64().ok_or_else(|| {
        PayloadError::new(
            RejectReason::BadTimestamp,
            format!("`ts` must be integer milliseconds, got {ts}"),
        )
    })?;
    let mut metrics = Vec::with_capacity(r.metrics.len());
    for (name, v) in r.metrics {
        let value = v.as_f64().ok_or_else(|| {
            PayloadError::new(
                RejectReason::NonNumericMetric,
                format!("metric {name:?} is not a number: {v}"),
            )
        })?;
        metrics.push(Metric { name, value });
    }
    let mut tags = Vec::with_capacity(r.tags.len());
    for (key, v) in r.tags {
        match v {
            serde_json::Value::String(value) => tags.push(Tag { key, value }),
            other => {
                return Err(PayloadError::new(
                    RejectReason::BadTag,
                    format!("tag {key:?} is not a string: {other}"),
                ))
            }
        }
    }
    Ok(TelemetryRecord {
        tenant: dev.tenant.clone(),
        device: dev.device.clone(),
        ts_ms,
        seq: r.seq,
        metrics,
        tags,
    })
}

fn validate(r: &TelemetryRecord) -> Result<(), PayloadError> {
    if r.metrics.is_empty() || r.metrics.len() > MAX_METRICS || r.tags.len() > MAX_TAGS {
        return Err(PayloadError::new(
            RejectReason::BadMetricCount,
            format!(
                "need 1-{MAX_METRICS} metrics and at most {MAX_TAGS} tags, got {} and {}",
                r.metrics.len(),
                r.tags.len()
            ),
        ));
    }
    for m in &r.metrics {
        if !m.value.is_finite() {
            return Err(PayloadError::new(
                RejectReason::NonFiniteMetric,
                format!("metric {:?} is {}", m.name, m.value),
            ));
        }
        if m.name.is_empty() || m.name.len() > MAX_NAME_LEN {
            return Err(PayloadError::new(
                RejectReason::BadName,
                format!("metric name {:?} must be 1-{MAX_NAME_LEN} bytes", m.name),
            ));
        }
    }
    Ok(())
}

/// Encodes a record as a JSON payload (the form simple devices send).
pub fn encode_json(r: &TelemetryRecord) -> Vec<u8> {
    let mut metrics = serde_json::Map::new();
    for m in &r.metrics {
        metrics.insert(m.name.clone(), serde_json::json!(m.value));
    }
    let mut v = serde_json::json!({ "ts": r.ts_ms, "metrics": metrics });
    if let Some(seq) = r.seq {
        v["seq"] = serde_json::json!(seq);
    }
    if !r.tags.is_empty() {
        let tags: serde_json::Map<String, serde_json::Value> = r
            .tags
            .iter()
            .map(|t| (t.key.clone(), serde_json::Value::String(t.value.clone())))
            .collect();
        v["tags"] = serde_json::Value::Object(tags);
    }
    v.to_string().into_bytes()
}

/// Encodes a record in the compact binary payload form.
pub fn encode_binary(r: &TelemetryRecord) -> Vec<u8> {
    let body = BinaryReading {
        ts_ms: r.ts_ms,
        seq: r.seq,
        metrics: r
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect(),
        tags: r
            .tags
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect(),
    };
    let mut out = BINARY_MAGIC.to_vec();
    // Encoding into a Vec cannot fail for these plain types.
    let _ = bincode::encode_into_std_write(&body, &mut out, bincode::config::standard());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev() -> DeviceRef {
        parse_topic("strata/acme/dev-1/telemetry").unwrap()
    }

    fn reason(payload: &str) -> RejectReason {
        decode_payload(&dev(), payload.as_bytes())
            .unwrap_err()
            .reason
    }

    #[test]
    fn topics() {
        assert_eq!(dev().tenant, "acme");
        assert_eq!(dev().device, "dev-1");
        for bad in [
            "strata/acme/dev/alerts",
            "foo/acme/dev/telemetry",
            "strata/acme/telemetry",
            "strata/a/b/telemetry/x",
        ] {
            assert_eq!(
                parse_topic(bad).unwrap_err().reason,
                RejectReason::UnknownTopic,
                "{bad}"
            );
        }
        assert_eq!(
            parse_topic("strata//d/telemetry").unwrap_err().reason,
            RejectReason::BadName
        );
        assert_eq!(
            parse_topic("strata/a b/d/telemetry").unwrap_err().reason,
            RejectReason::BadName
        );
    }

    #[test]
    fn good_json() {
        let r = decode_payload(
            &dev(),
            br#"{"ts":1700000000000,"seq":7,"metrics":{"t":21.5,"h":40},"tags":{"fw":"1.2"}}"#,
        )
        .unwrap();
        assert_eq!(r.ts_ms, 1_700_000_000_000);
        assert_eq!(r.seq, Some(7));
        assert_eq!(r.metrics.len(), 2);
        assert_eq!(r.tags[0].value, "1.2");
    }

    #[test]
    fn each_bad_payload_has_its_reason() {
        assert_eq!(reason("{not json"), RejectReason::InvalidJson);
        assert_eq!(
            reason(r#"{"metrics":{"t":1}}"#),
            RejectReason::MissingTimestamp
        );
        assert_eq!(
            reason(r#"{"ts":"yesterday","metrics":{"t":1}}"#),
            RejectReason::BadTimestamp
        );
        assert_eq!(
            reason(r#"{"ts":1,"metrics":{"t":"hot"}}"#),
            RejectReason::NonNumericMetric
        );
        assert_eq!(
            reason(r#"{"ts":1,"metrics":{}}"#),
            RejectReason::BadMetricCount
        );
        assert_eq!(
            reason(r#"{"ts":1,"metrics":{"t":1},"tags":{"a":1}}"#),
            RejectReason::BadTag
        );
        // JSON cannot spell NaN; an out-of-range literal is refused by the parser.
        assert_eq!(
            reason(r#"{"ts":1,"metrics":{"t":1e999}}"#),
            RejectReason::InvalidJson
        );
        let big = format!(
            r#"{{"ts":1,"metrics":{{"t":1}},"x":"{}"}}"#,
            "a".repeat(MAX_PAYLOAD_LEN)
        );
        assert_eq!(reason(&big), RejectReason::Oversize);
    }

    #[test]
    fn binary_nan_is_refused() {
        let mut r = decode_payload(&dev(), br#"{"ts":1,"metrics":{"t":1}}"#).unwrap();
        r.metrics[0].value = f64::NAN;
        let bytes = encode_binary(&r);
        assert_eq!(
            decode_payload(&dev(), &bytes).unwrap_err().reason,
            RejectReason::NonFiniteMetric
        );
        let mut trunc = bytes.clone();
        trunc.truncate(bytes.len() - 3);
        assert_eq!(
            decode_payload(&dev(), &trunc).unwrap_err().reason,
            RejectReason::InvalidBinary
        );
    }

    proptest! {
        #[test]
        fn json_and_binary_round_trip(ts: i64, seq: Option<u64>, vals in proptest::collection::vec(-1e12f64..1e12, 1..8)) {
            let r = TelemetryRecord {
                tenant: "acme".into(), device: "dev-1".into(), ts_ms: ts, seq,
                metrics: vals.iter().enumerate().map(|(i, v)| Metric { name: format!("m{i}"), value: *v }).collect(),
                tags: vec![Tag { key: "k".into(), value: "v".into() }],
            };
            prop_assert_eq!(decode_payload(&dev(), &encode_binary(&r)).unwrap(), r.clone());
            let j = decode_payload(&dev(), &encode_json(&r)).unwrap();
            prop_assert_eq!(j.ts_ms, r.ts_ms);
            prop_assert_eq!(j.metrics.len(), r.metrics.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_payload(&dev(), &bytes);
        }
    }
}
