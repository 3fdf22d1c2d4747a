//! Which chunk files to merge, and merging them without decoding records.
//!
//! Size-tiered policy: a file's tier is `floor(log4(bytes / TIER_BASE_BYTES))
//! + 1` (0 below the base). When a tier holds [`FANOUT`] files they are
//! merged into one, which lands at least one tier higher, so each byte is
//! rewritten at most once per tier: O(log4(partition / base)) times, not
//! once per checkpoint. A partition holds at most `FANOUT - 1` files per
//! tier, and never more than [`MAX_FILES`] (the smallest are merged first).
//!
//! Merging copies every block of at least [`COPY_MIN_RECORDS`] verbatim
//! (compressed, after its CRC check). Smaller blocks of one device (each
//! checkpoint writes one per device) are packed together up to
//! [`BLOCK_RECORDS`]: they are decompressed and their record bytes
//! concatenated under a new count, with no record decoded, so a device's
//! blocks quickly grow past the copy threshold and stay there.

use std::collections::BTreeMap;
use std::path::Path;

use super::chunk::{self, BlockEntry, ChunkWriter, FileIndex, BLOCK_RECORDS};
use super::manifest::FileMeta;
use super::StoreError;

/// Files of one tier merged together.
pub(super) const FANOUT: usize = 4;
/// Files below this size are all tier 0 (cheap to rewrite).
pub(super) const TIER_BASE_BYTES: u64 = 1 << 20;
/// Most files in one partition.
pub(super) const MAX_FILES: usize = 32;
/// Blocks with at least this many records are copied, never rewritten.
pub(super) const COPY_MIN_RECORDS: u32 = (BLOCK_RECORDS / 4) as u32;

fn tier(bytes: u64) -> u32 {
    if bytes < TIER_BASE_BYTES {
        0
    } else {
        1 + (bytes / TIER_BASE_BYTES).ilog(FANOUT as u64)
    }
}

/// The files of one partition to merge next (ids, oldest first), if any.
pub(super) fn plan(files: &[FileMeta]) -> Option<Vec<u64>> {
    let mut tiers: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for f in files {
        tiers.entry(tier(f.bytes)).or_default().push(f.id);
    }
    if let Some(ids) = tiers.into_values().find(|ids| ids.len() >= FANOUT) {
        return Some(ids);
    }
    if files.len() > MAX_FILES {
        let mut by_size: Vec<&FileMeta> = files.iter().collect();
        by_size.sort_by_key(|f| (f.bytes, f.id));
        let mut ids: Vec<u64> = by_size[..FANOUT].iter().map(|f| f.id).collect();
        ids.sort_unstable();
        return Some(ids);
    }
    None
}

/// Merges the chunk files `inputs` of partition `partition` into a new file
/// at `out`; returns its index and size. Inputs are only read.
pub(super) fn merge_files(
    dir: &Path,
    partition: i64,
    inputs: &[u64],
    out: &Path,
) -> Result<(FileIndex, u64), StoreError> {
    let mut sources = Vec::with_capacity(inputs.len());
    for id in inputs {
        let path = chunk::chunk_path(dir, *id);
        let index = chunk::read_index(&path)?;
        if index.partition != partition {
            return Err(StoreError::Corrupt {
                path,
                detail: format!(
                    "holds partition {} but is merged into {partition}",
                    index.partition
                ),
            });
        }
        let file = chunk::open(&path)?;
        sources.push((path, file, index));
    }
    // Group by device so a device's blocks sit together in the output.
    let mut by_device: BTreeMap<(&str, &str), Vec<(usize, &BlockEntry)>> = BTreeMap::new();
    for (i, (_, _, index)) in sources.iter().enumerate() {
        for b in &index.blocks {
            by_device
                .entry((b.tenant.as_str(), b.device.as_str()))
                .or_default()
                .push((i, b));
        }
    }
    let mut w = ChunkWriter::create(out.to_path_buf(), partition)?;
    let mut pack = Pack::default();
    for ((tenant, device), mut blocks) in by_device {
        // Small blocks in time order, so a packed block covers a short range.
        blocks.sort_by_key(|(_, b)| (b.count >= COPY_MIN_RECORDS, b.min_ts));
        for (i, b) in blocks {
            let (path, file, _) = &sources[i];
            let bytes = chunk::read_block_raw(file, path, b.offset, b.len, b.crc)?;
            if b.count >= COPY_MIN_RECORDS {
                w.add_raw_block(tenant, device, &bytes, b.count, b.min_ts, b.max_ts)?;
                continue;
            }
            if pack.count + b.count > BLOCK_RECORDS as u32 {
                pack.emit(&mut w, tenant, device)?;
            }
            let (count, body) = chunk::block_body(&bytes).map_err(|d| StoreError::Corrupt {
                path: path.clone(),
                detail: format!("block at offset {}: {d}", b.offset),
            })?;
            if count != u64::from(b.count) {
                return Err(StoreError::Corrupt {
                    path: path.clone(),
                    detail: format!(
                        "block at offset {} holds {count} records, the footer says {}",
                        b.offset, b.count
                    ),
                });
            }
            pack.add(&body, b);
        }
        pack.emit(&mut w, tenant, device)?;
    }
    w.finish()
}

/// Small blocks of one device being packed into one.
#[derive(Default)]
struct Pack {
    body: Vec<u8>,
    count: u32,
    min_ts: i64,
    max_ts: i64,
}

impl Pack {
    fn add(&mut self, body: &[u8], b: &BlockEntry) {
        if self.count == 0 {
            (self.min_ts, self.max_ts) = (b.min_ts, b.max_ts);
        } else {
            self.min_ts = self.min_ts.min(b.min_ts);
            self.max_ts = self.max_ts.max(b.max_ts);
        }
        self.count += b.count;
        self.body.extend_from_slice(body);
    }

    fn emit(&mut self, w: &mut ChunkWriter, tenant: &str, device: &str) -> Result<(), StoreError> {
        if self.count > 0 {
            let block = chunk::raw_block(self.count, &self.body);
            w.add_raw_block(tenant, device, &block, self.count, self.min_ts, self.max_ts)?;
        }
        self.body.clear();
        self.count = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64, bytes: u64) -> FileMeta {
        FileMeta {
            id,
            partition: 0,
            bytes,
        }
    }

    #[test]
    fn tiers_merge_at_fanout_and_bound_rewrites_and_files() {
        assert_eq!(plan(&[meta(1, 10), meta(2, 10), meta(3, 10)]), None);
        assert_eq!(
            plan(&[
                meta(1, 10),
                meta(2, 5 << 20),
                meta(3, 10),
                meta(4, 10),
                meta(5, 1)
            ]),
            Some(vec![1, 3, 4, 5])
        );
        // Simulate 4096 equal flushes of 3 MiB: every byte is rewritten at
        // most once per tier and the partition stays small.
        let flush = 3u64 << 20;
        let (mut files, mut next, mut written, mut max_files) = (Vec::new(), 1u64, 0u64, 0);
        for _ in 0..4096 {
            files.push(meta(next, flush));
            next += 1;
            written += flush;
            while let Some(ids) = plan(&files) {
                let bytes: u64 = files
                    .iter()
                    .filter(|f| ids.contains(&f.id))
                    .map(|f| f.bytes)
                    .sum();
                files.retain(|f| !ids.contains(&f.id));
                files.push(meta(next, bytes));
                next += 1;
                written += bytes;
            }
            max_files = max_files.max(files.len());
        }
        let total = 4096 * flush;
        let levels = (4096f64).log(FANOUT as f64) as u64 + 1; // 7
        assert!(
            written <= total * levels,
            "{written} bytes written for {total}"
        );
        assert!(max_files <= 3 * levels as usize, "{max_files} files");
        // The hard cap: many files of distinct tiers still get merged.
        let many: Vec<_> = (0..=MAX_FILES as u64)
            .map(|i| meta(i, TIER_BASE_BYTES << (2 * (i % 20))))
            .collect();
        assert_eq!(plan(&many), Some(vec![0, 1, 20, 21]));
        assert_eq!(plan(&many[..MAX_FILES]), None);
    }
}
