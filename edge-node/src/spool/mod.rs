//! Durable store-and-forward spool: the edge's promise that a telemetry
//! record, once PUBACKed to its device, reaches the region hub.
//!
//! Devices' records are appended here and acknowledged only once fsynced;
//! the uplink reads them in order, sends them to the hub, and trims them
//! when the hub's Raft group has committed them. Nothing is dropped: when
//! the disk budget is used up, appends wait for trims.
//!
//! # Layout
//! - [`format`]: record framing
//!   `[u32 LE len][u32 LE crc32(seq ‖ payload)][u64 LE seq][payload]`,
//!   segment names (`00000000000000000001.seg`, named by first seq) and the
//!   `spool.meta` file (epoch + ack point, replaced atomically).
//! - [`fs`]: the [`SpoolFs`] trait everything goes through, and [`StdFs`].
//! - [`memfs`]: [`MemFs`], an in-memory [`SpoolFs`] that simulates crashes
//!   (unsynced bytes torn off, un-fsynced directory entries lost).
//! - `recover`: opening a directory, torn-tail repair.
//! - `writer`: sequence assignment, segment rolling, one group commit
//!   (pure `plan`, then `execute`).
//! - `index`: the durable view readers and trims work on.
//! - `driver`: [`Spool`], the tokio handle and its group-commit writer task.
//!
//! The core (recover, writer, index) never spawns tasks or reads the clock;
//! only `driver` does.

mod config;
mod driver;
mod error;
pub mod format;
pub mod fs;
mod index;
pub mod memfs;
mod recover;
mod writer;

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

pub use config::SpoolConfig;
pub use driver::{Spool, META_INTERVAL};
pub use error::SpoolError;
pub use fs::{SpoolFs, StdFs};
pub use index::SpoolStats;
pub use memfs::MemFs;
pub use recover::TornTail;
