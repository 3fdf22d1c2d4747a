//! Allocation-free payload encoders for the publish hot path.
//!
//! They write the same bytes the protocol crate's `encode_json` /
//! `encode_binary` would produce for [`crate::model::reading`], but straight
//! into a reused buffer from a stack array of values, without building a
//! `TelemetryRecord` (which would allocate a dozen strings per message).
//! Tests pin the equivalence through the protocol decoder.
//!
//! [`encode_padded_into`] makes payloads of an exact size for benchmarks,
//! so Strata and other brokers can be compared byte for byte.

use std::io::Write as _;

use bytes::{BufMut, BytesMut};
use strata_protocol::telemetry::{BINARY_MAGIC, MAX_PAYLOAD_LEN};

use crate::config::{FleetConfig, Sensor};

/// Smallest size [`encode_padded_into`] can always reach: magic (3), the
/// largest varint timestamp (9) and `Some(seq)` (10), one metric
/// `temperature` (1 + 1 + 11 + 8), one tag `pad` (1 + 1 + 3) and the
/// padding's length byte (1).
pub const MIN_PADDED_BYTES: u32 = 49;
/// Largest padded payload, well inside what the protocol's decoder
/// accepts ([`MAX_PAYLOAD_LEN`] bounds its allocations, not just the bytes).
pub const MAX_PADDED_BYTES: u32 = (MAX_PAYLOAD_LEN / 4) as u32;
/// The one metric of a padded payload.
pub const PADDED_METRIC: Sensor = Sensor::Temperature;
/// Key of the padding tag, followed by up to two `_` when the exact size
/// needs them (see [`encode_padded_into`]).
const PAD_KEYS: [&str; 3] = ["pad", "pad_", "pad__"];

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
    /// The requested padded size cannot hold the reading.
    #[error("a {target}-byte payload cannot hold reading {seq} ({MIN_PADDED_BYTES}..={MAX_PADDED_BYTES} always can)")]
    Size {
        /// Requested size, bytes.
        target: usize,
        /// Reading index.
        seq: u64,
    },
}

/// Appends device reading `seq` in the form `cfg` asks for: padded to
/// `payload_bytes` when set, else binary or JSON.
pub fn encode_reading(
    buf: &mut BytesMut,
    cfg: &FleetConfig,
    ts_ms: i64,
    seq: u64,
    values: &[f64; 4],
) -> Result<(), PayloadEncodeError> {
    match cfg.payload_bytes {
        Some(n) => encode_padded_into(buf, n as usize, ts_ms, seq, values[PADDED_METRIC.index()]),
        None => encode_into(buf, cfg.binary, ts_ms, seq, values),
    }
}

/// Bytes of bincode's varint encoding of `n`.
fn varint_len(n: usize) -> usize {
    match n {
        0..=250 => 1,
        251..=0xFFFF => 3,
        0x1_0000..=0xFFFF_FFFF => 5,
        _ => 9,
    }
}

/// How to fill `rem` bytes with the padding tag's key extension, value
/// length and value: `(extra key bytes, value length)`. A varint cannot
/// take every size (it jumps from 1 to 3 bytes at 251), so the key
/// absorbs the one or two bytes a value length alone cannot.
fn pad_layout(rem: usize) -> Option<(usize, usize)> {
    (0..PAD_KEYS.len()).find_map(|extra| {
        let left = rem.checked_sub(extra)?;
        [1, 3, 5]
            .into_iter()
            .filter_map(|s| left.checked_sub(s))
            .find(|k| varint_len(*k) + k == left)
            .map(|k| (extra, k))
    })
}

/// Appends a binary payload of exactly `target` bytes: [`BINARY_MAGIC`] +
/// bincode(`BinaryReading`) with the one metric [`PADDED_METRIC`] and a
/// tag `pad` whose value is `x` repeated to fill the size. A benchmark's
/// payload size is then exact, whatever the varint widths of `ts` and
/// `seq`.
pub fn encode_padded_into(
    buf: &mut BytesMut,
    target: usize,
    ts_ms: i64,
    seq: u64,
    value: f64,
) -> Result<(), PayloadEncodeError> {
    let cfg = bincode::config::standard();
    let start = buf.len();
    buf.reserve(target);
    buf.put_slice(&BINARY_MAGIC);
    let metrics: [(&str, f64); 1] = [(PADDED_METRIC.as_str(), value)];
    // A struct encodes as its fields in order and a Vec's length as a
    // usize varint: this is `ts, seq, metrics, tags.len()`.
    let head = (ts_ms, Some(seq), &metrics[..], 1usize);
    bincode::encode_into_std_write(head, &mut buf.writer(), cfg)?;
    let used = buf.len() - start + 1 + PAD_KEYS[0].len();
    let layout = target.checked_sub(used).and_then(pad_layout);
    let Some((extra, k)) = layout else {
        buf.truncate(start);
        return Err(PayloadEncodeError::Size { target, seq });
    };
    // A str encodes as its length (a usize varint) and its bytes.
    bincode::encode_into_std_write(PAD_KEYS[extra], &mut buf.writer(), cfg)?;
    bincode::encode_into_std_write(k, &mut buf.writer(), cfg)?;
    buf.put_bytes(b'x', k);
    Ok(())
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

    #[test]
    fn padded_payloads_have_the_exact_size_and_decode() {
        let dev = parse_topic("strata/demo/dev-7/telemetry").unwrap();
        let mut buf = BytesMut::new();
        let seqs = [
            0,
            250,
            251,
            0xFFFF,
            0x1_0000,
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ];
        let tss = [0, 1_732_600_000_000, i64::MIN, i64::MAX];
        let mut targets: Vec<usize> = (MIN_PADDED_BYTES as usize..=600).collect();
        targets.extend([4095, 16_383, MAX_PADDED_BYTES as usize]);
        for target in targets {
            for (seq, ts) in seqs.iter().flat_map(|s| tss.iter().map(move |t| (*s, *t))) {
                buf.clear();
                buf.put_u8(0xAA); // appends after what is there
                encode_padded_into(&mut buf, target, ts, seq, 21.5).unwrap();
                assert_eq!(buf.len(), 1 + target, "target {target} seq {seq} ts {ts}");
                let r = decode_payload(&dev, &buf[1..]).unwrap();
                assert_eq!((r.ts_ms, r.seq), (ts, Some(seq)));
                assert_eq!(r.metrics.len(), 1);
                assert_eq!(
                    (r.metrics[0].name.as_str(), r.metrics[0].value),
                    ("temperature", 21.5)
                );
                assert_eq!(r.tags.len(), 1);
                assert!(r.tags[0].key.starts_with("pad"));
                assert!(r.tags[0].value.bytes().all(|b| b == b'x'));
                assert_eq!(&encode_binary(&r)[..], &buf[1..], "canonical bincode");
            }
        }
        buf.clear();
        assert!(encode_padded_into(&mut buf, 20, 0, 0, 1.0).is_err());
        assert!(buf.is_empty(), "a refused payload leaves nothing behind");
    }

    #[test]
    fn model_reading_matches_the_padded_payload() {
        let cfg = FleetConfig {
            payload_bytes: Some(64),
            binary: false, // overridden by payload_bytes
            start_ts_ms: Some(1_732_600_000_000),
            ..FleetConfig::default()
        };
        let dev = parse_topic("strata/demo/dev-3/telemetry").unwrap();
        let mut buf = BytesMut::new();
        for i in [0, 1, 300, 70_000] {
            buf.clear();
            let v = values(&cfg, 3, i).unwrap();
            encode_reading(&mut buf, &cfg, ts_ms(&cfg, i), i, &v).unwrap();
            assert_eq!(buf.len(), 64);
            let r = reading(&cfg, 3, i).unwrap();
            assert_eq!(decode_payload(&dev, &buf).unwrap(), r);
            assert_eq!(r.metrics[0].value, v[PADDED_METRIC.index()]);
        }
    }

    #[test]
    fn pad_layout_covers_the_varint_gaps() {
        for rem in 1..70_000 {
            let (extra, k) = pad_layout(rem).unwrap();
            assert_eq!(extra + varint_len(k) + k, rem, "rem {rem}");
            assert!(extra < PAD_KEYS.len());
        }
        assert_eq!(pad_layout(0), None);
    }
}
