//! One device's memtable: records kept bincode-encoded back to back in one
//! growing buffer, cut into segments of at most [`BLOCK_RECORDS`].
//!
//! Encoding on insert instead of keeping `TelemetryRecord`s costs one
//! `memcpy`-like pass per record but saves its six heap allocations for as
//! long as it sits in memory, makes dropping a flushed memtable a single
//! `free`, and turns a flush into "prefix the record count, lz4 the bytes":
//! a segment's bytes are exactly the body of a chunk block (see
//! [`chunk::raw_block`]), so nothing is decoded, sorted or re-encoded.
//! Records are decoded only when a query reads this device.

use strata_protocol::TelemetryRecord;

use super::chunk::{self, BLOCK_RECORDS};

/// A run of at most [`BLOCK_RECORDS`] records: one chunk block when flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    /// Byte range in [`MemBuf::buf`].
    pub start: usize,
    pub end: usize,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// Encoded records of one device, in insertion order.
#[derive(Debug, Default, Clone)]
pub(super) struct MemBuf {
    buf: Vec<u8>,
    segs: Vec<Segment>,
}

impl MemBuf {
    /// Appends one record; returns the bytes it takes.
    pub fn push(&mut self, r: &TelemetryRecord) -> usize {
        let before = self.buf.len();
        if let Err(e) = bincode::encode_into_std_write(r, &mut self.buf, chunk::BINCODE) {
            // Writing plain data into a Vec cannot fail; should it, drop the
            // partial bytes so the buffer stays decodable.
            tracing::error!(error = %e, "cannot encode a record into the memtable");
            self.buf.truncate(before);
            return 0;
        }
        let end = self.buf.len();
        match self.segs.last_mut() {
            Some(s) if (s.count as usize) < BLOCK_RECORDS => {
                s.end = end;
                s.count += 1;
                s.min_ts = s.min_ts.min(r.ts_ms);
                s.max_ts = s.max_ts.max(r.ts_ms);
            }
            _ => self.segs.push(Segment {
                start: before,
                end,
                count: 1,
                min_ts: r.ts_ms,
                max_ts: r.ts_ms,
            }),
        }
        end - before
    }

    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Segments with their encoded record bytes.
    pub fn segments(&self) -> impl Iterator<Item = (&Segment, &[u8])> + '_ {
        self.segs.iter().map(|s| (s, &self.buf[s.start..s.end]))
    }

    /// Decodes the records with a time in `range` into `out`, skipping
    /// segments that cannot hold one.
    pub fn decode_into(
        &self,
        out: &mut Vec<TelemetryRecord>,
        range: std::ops::Range<i64>,
    ) -> Result<(), String> {
        let keep = |ts: i64| range.contains(&ts);
        for (seg, bytes) in self.segments() {
            if seg.max_ts < range.start || seg.min_ts >= range.end {
                continue;
            }
            let mut pos = 0;
            for _ in 0..seg.count {
                let (r, used): (TelemetryRecord, usize) =
                    bincode::decode_from_slice(&bytes[pos..], chunk::BINCODE)
                        .map_err(|e| format!("memtable record: {e}"))?;
                pos += used;
                if keep(r.ts_ms) {
                    out.push(r);
                }
            }
        }
        Ok(())
    }

    /// Appends `other`'s records after this buffer's (used to put a frozen
    /// memtable back when its checkpoint failed).
    pub fn append(&mut self, other: &MemBuf) {
        for (seg, bytes) in other.segments() {
            let start = self.buf.len();
            self.buf.extend_from_slice(bytes);
            self.segs.push(Segment {
                start,
                end: self.buf.len(),
                ..*seg
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_protocol::Metric;

    fn rec(ts_ms: i64) -> TelemetryRecord {
        TelemetryRecord {
            tenant: "t".into(),
            device: "d".into(),
            ts_ms,
            seq: Some(ts_ms as u64),
            metrics: vec![Metric {
                name: "m".into(),
                value: ts_ms as f64,
            }],
            tags: vec![],
        }
    }

    #[test]
    fn segments_are_chunk_blocks_and_decode_back() {
        let mut m = MemBuf::default();
        let recs: Vec<_> = (0..BLOCK_RECORDS as i64 + 10)
            .map(|i| rec(1000 - i))
            .collect();
        for r in &recs {
            assert!(m.push(r) > 0);
        }
        let segs: Vec<_> = m.segments().collect();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].0.count as usize, BLOCK_RECORDS);
        assert_eq!(
            (segs[1].0.min_ts, segs[1].0.max_ts),
            (1000 - recs.len() as i64 + 1, 1000 - BLOCK_RECORDS as i64)
        );
        // A segment's bytes plus its count are exactly what encode_block makes.
        let block = chunk::raw_block(segs[0].0.count, segs[0].1);
        assert_eq!(block, chunk::encode_block(&recs[..BLOCK_RECORDS]));
        let mut out = Vec::new();
        m.decode_into(&mut out, i64::MIN..i64::MAX).unwrap();
        assert_eq!(out, recs);
        out.clear();
        m.decode_into(&mut out, i64::MIN..0).unwrap();
        assert_eq!(
            out,
            recs.iter()
                .filter(|r| r.ts_ms < 0)
                .cloned()
                .collect::<Vec<_>>()
        );
        let mut twice = m.clone();
        twice.append(&m);
        out.clear();
        twice.decode_into(&mut out, i64::MIN..i64::MAX).unwrap();
        assert_eq!(out.len(), 2 * recs.len());
    }
}
