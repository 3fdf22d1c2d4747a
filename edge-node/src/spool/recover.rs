//! Opening a spool directory: create it or recover it after any crash.
//!
//! Every segment is scanned and every record's length, crc and sequence
//! number checked. Only the newest segment may end in a torn write (the
//! writer fsyncs a segment completely before starting the next), so a bad
//! record there is cut off with a warning, while a bad record anywhere else
//! is an error naming the file and offset: skipping it would silently lose
//! acknowledged telemetry.

use std::path::{Path, PathBuf};

use rand::Rng;

use super::config::SpoolConfig;
use super::error::SpoolError;
use super::format::{
    parse_record, parse_segment_name, Meta, Parsed, HEADER_LEN, META_NAME, TMP_SUFFIX,
};
use super::fs::{read_all, read_full, SpoolFs};
use super::index::{Segment, SpoolIndex, SAMPLE_STRIDE};
use super::writer::{Active, SegmentWriter};

/// Bytes read per call while scanning.
const SCAN_CHUNK: u64 = 1024 * 1024;

/// A torn tail that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub path: PathBuf,
    /// Where the first bad record started (the new file length).
    pub offset: u64,
    /// Bytes removed.
    pub dropped: u64,
    /// What was wrong at `offset`.
    pub reason: String,
}

/// A recovered spool, ready to serve.
#[derive(Debug)]
pub struct Recovered {
    /// The spool's epoch.
    pub epoch: u64,
    /// The durable view.
    pub index: SpoolIndex,
    /// The writer, continuing after the last durable record.
    pub writer: SegmentWriter,
    /// Torn tails that were cut off (at most one).
    pub torn: Vec<TornTail>,
}

/// Opens (creating if needed) the spool in `cfg.dir`. `rng` picks the epoch
/// of a new spool.
pub fn recover(
    fs: &dyn SpoolFs,
    cfg: &SpoolConfig,
    rng: &mut impl Rng,
) -> Result<Recovered, SpoolError> {
    let dir = cfg.dir.as_path();
    fs.create_dir_all(dir)
        .map_err(|e| SpoolError::io("create directory", dir, e))?;
    let names = fs
        .list(dir)
        .map_err(|e| SpoolError::io("list directory", dir, e))?;
    let mut fsyncs = 0;
    let mut bases = Vec::new();
    let mut has_meta = false;
    for name in names {
        if let Some(base) = parse_segment_name(&name) {
            bases.push(base);
        } else if name == META_NAME {
            has_meta = true;
        } else if name.ends_with(TMP_SUFFIX) {
            // A meta update that never got renamed into place.
            let path = dir.join(&name);
            fs.remove(&path)
                .map_err(|e| SpoolError::io("remove", &path, e))?;
        } else {
            tracing::warn!(dir = %dir.display(), file = %name, "ignoring unknown file in spool directory");
        }
    }
    bases.sort_unstable();

    let meta_path = dir.join(META_NAME);
    let meta = if has_meta {
        let bytes = read_all(fs, &meta_path).map_err(|e| SpoolError::io("read", &meta_path, e))?;
        Meta::decode(&bytes).map_err(|reason| SpoolError::BadMeta {
            path: meta_path.clone(),
            reason,
        })?
    } else if !bases.is_empty() {
        return Err(SpoolError::MissingMeta {
            dir: dir.to_owned(),
            segments: bases.len(),
        });
    } else {
        let meta = Meta {
            epoch: rng.gen(),
            acked: 1,
        };
        fsyncs += persist_meta(fs, dir, &meta)?;
        tracing::info!(dir = %dir.display(), epoch = meta.epoch, "created new spool");
        meta
    };

    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    let mut torn = Vec::new();
    let mut last_sample = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(super::format::segment_name(base));
        if let Some(prev) = segments.last() {
            if base != prev.end {
                return Err(SpoolError::Gap {
                    path,
                    expected: prev.end,
                    found: base,
                });
            }
        }
        let scan = scan_segment(fs, &path, base)?;
        if let Some((offset, reason)) = scan.bad {
            if i + 1 != bases.len() {
                return Err(SpoolError::Corrupt {
                    path,
                    offset,
                    reason,
                });
            }
            let dropped = scan.file_len - offset;
            tracing::warn!(
                path = %path.display(), offset, dropped_bytes = dropped, %reason,
                "spool recovery: cutting off a torn tail left by a crash"
            );
            fs.truncate(&path, offset)
                .map_err(|e| SpoolError::io("truncate", &path, e))?;
            fs.sync(&path)
                .map_err(|e| SpoolError::io("fsync", &path, e))?;
            fsyncs += 1;
            torn.push(TornTail {
                path: path.clone(),
                offset,
                dropped,
                reason,
            });
        }
        last_sample = scan.samples.last().map(|&(_, off)| off);
        segments.push(Segment {
            base,
            path,
            len: scan.valid_len,
            end: scan.end,
            samples: scan.samples,
        });
    }

    // The newest segment is never deleted, so its end is the next sequence
    // number; the ack point only matters if segments went missing.
    let next_seq = segments.last().map_or(1, |s| s.end).max(meta.acked).max(1);
    let active = segments
        .last()
        .filter(|s| s.end == next_seq)
        .map(|s| Active {
            base: s.base,
            path: s.path.clone(),
            len: s.len,
            last_sample,
        });
    let writer = SegmentWriter::new(dir.to_owned(), cfg.segment_bytes, next_seq, active);
    let mut index = SpoolIndex::new(dir.to_owned(), meta, cfg.max_bytes, segments, next_seq);
    index.add_fsyncs(fsyncs);
    let stats = index.stats();
    tracing::info!(
        dir = %dir.display(), epoch = meta.epoch, first_unacked_seq = stats.first_unacked_seq,
        next_seq, segments = stats.segments, bytes = stats.bytes_on_disk, "spool opened"
    );
    Ok(Recovered {
        epoch: meta.epoch,
        index,
        writer,
        torn,
    })
}

/// Replaces the meta file atomically: write a temporary file, fsync it,
/// rename it over the old one, fsync the directory. Returns fsyncs issued.
pub fn persist_meta(fs: &dyn SpoolFs, dir: &Path, meta: &Meta) -> Result<u64, SpoolError> {
    let tmp = dir.join(format!("{META_NAME}{TMP_SUFFIX}"));
    let path = dir.join(META_NAME);
    fs.write(&tmp, &meta.encode())
        .map_err(|e| SpoolError::io("write", &tmp, e))?;
    fs.sync(&tmp)
        .map_err(|e| SpoolError::io("fsync", &tmp, e))?;
    fs.rename(&tmp, &path)
        .map_err(|e| SpoolError::io("rename", &tmp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| SpoolError::io("fsync directory", dir, e))?;
    Ok(2)
}

struct Scan {
    file_len: u64,
    /// Bytes of complete, valid records from the start.
    valid_len: u64,
    /// One past the last valid record.
    end: u64,
    samples: Vec<(u64, u64)>,
    /// Offset and description of the first bad record.
    bad: Option<(u64, String)>,
}

/// Scans one segment, stopping at the first record that is incomplete, fails
/// its crc or carries the wrong sequence number.
fn scan_segment(fs: &dyn SpoolFs, path: &Path, base: u64) -> Result<Scan, SpoolError> {
    let mut file_len = fs.len(path).map_err(|e| SpoolError::io("stat", path, e))?;
    let mut scan = Scan {
        file_len,
        valid_len: 0,
        end: base,
        samples: Vec::new(),
        bad: None,
    };
    let mut last_sample: Option<u64> = None;
    let mut min_read = 0u64;
    let mut buf = Vec::new();
    while scan.valid_len < file_len {
        let offset = scan.valid_len;
        let remaining = file_len - offset;
        let len = SCAN_CHUNK.max(min_read).min(remaining) as usize;
        buf.resize(len, 0);
        let got =
            read_full(fs, path, offset, &mut buf).map_err(|e| SpoolError::io("read", path, e))?;
        buf.truncate(got);
        if got < len {
            // The file is shorter than it said; what is missing is torn.
            file_len = offset + got as u64;
            scan.file_len = file_len;
        }
        let mut pos = 0usize;
        min_read = 0;
        while pos < buf.len() {
            let at = offset + pos as u64;
            match parse_record(&buf[pos..]) {
                Parsed::Record { seq, payload } => {
                    if seq != scan.end {
                        scan.bad =
                            Some((at, format!("record has seq {seq}, expected {}", scan.end)));
                        return Ok(scan);
                    }
                    if last_sample.is_none_or(|s| at - s >= SAMPLE_STRIDE) {
                        last_sample = Some(at);
                        scan.samples.push((seq, at));
                    }
                    pos += payload.end;
                    scan.end += 1;
                    scan.valid_len = offset + pos as u64;
                }
                Parsed::Incomplete { need } => {
                    if need as u64 > file_len - at {
                        let what = if need == HEADER_LEN {
                            "header"
                        } else {
                            "record"
                        };
                        scan.bad = Some((
                            at,
                            format!(
                                "incomplete {what}: {need} bytes needed, {} left in file",
                                file_len - at
                            ),
                        ));
                        return Ok(scan);
                    }
                    if pos == 0 {
                        min_read = need as u64;
                    }
                    break;
                }
                Parsed::BadCrc { seq } => {
                    scan.bad = Some((at, format!("crc mismatch (header claims seq {seq})")));
                    return Ok(scan);
                }
            }
        }
    }
    Ok(scan)
}
