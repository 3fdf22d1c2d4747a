//! The single writer's side of the log: sequence assignment, segment
//! rolling and the write-then-fsync of one group commit.
//!
//! [`SegmentWriter::plan`] is pure: it frames as many pending records as fit
//! (space, segment size, batch size) into one buffer and says where each
//! piece goes. [`SegmentWriter::execute`] does the I/O in an order that keeps
//! recovery simple: a segment is fully fsynced before the next one gets its
//! first byte, so only the newest segment can ever have a torn tail.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::error::SpoolError;
use super::format::{encode_record, frame_len, segment_name};
use super::fs::SpoolFs;
use super::index::SAMPLE_STRIDE;

/// The segment currently appended to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// Its first sequence number.
    pub base: u64,
    /// Its path.
    pub path: PathBuf,
    /// Bytes written to it.
    pub len: u64,
    /// Offset of its newest (seq, offset) sample.
    pub last_sample: Option<u64>,
}

/// The records of one group commit that go to one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The segment's base sequence number.
    pub base: u64,
    /// The segment's path.
    pub path: PathBuf,
    /// True when this chunk creates the segment (its directory entry must
    /// then be fsynced too).
    pub new_segment: bool,
    /// First record's sequence number.
    pub first_seq: u64,
    /// Number of records.
    pub count: u64,
    /// The framed records, as a range of [`WritePlan::buf`].
    pub data: Range<usize>,
    /// Seek samples for records in this chunk.
    pub samples: Vec<(u64, u64)>,
}

/// One group commit, ready to execute.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WritePlan {
    /// Pieces in write order.
    pub chunks: Vec<Chunk>,
    /// First sequence number assigned.
    pub first_seq: u64,
    /// Records in the plan.
    pub count: u64,
    /// Framed records of every chunk, back to back.
    pub buf: Vec<u8>,
}

/// See the module docs.
#[derive(Debug)]
pub struct SegmentWriter {
    dir: PathBuf,
    segment_bytes: u64,
    next_seq: u64,
    active: Option<Active>,
}

impl SegmentWriter {
    /// A writer continuing at `next_seq`, appending to `active` if given
    /// (it must end exactly at `next_seq`).
    pub fn new(dir: PathBuf, segment_bytes: u64, next_seq: u64, active: Option<Active>) -> Self {
        SegmentWriter {
            dir,
            segment_bytes,
            next_seq,
            active,
        }
    }

    /// The sequence number the next planned record gets.
    #[cfg(test)]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Frames records from `payloads`, in order, while they fit in
    /// `free_bytes` and `max_records`. Every payload must already be known
    /// to fit in one segment. Assigns their sequence numbers: a plan must be
    /// executed (or the writer abandoned) before the next one is made.
    pub fn plan<'a>(
        &mut self,
        payloads: impl IntoIterator<Item = &'a [u8]>,
        free_bytes: u64,
        max_records: usize,
    ) -> WritePlan {
        let mut plan = WritePlan {
            first_seq: self.next_seq,
            ..WritePlan::default()
        };
        let mut used = 0u64;
        for payload in payloads.into_iter().take(max_records) {
            let frame = frame_len(payload.len());
            if used + frame > free_bytes {
                break;
            }
            used += frame;
            let needs_roll = match &self.active {
                None => true,
                Some(a) => a.len > 0 && a.len + frame > self.segment_bytes,
            };
            if needs_roll {
                let base = self.next_seq;
                self.active = Some(Active {
                    base,
                    path: self.dir.join(segment_name(base)),
                    len: 0,
                    last_sample: None,
                });
            }
            let Some(active) = self.active.as_mut() else {
                // Unreachable: set just above when missing.
                break;
            };
            let start = plan.buf.len();
            if plan.chunks.last().is_none_or(|c| c.base != active.base) {
                plan.chunks.push(Chunk {
                    base: active.base,
                    path: active.path.clone(),
                    new_segment: needs_roll,
                    first_seq: self.next_seq,
                    count: 0,
                    data: start..start,
                    samples: Vec::new(),
                });
            }
            let offset = active.len;
            if active
                .last_sample
                .is_none_or(|s| offset - s >= SAMPLE_STRIDE)
            {
                active.last_sample = Some(offset);
                if let Some(c) = plan.chunks.last_mut() {
                    c.samples.push((self.next_seq, offset));
                }
            }
            encode_record(&mut plan.buf, self.next_seq, payload);
            active.len += frame;
            if let Some(c) = plan.chunks.last_mut() {
                c.count += 1;
                c.data.end = plan.buf.len();
            }
            self.next_seq += 1;
            plan.count += 1;
        }
        plan
    }

    /// Writes and fsyncs a plan; returns the number of fsyncs issued. On
    /// error the writer must not be used again (what reached the disk is
    /// unknown; recovery on the next open sorts it out).
    pub fn execute(&self, fs: &dyn SpoolFs, plan: &WritePlan) -> Result<u64, SpoolError> {
        let mut syncs = 0;
        for chunk in &plan.chunks {
            let data = plan.buf.get(chunk.data.clone()).unwrap_or_default();
            fs.append(&chunk.path, data)
                .map_err(|e| SpoolError::io("append", &chunk.path, e))?;
            fs.sync(&chunk.path)
                .map_err(|e| SpoolError::io("fsync", &chunk.path, e))?;
            syncs += 1;
            if chunk.new_segment {
                sync_dir(fs, &self.dir)?;
                syncs += 1;
            }
        }
        Ok(syncs)
    }
}

fn sync_dir(fs: &dyn SpoolFs, dir: &Path) -> Result<(), SpoolError> {
    fs.sync_dir(dir)
        .map_err(|e| SpoolError::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![i as u8; len]).collect()
    }

    #[test]
    fn plan_rolls_at_segment_size_and_respects_limits() {
        let mut w = SegmentWriter::new("/s".into(), 100, 1, None);
        let p = payloads(10, 24); // 40-byte frames: two per 100-byte segment
        let plan = w.plan(p.iter().map(|v| v.as_slice()), u64::MAX, 5);
        assert_eq!((plan.first_seq, plan.count), (1, 5));
        let bases: Vec<_> = plan
            .chunks
            .iter()
            .map(|c| (c.base, c.count, c.new_segment))
            .collect();
        assert_eq!(bases, vec![(1, 2, true), (3, 2, true), (5, 1, true)]);
        assert_eq!(plan.buf.len(), 200);
        // Space bound: only one more frame fits.
        let plan = w.plan(p.iter().map(|v| v.as_slice()), 79, 100);
        assert_eq!((plan.first_seq, plan.count), (6, 1));
        assert!(!plan.chunks[0].new_segment, "continues segment 5");
        let plan = w.plan(p.iter().map(|v| v.as_slice()), 10, 100);
        assert_eq!(plan.count, 0);
        assert!(plan.chunks.is_empty());
        assert_eq!(w.next_seq(), 7);
    }

    #[test]
    fn a_record_larger_than_the_rest_of_a_segment_starts_a_new_one() {
        let mut w = SegmentWriter::new("/s".into(), 100, 1, None);
        let small = vec![0u8; 4];
        let big = vec![0u8; 84]; // frame = 100: exactly one segment
        let plan = w.plan([small.as_slice(), big.as_slice()], u64::MAX, 10);
        let bases: Vec<_> = plan.chunks.iter().map(|c| (c.base, c.count)).collect();
        assert_eq!(bases, vec![(1, 1), (2, 1)]);
    }
}
