//! On-disk formats: record framing, segment file names and the meta file.
//!
//! A segment is a plain concatenation of records:
//! `[u32 LE payload_len][u32 LE crc32(seq ‖ payload)][u64 LE seq][payload]`.
//! The crc covers the sequence number too, so a record copied to the wrong
//! place (or a stale page) is caught, not just flipped payload bits.

use std::ops::Range;

/// Bytes in a record header.
pub const HEADER_LEN: usize = 16;

/// File name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// Name of the meta file inside the spool directory.
pub const META_NAME: &str = "spool.meta";

/// Suffix of temporary files written before an atomic rename.
pub const TMP_SUFFIX: &str = ".tmp";

/// The crc stored in a record header.
pub fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends one framed record to `out`. The caller has checked that the
/// payload length fits in a u32.
pub fn encode_record(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&record_crc(seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Bytes one record of `payload_len` takes in a segment.
pub fn frame_len(payload_len: usize) -> u64 {
    (HEADER_LEN + payload_len) as u64
}

/// Outcome of parsing the record at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A complete, checksummed record.
    Record {
        /// Its sequence number.
        seq: u64,
        /// Where its payload lies in the buffer.
        payload: Range<usize>,
    },
    /// The buffer ends inside the record; `need` is the record's full frame
    /// length when the header is complete, else [`HEADER_LEN`].
    Incomplete {
        /// Bytes the whole frame needs.
        need: usize,
    },
    /// The header is complete but the record fails its crc.
    BadCrc {
        /// The sequence number the header claims.
        seq: u64,
    },
}

/// Parses the record at the start of `buf`. A garbage length field shows up
/// as `Incomplete` with a `need` beyond the file's end, which the caller
/// treats as a torn record; nothing is allocated from it here.
pub fn parse_record(buf: &[u8]) -> Parsed {
    let Some(hdr) = buf.get(..HEADER_LEN) else {
        return Parsed::Incomplete { need: HEADER_LEN };
    };
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&hdr[8..16]);
    let seq = u64::from_le_bytes(seq_bytes);
    let need = HEADER_LEN + len;
    let Some(payload) = buf.get(HEADER_LEN..need) else {
        return Parsed::Incomplete { need };
    };
    if record_crc(seq, payload) != crc {
        return Parsed::BadCrc { seq };
    }
    Parsed::Record {
        seq,
        payload: HEADER_LEN..need,
    }
}

/// File name of the segment whose first record is `base`: 20 zero-padded
/// digits, so lexical order is numeric order.
pub fn segment_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// The base sequence number encoded in a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

const META_MAGIC: &[u8; 8] = b"STRSPOOL";
const META_VERSION: u32 = 1;
const META_LEN: usize = 8 + 4 + 8 + 8 + 4;

/// Contents of the meta file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The spool's incarnation, fixed at creation.
    pub epoch: u64,
    /// First sequence number not yet acknowledged by the hub.
    pub acked: u64,
}

impl Meta {
    /// `magic ‖ version ‖ epoch ‖ acked ‖ crc32(everything before)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(META_LEN);
        out.extend_from_slice(META_MAGIC);
        out.extend_from_slice(&META_VERSION.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.acked.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a meta file, explaining what is wrong when it is not one.
    pub fn decode(buf: &[u8]) -> Result<Meta, String> {
        if buf.len() != META_LEN {
            return Err(format!("expected {META_LEN} bytes, found {}", buf.len()));
        }
        if &buf[..8] != META_MAGIC {
            return Err("bad magic (not a strata spool meta file)".into());
        }
        let word = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&buf[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let dword = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if crc32fast::hash(&buf[..META_LEN - 4]) != word(META_LEN - 4) {
            return Err("checksum mismatch".into());
        }
        let version = word(8);
        if version != META_VERSION {
            return Err(format!(
                "format version {version} is not supported (this build reads {META_VERSION})"
            ));
        }
        Ok(Meta {
            epoch: dword(12),
            acked: dword(20),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_damage() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, b"hello");
        assert_eq!(buf.len() as u64, frame_len(5));
        assert_eq!(
            parse_record(&buf),
            Parsed::Record {
                seq: 7,
                payload: HEADER_LEN..HEADER_LEN + 5
            }
        );
        assert_eq!(
            parse_record(&buf[..10]),
            Parsed::Incomplete { need: HEADER_LEN }
        );
        assert_eq!(
            parse_record(&buf[..18]),
            Parsed::Incomplete {
                need: HEADER_LEN + 5
            }
        );
        let mut bad = buf.clone();
        bad[HEADER_LEN] ^= 1;
        assert_eq!(parse_record(&bad), Parsed::BadCrc { seq: 7 });
        // The seq is covered by the crc as well.
        let mut moved = buf.clone();
        moved[8] = 8;
        assert_eq!(parse_record(&moved), Parsed::BadCrc { seq: 8 });
    }

    #[test]
    fn segment_names_sort_numerically() {
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("1.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000001.seg.tmp"), None);
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn meta_round_trip_and_damage() {
        let m = Meta {
            epoch: 0xdead_beef,
            acked: 42,
        };
        let bytes = m.encode();
        assert_eq!(Meta::decode(&bytes), Ok(m));
        assert!(Meta::decode(&bytes[..10]).is_err());
        let mut bad = bytes.clone();
        bad[15] ^= 1;
        assert!(Meta::decode(&bad).unwrap_err().contains("checksum"));
        let mut magic = bytes;
        magic[0] = b'X';
        assert!(Meta::decode(&magic).unwrap_err().contains("magic"));
    }
}
