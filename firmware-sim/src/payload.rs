//! Allocation-free payload encoders for the publish hot path.
//!
//! They write the same bytes the protocol crate's `encode_json` /
//! `encode_binary` would produce for [`crate::model::reading`], but straight
//! into a reused buffer from a stack array of values, without building a
//! `TelemetryRecord` (which would allocate a dozen strings per message).
//! Tests pin the equivalence through the protocol decoder.

use std::io::Write as _;

use bytes::{BufMut, BytesMut};
use strata_protocol::telemetry::BINARY_MAGIC;

use crate::config::Sensor;

/// Why a payload could not be encoded. Not expected in practice: the input
/// is a fixed-size array of finite numbers.
#[derive(Debug, thiserror::Error)]
pub enum PayloadEncodeError {
    /// bincode refused the binary body.
    #[error("binary payload encoding failed: {0}")]
    Binary(#[from] bincode::error::EncodeError),
    /// Formatting the JSON text failed.
    #[error("json payload encoding failed: {0}")]
    Json(#[from] std::io::Error),
}

/// Appends one reading's payload (JSON, or binary when `binary`) to `buf`.
pub fn encode_into(
    buf: &mut BytesMut,
    binary: bool,
    ts_ms: i64,
    seq: u64,
    values: &[f64; 4],
) -> Result<(), PayloadEncodeError> {
    buf.reserve(160);
    if binary {
        encode_binary_into(buf, ts_ms, seq, values)
    } else {
        encode_json_into(buf, ts_ms, seq, values)
    }
}

/// `{"ts":..,"seq":..,"metrics":{"humidity":..,...}}`. `f64`'s `Debug` is
/// the shortest text that parses back to the same value, keeps a `.0` on
/// integral values like serde_json does, and is valid JSON for finite values
/// (the model only produces finite ones).
fn encode_json_into(
    buf: &mut BytesMut,
    ts_ms: i64,
    seq: u64,
    values: &[f64; 4],
) -> Result<(), PayloadEncodeError> {
    let mut w = buf.writer();
    write!(w, r#"{{"ts":{ts_ms},"seq":{seq},"metrics":{{"#)?;
    for (n, m) in Sensor::ALL.iter().enumerate() {
        let sep = if n == 0 { "" } else { "," };
        write!(w, r#"{sep}"{}":{:?}"#, m.as_str(), values[m.index()])?;
    }
    w.write_all(b"}}")?;
    Ok(())
}

/// [`BINARY_MAGIC`] + bincode(`BinaryReading`). A struct encodes as its
/// fields in order and a `Vec` as a slice, so this borrowed tuple produces
/// identical bytes without owning any strings.
fn encode_binary_into(
    buf: &mut BytesMut,
    ts_ms: i64,
    seq: u64,
    values: &[f64; 4],
) -> Result<(), PayloadEncodeError> {
    buf.put_slice(&BINARY_MAGIC);
    let metrics: [(&str, f64); 4] = Sensor::ALL.map(|m| (m.as_str(), values[m.index()]));
    let tags: &[(&str, &str)] = &[];
    let body = (ts_ms, Some(seq), &metrics[..], tags);
    bincode::encode_into_std_write(body, &mut buf.writer(), bincode::config::standard())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FleetConfig;
    use crate::model::{reading, ts_ms, values};
    use strata_protocol::telemetry::{decode_payload, encode_binary, encode_json, parse_topic};

    #[test]
    fn both_forms_decode_to_the_model_reading() {
        let cfg = FleetConfig {
            seed: 42,
            start_ts_ms: Some(1_732_600_000_000),
            anomalies: vec!["spike:devices=1,start=3,duration=2".parse().unwrap()],
            ..FleetConfig::default()
        };
        let mut buf = BytesMut::new();
        for d in 0..5 {
            let dev = parse_topic(&format!("strata/demo/dev-{d}/telemetry")).unwrap();
            for i in 0..50 {
                let expected = reading(&cfg, d, i).unwrap();
                let v = values(&cfg, d, i).unwrap();
                for binary in [false, true] {
                    buf.clear();
                    encode_into(&mut buf, binary, ts_ms(&cfg, i), i, &v).unwrap();
                    assert_eq!(
                        decode_payload(&dev, &buf).unwrap(),
                        expected,
                        "d={d} i={i} binary={binary}"
                    );
                    let reference = if binary {
                        encode_binary(&expected)
                    } else {
                        encode_json(&expected)
                    };
                    if binary {
                        assert_eq!(&buf[..], &reference[..], "binary bytes identical");
                    } else {
                        let ours: serde_json::Value = serde_json::from_slice(&buf).unwrap();
                        let theirs: serde_json::Value = serde_json::from_slice(&reference).unwrap();
                        assert_eq!(ours, theirs);
                    }
                }
            }
        }
    }
}
