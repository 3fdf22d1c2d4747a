//! [`Snapshot`]: a value one writer replaces as a whole and many readers
//! load without waiting for the writer's work, an `ArcSwap` in spirit. The
//! lock is held only to swap or clone an `Arc`, never while a value is
//! built or read.
//!
//! Used where a reader must not wait for the workload driver: ingest reads
//! the routing table, heartbeats and the uplink read the published status.
//! The driver is the only writer of each.

use std::sync::{Arc, RwLock};

/// A single-writer published value.
#[derive(Debug, Default)]
pub(crate) struct Snapshot<T> {
    cell: RwLock<Arc<T>>,
}

impl<T> Snapshot<T> {
    /// A cell holding `value`.
    pub fn new(value: T) -> Self {
        Snapshot {
            cell: RwLock::new(Arc::new(value)),
        }
    }

    /// Replaces the value (the writer only).
    pub fn publish(&self, value: T) {
        let v = Arc::new(value);
        *self.cell.write().unwrap_or_else(|p| p.into_inner()) = v;
    }

    /// Replaces the value and returns the one it replaced (the writer
    /// only).
    pub fn replace(&self, value: T) -> Arc<T> {
        let v = Arc::new(value);
        std::mem::replace(
            &mut *self.cell.write().unwrap_or_else(|p| p.into_inner()),
            v,
        )
    }

    /// The latest value.
    pub fn load(&self) -> Arc<T> {
        self.cell.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_what_they_loaded() {
        let s = Snapshot::new(1);
        let old = s.load();
        s.publish(2);
        assert_eq!((*old, *s.load()), (1, 2));
    }
}
