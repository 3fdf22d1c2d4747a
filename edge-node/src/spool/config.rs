//! Spool configuration (the `[spool]` table of the edge config).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::SpoolError;
use super::format::HEADER_LEN;

/// Smallest accepted `segment-bytes`: below this, per-segment overhead
/// (files, fsyncs of the directory) dominates.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// Largest accepted `segment-bytes`: a record's length field is a u32.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// Largest accepted `max-batch-records`.
pub const MAX_BATCH_RECORDS: usize = 1 << 24;

/// Where and how the edge spools telemetry before the hub acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SpoolConfig {
    /// Directory holding the segments and `spool.meta`; created if missing.
    /// Default `"spool"` (relative to the working directory).
    pub dir: PathBuf,
    /// Size at which the active segment is closed and a new one started, in
    /// bytes. Also the largest record (header included) the spool accepts.
    /// Trimming frees space a whole segment at a time. Default 64 MiB;
    /// at least 4096 and at most 4 GiB - 1.
    pub segment_bytes: u64,
    /// Most bytes the segments may take on disk. When reached, appends wait
    /// (and MQTT publishers see their PUBACKs delayed) until the hub
    /// acknowledges records and whole segments can be deleted; nothing is
    /// ever dropped. Default 1 GiB; at least twice `segment-bytes`, so one
    /// segment can always be written while the previous one drains.
    pub max_bytes: u64,
    /// Most records one group commit writes before it fsyncs, in records.
    /// Default 65536.
    pub max_batch_records: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("spool"),
            segment_bytes: 64 * 1024 * 1024,
            max_bytes: 1024 * 1024 * 1024,
            max_batch_records: 65536,
        }
    }
}

impl SpoolConfig {
    /// Checks every field, reporting all problems at once.
    pub fn validate(&self) -> Result<(), SpoolError> {
        let mut problems = Vec::new();
        if self.dir.as_os_str().is_empty() {
            problems.push("dir must not be empty".to_owned());
        }
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            problems.push(format!(
                "segment-bytes is {}, must be between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if self.max_bytes < self.segment_bytes.saturating_mul(2) {
            problems.push(format!(
                "max-bytes is {}, must be at least twice segment-bytes ({})",
                self.max_bytes,
                self.segment_bytes.saturating_mul(2)
            ));
        }
        if !(1..=MAX_BATCH_RECORDS).contains(&self.max_batch_records) {
            problems.push(format!(
                "max-batch-records is {}, must be between 1 and {MAX_BATCH_RECORDS}",
                self.max_batch_records
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SpoolError::InvalidConfig { problems })
        }
    }

    /// Largest payload accepted: a whole record must fit in one segment.
    pub fn max_payload(&self) -> u64 {
        self.segment_bytes.saturating_sub(HEADER_LEN as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_parse_from_empty_toml() {
        SpoolConfig::default().validate().unwrap();
        let cfg: SpoolConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, SpoolConfig::default());
        let cfg: SpoolConfig =
            toml::from_str("dir = \"/var/spool\"\nsegment-bytes = 8192\nmax-bytes = 65536")
                .unwrap();
        assert_eq!(cfg.segment_bytes, 8192);
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(toml::from_str::<SpoolConfig>("segment_bytes = 1").is_err());
    }

    #[test]
    fn every_problem_is_reported() {
        let cfg = SpoolConfig {
            dir: PathBuf::new(),
            segment_bytes: 10,
            max_bytes: 5,
            max_batch_records: 0,
        };
        match cfg.validate() {
            Err(SpoolError::InvalidConfig { problems }) => {
                assert_eq!(problems.len(), 4, "{problems:?}")
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
}
