//! Length-prefixed frames: `[u32 big-endian body length][bincode 2 body]`.
//!
//! Parsing is two-phase (mini-redis style): [`check`] looks only at the
//! 4-byte header and says whether a whole frame is buffered, refusing an
//! oversize length *before* any body buffer is allocated; [`decode_frame`]
//! then decodes the body with a bincode allocation limit, so a lying length
//! field inside the body cannot make us allocate either.

use bincode::{Decode, Encode};

/// Hard upper bound on one frame's body, in bytes (16 MiB). Telemetry batches
/// are cut well below this by their senders.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Size of the length prefix, in bytes.
pub const HEADER_LEN: usize = 4;

/// bincode configuration used for every frame body: varint integers and an
/// allocation limit equal to the maximum frame size.
pub fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes are buffered than the frame needs; read more and retry.
    #[error("incomplete frame: need {needed} more bytes")]
    Incomplete {
        /// How many more bytes are needed at least.
        needed: usize,
    },
    /// The length prefix announces more than the limit allows.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced body length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The body is not a valid encoding of the expected message.
    #[error("malformed frame body: {0}")]
    Malformed(String),
}

/// Phase one: returns the total frame length (header + body) when `buf`
/// holds a complete frame, `Incomplete` when it does not, and `TooLarge` as
/// soon as the header announces an oversize body.
pub fn check(buf: &[u8], max: usize) -> Result<usize, FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    }
    let len = body_len(buf[..HEADER_LEN].try_into().unwrap_or([0; 4]));
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Err(FrameError::Incomplete {
            needed: total - buf.len(),
        });
    }
    Ok(total)
}

/// Reads the body length out of a frame header.
pub fn body_len(header: [u8; HEADER_LEN]) -> usize {
    u32::from_be_bytes(header) as usize
}

/// Appends one frame holding `msg` to `out`.
pub fn encode_frame<T: Encode>(msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    bincode::encode_into_std_write(msg, out, bincode_config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = out.len() - start - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Encodes `msg` as one standalone frame.
pub fn frame_to_vec<T: Encode>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_frame(msg, &mut out)?;
    Ok(out)
}

/// Phase two: decodes the first frame in `buf`, returning the message and
/// the number of bytes consumed.
pub fn decode_frame<T: Decode<()>>(buf: &[u8]) -> Result<(T, usize), FrameError> {
    let total = check(buf, MAX_FRAME_LEN)?;
    let msg = decode_body(&buf[HEADER_LEN..total])?;
    Ok((msg, total))
}

/// Decodes a frame body (without its header). Trailing bytes are an error:
/// a body must be exactly one message.
pub fn decode_body<T: Decode<()>>(body: &[u8]) -> Result<T, FrameError> {
    let (msg, used) = bincode::decode_from_slice(body, bincode_config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after message",
            body.len() - used
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{EdgeRequest, Hello, NodeIdentity, NodeKind, TelemetryBatch};
    use crate::telemetry::{Metric, TelemetryRecord};
    use proptest::prelude::*;

    #[test]
    fn incomplete_header_and_body() {
        assert_eq!(
            check(&[0, 0], MAX_FRAME_LEN),
            Err(FrameError::Incomplete { needed: 2 })
        );
        assert_eq!(
            check(&[0, 0, 0, 3, 1], MAX_FRAME_LEN),
            Err(FrameError::Incomplete { needed: 2 })
        );
        assert_eq!(check(&[0, 0, 0, 1, 9], MAX_FRAME_LEN), Ok(5));
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone() {
        // Only the header is present: the refusal must not wait for the body.
        let hdr = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(
            check(&hdr, MAX_FRAME_LEN),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_body_is_malformed_not_a_panic() {
        let mut buf = vec![0, 0, 0, 4];
        buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let r: Result<(EdgeRequest, usize), _> = decode_frame(&buf);
        assert!(matches!(r, Err(FrameError::Malformed(_))));
    }

    #[test]
    fn lying_inner_length_cannot_allocate() {
        // A Vec length of u64::MAX inside a small frame must fail cleanly.
        let mut body = vec![0u8]; // EdgeRequest::Batch discriminant
        body.push(2); // edge: string of length 2
        body.extend_from_slice(b"e1");
        body.push(0); // epoch
        body.push(0); // first_seq
        body.push(253); // varint u64 marker
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut buf = (body.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(&body);
        let r: Result<(EdgeRequest, usize), _> = decode_frame(&buf);
        assert!(matches!(r, Err(FrameError::Malformed(_))));
    }

    /// Golden bytes: a change here is a wire-format change and must bump
    /// [`crate::PROTOCOL_VERSION`].
    #[test]
    fn golden_hello() {
        let hello = Hello {
            version: 1,
            node: NodeIdentity {
                kind: NodeKind::Edge,
                id: "e1".into(),
                region: "r".into(),
            },
            boot: 5,
        };
        let bytes = frame_to_vec(&hello).unwrap();
        assert_eq!(bytes, vec![0, 0, 0, 8, 1, 0, 2, b'e', b'1', 1, b'r', 5]);
    }

    fn arb_record() -> impl Strategy<Value = TelemetryRecord> {
        (
            "[a-z]{1,8}",
            "[a-z0-9-]{1,12}",
            any::<i64>(),
            any::<Option<u64>>(),
            proptest::collection::vec(("[a-z]{1,6}", -1e9f64..1e9), 1..5),
        )
            .prop_map(|(tenant, device, ts_ms, seq, m)| TelemetryRecord {
                tenant,
                device,
                ts_ms,
                seq,
                metrics: m
                    .into_iter()
                    .map(|(name, value)| Metric { name, value })
                    .collect(),
                tags: vec![],
            })
    }

    proptest! {
        #[test]
        fn batch_round_trips(edge in "[a-z0-9]{1,10}", epoch: u64, first_seq: u64,
                             records in proptest::collection::vec(arb_record(), 0..20)) {
            let entries = records.into_iter().map(crate::SpoolEntry::Telemetry).collect();
            let msg = EdgeRequest::Batch(TelemetryBatch { edge, epoch, first_seq, entries });
            let bytes = frame_to_vec(&msg).unwrap();
            let (back, used): (EdgeRequest, usize) = decode_frame(&bytes).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame::<EdgeRequest>(&bytes);
        }
    }
}
