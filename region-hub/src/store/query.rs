//! Reads: raw records in time order, or per-metric buckets aligned to the
//! Unix epoch.
//!
//! Records are gathered from the memtable, the frozen memtable (during a
//! background checkpoint) and the blocks whose time range overlaps the query, then sorted with the deterministic
//! [`chunk::record_order`] before they are cut or aggregated, so every
//! replica (whatever its chunk layout) returns identical answers — down to
//! the floating-point sums behind `avg`.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::PathBuf;

use strata_protocol::{Bucket, QueryResult, TelemetryQuery, TelemetryRecord};

use super::chunk;
use super::{align, StoreError, TelemetryStore};

/// Largest `limit` a query may ask for.
pub const MAX_QUERY_LIMIT: u32 = 100_000;

fn bad(detail: String) -> StoreError {
    StoreError::BadQuery { detail }
}

/// Checks a query; returns the bucket width when downsampling.
fn validate(q: &TelemetryQuery) -> Result<Option<i64>, StoreError> {
    if q.from_ms >= q.to_ms {
        return Err(bad(format!(
            "from ({}) must be before to ({}): the range is [from, to) in ms since the Unix epoch",
            q.from_ms, q.to_ms
        )));
    }
    if q.limit == 0 || q.limit > MAX_QUERY_LIMIT {
        return Err(bad(format!(
            "limit must be between 1 and {MAX_QUERY_LIMIT}, got {}",
            q.limit
        )));
    }
    match q.step_ms {
        None => Ok(None),
        Some(0) => Err(bad("step must be greater than 0 ms".into())),
        Some(s) => i64::try_from(s)
            .map(Some)
            .map_err(|_| bad(format!("step of {s} ms is too large (max {})", i64::MAX))),
    }
}

#[derive(Clone, Copy)]
struct Agg {
    min: f64,
    max: f64,
    sum: f64,
    count: u64,
}

impl TelemetryStore {
    /// Answers `q`: raw records of one device in `[from, to)` in time order
    /// (at most `limit`), or, with `step_ms`, min/max/avg/count per metric per
    /// bucket `[k*step, (k+1)*step)`, ordered by metric then bucket start (at
    /// most `limit` buckets).
    pub fn query(&self, q: &TelemetryQuery) -> Result<QueryResult, StoreError> {
        let step = validate(q)?;
        let mut records = self.collect(q, step.is_none())?;
        records.sort_by(chunk::record_order);
        let limit = q.limit as usize;
        let Some(step) = step else {
            records.truncate(limit);
            return Ok(QueryResult::Raw(records));
        };
        // metric → bucket start → aggregate; keyed by &str so no per-value allocation.
        let mut aggs: HashMap<&str, BTreeMap<i64, Agg>> = HashMap::new();
        for r in &records {
            let start = align(r.ts_ms, step);
            for m in &r.metrics {
                let per = match aggs.get_mut(m.name.as_str()) {
                    Some(p) => p,
                    None => aggs.entry(m.name.as_str()).or_default(),
                };
                per.entry(start)
                    .and_modify(|a| {
                        a.min = a.min.min(m.value);
                        a.max = a.max.max(m.value);
                        a.sum += m.value;
                        a.count += 1;
                    })
                    .or_insert(Agg {
                        min: m.value,
                        max: m.value,
                        sum: m.value,
                        count: 1,
                    });
            }
        }
        let mut metrics: Vec<(&str, BTreeMap<i64, Agg>)> = aggs.into_iter().collect();
        metrics.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let buckets = metrics
            .into_iter()
            .flat_map(|(name, per)| {
                per.into_iter().map(move |(start_ms, a)| Bucket {
                    metric: name.to_owned(),
                    start_ms,
                    min: a.min,
                    max: a.max,
                    avg: a.sum / a.count as f64,
                    count: a.count,
                })
            })
            .take(limit)
            .collect();
        Ok(QueryResult::Downsampled(buckets))
    }

    /// The device's records in `[from, to)`, unordered. For a raw query,
    /// stops after the first partition that brings the total to `limit`:
    /// partitions are disjoint in time, so later ones cannot sort earlier.
    fn collect(&self, q: &TelemetryQuery, raw: bool) -> Result<Vec<TelemetryRecord>, StoreError> {
        let width = self.cfg.partition_ms as i64;
        let in_range = |ts: i64| ts >= q.from_ms && ts < q.to_ms;
        let mut out = Vec::new();
        let mut files: HashMap<u64, (PathBuf, File)> = HashMap::new();
        for (_, part) in self.partitions.range(align(q.from_ms, width)..q.to_ms) {
            let Some(data) = part
                .devices
                .get(q.tenant.as_str())
                .and_then(|d| d.get(q.device.as_str()))
            else {
                continue;
            };
            for r in &data.blocks {
                if r.max_ts < q.from_ms || r.min_ts >= q.to_ms {
                    continue;
                }
                let (path, f) = match files.entry(r.file) {
                    Entry::Occupied(o) => o.into_mut(),
                    Entry::Vacant(v) => {
                        let path = chunk::chunk_path(&self.cfg.dir, r.file);
                        let f = chunk::open(&path)?;
                        v.insert((path, f))
                    }
                };
                let recs = chunk::read_block(f, path, r.offset, r.len, r.crc)?;
                out.extend(recs.into_iter().filter(|r| in_range(r.ts_ms)));
            }
            // The memtable, and the frozen one a background checkpoint is writing.
            for mem in data.frozen.as_deref().into_iter().chain([&data.mem]) {
                mem.decode_into(&mut out, q.from_ms..q.to_ms)
                    .map_err(|detail| StoreError::Corrupt {
                        path: self.cfg.dir.clone(),
                        detail,
                    })?;
            }
            if raw && out.len() >= q.limit as usize {
                break;
            }
        }
        Ok(out)
    }
}
