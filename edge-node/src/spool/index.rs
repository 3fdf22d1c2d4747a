//! The durable view of the spool: which segments exist, how much of each is
//! fsynced, where readers are, and what the hub has acknowledged.
//!
//! Deterministic: every method is a state transition, plus reads through the
//! [`SpoolFs`] for [`SpoolIndex::read`]. The writer publishes into this view
//! only after its fsync returned ([`SpoolIndex::commit`]), so readers never
//! see a record that a crash could take back.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::error::SpoolError;
use super::format::{parse_record, Meta, Parsed, HEADER_LEN};
use super::fs::{read_full, SpoolFs};
use super::writer::WritePlan;

/// A (seq, byte offset) sample is kept at least every this many bytes of a
/// segment, so seeking to an arbitrary seq scans at most this far.
pub const SAMPLE_STRIDE: u64 = 64 * 1024;

/// Largest single read issued by [`SpoolIndex::read`] (a record larger than
/// this is read whole, in its own call).
const MAX_CHUNK: u64 = 8 * 1024 * 1024;
const MIN_CHUNK: u64 = 4096;

/// One segment file as far as it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Sequence number of its first record (and its file name).
    pub base: u64,
    /// Its path.
    pub path: PathBuf,
    /// Durable bytes: readers never look past this.
    pub len: u64,
    /// One past its last durable record.
    pub end: u64,
    /// Ascending `(seq, offset)` of some record starts, at most
    /// [`SAMPLE_STRIDE`] bytes apart.
    pub samples: Vec<(u64, u64)>,
}

/// A reader position: the record `seq` starts at byte `offset` of the
/// segment based at `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    seq: u64,
    base: u64,
    offset: u64,
}

/// Counters and levels reported by [`super::Spool::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// The spool's epoch.
    pub epoch: u64,
    /// First sequence number not yet acknowledged by the hub.
    pub first_unacked_seq: u64,
    /// Sequence number the next durable record will get.
    pub next_seq: u64,
    /// Durable records not yet acknowledged.
    pub records: u64,
    /// Bytes the segments take on disk (including trimmed segments whose
    /// files are about to be deleted).
    pub bytes_on_disk: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// True while an append waits for trimming to free space.
    pub full: bool,
    /// fsyncs issued (files and directories) since open.
    pub fsyncs: u64,
    /// Records made durable since open.
    pub appended_total: u64,
}

/// Work the writer must do off the hot path after trims.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Housekeeping {
    /// Segment files to delete, with their sizes.
    pub remove: Vec<(PathBuf, u64)>,
    /// The ack point to persist, if it moved since the last persist.
    pub meta: Option<Meta>,
}

/// See the module docs.
#[derive(Debug)]
pub struct SpoolIndex {
    dir: PathBuf,
    epoch: u64,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    next_seq: u64,
    acked: u64,
    persisted_ack: u64,
    cursor: Option<Cursor>,
    bytes_on_disk: u64,
    doomed: Vec<(PathBuf, u64)>,
    full: bool,
    fsyncs: u64,
    appended_total: u64,
}

impl SpoolIndex {
    /// Builds the view from recovered segments (consecutive, oldest first).
    pub fn new(
        dir: PathBuf,
        meta: Meta,
        max_bytes: u64,
        segments: Vec<Segment>,
        next_seq: u64,
    ) -> SpoolIndex {
        let bytes_on_disk = segments.iter().map(|s| s.len).sum();
        let first = segments.first().map_or(next_seq, |s| s.base);
        let mut idx = SpoolIndex {
            dir,
            epoch: meta.epoch,
            max_bytes,
            segments: segments.into(),
            next_seq,
            acked: first.min(next_seq),
            persisted_ack: meta.acked,
            cursor: None,
            bytes_on_disk,
            doomed: Vec::new(),
            full: false,
            fsyncs: 0,
            appended_total: 0,
        };
        // Segments the meta file says are acknowledged are dropped now; a
        // newer ack than the meta file's is implied by deleted segments.
        idx.set_acked(meta.acked.clamp(idx.acked, next_seq));
        idx
    }

    /// One past the last durable record.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes the writer may still add before the size bound is reached.
    pub fn free_bytes(&self) -> u64 {
        self.max_bytes.saturating_sub(self.bytes_on_disk)
    }

    /// Marks whether the writer is blocked on space.
    pub fn set_full(&mut self, full: bool) {
        self.full = full;
    }

    /// Counts fsyncs done outside [`Self::commit`].
    pub fn add_fsyncs(&mut self, n: u64) {
        self.fsyncs += n;
    }

    /// Current counters.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            epoch: self.epoch,
            first_unacked_seq: self.acked,
            next_seq: self.next_seq,
            records: self.next_seq - self.acked,
            bytes_on_disk: self.bytes_on_disk,
            segments: (self.segments.len() + self.doomed.len()) as u64,
            full: self.full,
            fsyncs: self.fsyncs,
            appended_total: self.appended_total,
        }
    }

    /// Publishes records the writer has written and fsynced.
    pub fn commit(&mut self, plan: &WritePlan, fsyncs: u64) {
        for chunk in &plan.chunks {
            if chunk.new_segment || self.segments.back().is_none_or(|s| s.base != chunk.base) {
                self.segments.push_back(Segment {
                    base: chunk.base,
                    path: chunk.path.clone(),
                    len: 0,
                    end: chunk.base,
                    samples: Vec::new(),
                });
            }
            if let Some(seg) = self.segments.back_mut() {
                seg.len += chunk.data.len() as u64;
                seg.end = chunk.first_seq + chunk.count;
                seg.samples.extend_from_slice(&chunk.samples);
            }
            self.bytes_on_disk += chunk.data.len() as u64;
        }
        self.next_seq = plan.first_seq + plan.count;
        self.appended_total += plan.count;
        self.fsyncs += fsyncs;
    }

    /// Acknowledges every record below `upto`: they are no longer read, and
    /// every segment holding only such records (except the newest, which
    /// keeps the sequence numbers alive across restarts) is handed to the
    /// writer for deletion. Acks that do not advance are ignored, so acks
    /// for parallel batches may arrive in any order.
    pub fn trim(&mut self, upto: u64) -> Result<(), SpoolError> {
        if upto > self.next_seq {
            return Err(SpoolError::TrimBeyondEnd {
                dir: self.dir.clone(),
                upto,
                next_seq: self.next_seq,
            });
        }
        self.set_acked(upto);
        Ok(())
    }

    fn set_acked(&mut self, upto: u64) {
        if upto <= self.acked {
            return;
        }
        self.acked = upto;
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.end <= upto) {
            if let Some(s) = self.segments.pop_front() {
                self.doomed.push((s.path, s.len));
            }
        }
    }

    /// Takes the pending deletions and meta update.
    /// (`remove`: the segment deletions, `meta`: the ack point to persist.)
    pub fn take_housekeeping(&mut self, remove: bool, meta: bool) -> Housekeeping {
        let (removals, ack) = self.housekeeping_pending();
        Housekeeping {
            remove: if remove && removals {
                std::mem::take(&mut self.doomed)
            } else {
                Vec::new()
            },
            meta: (meta && ack).then_some(Meta {
                epoch: self.epoch,
                acked: self.acked,
            }),
        }
    }

    /// Whether segment deletions, and an ack point persist, are pending.
    pub fn housekeeping_pending(&self) -> (bool, bool) {
        (!self.doomed.is_empty(), self.acked != self.persisted_ack)
    }

    /// Reports the outcome of housekeeping: bytes freed, files whose
    /// deletion failed (retried later) and the ack point now on disk.
    pub fn housekeeping_done(
        &mut self,
        freed: u64,
        failed: Vec<(PathBuf, u64)>,
        persisted: Option<u64>,
    ) {
        self.bytes_on_disk = self.bytes_on_disk.saturating_sub(freed);
        self.doomed.extend(failed);
        if let Some(ack) = persisted {
            self.persisted_ack = ack;
        }
    }

    /// Reads durable records from `from` on (records below the ack point are
    /// skipped): at most `max_records`, and at most `max_bytes` of payload
    /// unless the first record alone is larger (it is still returned, so a
    /// big record cannot stall the reader).
    pub fn read(
        &mut self,
        fs: &dyn SpoolFs,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, SpoolError> {
        let from = from.max(self.acked);
        let mut out = Vec::new();
        if max_records == 0 || from >= self.next_seq {
            return Ok(out);
        }
        let Some((mut si, mut offset, mut seq)) = self.seek(from) else {
            return Ok(out);
        };
        let mut bytes = 0usize;
        let mut min_read = 0u64;
        'segments: while let Some(seg) = self.segments.get(si) {
            if offset >= seg.len {
                if si + 1 < self.segments.len() {
                    si += 1;
                    offset = 0;
                    seq = self.segments[si].base;
                    continue;
                }
                break;
            }
            let remaining = seg.len - offset;
            let avg = seg.len / (seg.end - seg.base).max(1);
            let wanted = (max_records.min(1 << 20) as u64 + from.saturating_sub(seq))
                .saturating_mul(avg)
                .min(
                    (max_bytes as u64)
                        .saturating_add((HEADER_LEN * max_records.min(1 << 20)) as u64),
                )
                .clamp(MIN_CHUNK, MAX_CHUNK);
            let len = wanted.max(min_read).min(remaining) as usize;
            let mut buf = vec![0u8; len];
            let got = read_full(fs, &seg.path, offset, &mut buf)
                .map_err(|e| SpoolError::io("read", &seg.path, e))?;
            if got < len {
                return Err(corrupt(
                    &seg.path,
                    offset + got as u64,
                    "file is shorter than its fsynced length",
                ));
            }
            let buf = Bytes::from(buf);
            let mut pos = 0usize;
            min_read = 0;
            while pos < buf.len() {
                match parse_record(&buf[pos..]) {
                    Parsed::Record { seq: s, payload } => {
                        if s != seq {
                            return Err(corrupt(
                                &seg.path,
                                offset + pos as u64,
                                format!("record has seq {s}, expected {seq}"),
                            ));
                        }
                        if seq >= from {
                            if out.len() >= max_records
                                || (!out.is_empty() && bytes + payload.len() > max_bytes)
                            {
                                offset += pos as u64;
                                break 'segments;
                            }
                            bytes += payload.len();
                            out.push((seq, buf.slice(pos + payload.start..pos + payload.end)));
                        }
                        pos += payload.end;
                        seq += 1;
                    }
                    Parsed::Incomplete { need } => {
                        if pos == 0 {
                            if need as u64 > remaining {
                                return Err(corrupt(
                                    &seg.path,
                                    offset,
                                    format!("record of {need} bytes crosses the fsynced end"),
                                ));
                            }
                            min_read = need as u64;
                        }
                        break;
                    }
                    Parsed::BadCrc { .. } => {
                        return Err(corrupt(&seg.path, offset + pos as u64, "crc mismatch"));
                    }
                }
            }
            offset += pos as u64;
            if out.len() >= max_records {
                break;
            }
        }
        if let Some(seg) = self.segments.get(si) {
            self.cursor = Some(Cursor {
                seq,
                base: seg.base,
                offset,
            });
        }
        Ok(out)
    }

    /// A position at or before `from` in the segment holding it: the cursor
    /// when it is exactly there (sequential reads), else the nearest sample.
    fn seek(&self, from: u64) -> Option<(usize, u64, u64)> {
        let si = self
            .segments
            .partition_point(|s| s.base <= from)
            .checked_sub(1)?;
        let seg = &self.segments[si];
        if let Some(c) = self
            .cursor
            .filter(|c| c.seq == from && c.base == seg.base && c.offset <= seg.len)
        {
            return Some((si, c.offset, c.seq));
        }
        if from >= seg.end {
            return None;
        }
        let k = seg.samples.partition_point(|&(s, _)| s <= from);
        let (seq, offset) = k.checked_sub(1).map_or((seg.base, 0), |k| seg.samples[k]);
        Some((si, offset, seq))
    }
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> SpoolError {
    SpoolError::Corrupt {
        path: path.to_owned(),
        offset,
        reason: reason.into(),
    }
}
