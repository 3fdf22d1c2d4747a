//! The spool's error type. Every variant names the file, directory or
//! sequence number it is about, so an operator can act on the message alone.

use std::path::PathBuf;

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The configuration is invalid; every problem is listed.
    #[error("invalid spool config: {}", problems.join("; "))]
    InvalidConfig {
        /// One message per problem.
        problems: Vec<String>,
    },
    /// A filesystem call failed.
    #[error("spool I/O error: {op} {path}: {source}")]
    Io {
        /// What was being done (`append`, `fsync`, `read`, …).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A segment holds damaged data somewhere that is not a torn tail: the
    /// spool refuses to skip it silently.
    #[error("corrupt spool segment {path} at byte offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Segments do not follow each other without a gap: records are missing.
    #[error(
        "spool segment {path} starts at seq {found}, expected seq {expected}: records are missing"
    )]
    Gap {
        /// The segment that does not continue its predecessor.
        path: PathBuf,
        /// The sequence number it should start at.
        expected: u64,
        /// The sequence number its name says it starts at.
        found: u64,
    },
    /// The meta file cannot be decoded.
    #[error("bad spool meta file {path}: {reason}")]
    BadMeta {
        /// The meta file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Segments exist but the meta file (which holds the epoch) does not;
    /// inventing a new epoch would make the hub treat resent records as new.
    #[error("spool directory {dir} holds {segments} segments but no meta file; restore spool.meta or move the directory away")]
    MissingMeta {
        /// The spool directory.
        dir: PathBuf,
        /// How many segment files it holds.
        segments: usize,
    },
    /// One payload is larger than a segment can hold.
    #[error("record {index} of the append is {len} bytes; the most a {segment_bytes}-byte segment holds is {max}")]
    RecordTooLarge {
        /// Index of the payload in the append call.
        index: usize,
        /// Its length.
        len: usize,
        /// The largest payload accepted.
        max: u64,
        /// The configured segment size.
        segment_bytes: u64,
    },
    /// `trim` was asked to acknowledge records that were never written.
    #[error("cannot trim spool {dir} up to seq {upto}: the next sequence number is {next_seq}")]
    TrimBeyondEnd {
        /// The spool directory.
        dir: PathBuf,
        /// The requested exclusive upper bound.
        upto: u64,
        /// One past the last durable record.
        next_seq: u64,
    },
    /// The spool was closed; nothing more is accepted.
    #[error("spool {dir} is closed")]
    Closed {
        /// The spool directory.
        dir: PathBuf,
    },
    /// The writer hit an I/O error earlier. After a failed fsync the page
    /// cache can no longer be trusted, so the spool stops accepting writes;
    /// restarting the process recovers from what is really on disk.
    #[error("spool {dir} writer failed: {reason}")]
    Failed {
        /// The spool directory.
        dir: PathBuf,
        /// The original error.
        reason: String,
    },
}

impl SpoolError {
    /// Wraps an I/O error with the operation and path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
