//! What retention dropped, per tenant: the store's ledger of readings that
//! were acknowledged upstream and then not kept.
//!
//! Two reasons, both decided by this replica (retention is per-replica
//! configuration and runs on the replica's clock):
//! - **expired on arrival**: a reading reached the store for a time
//!   partition that retention has already dropped (an edge that was offline
//!   longer than retention, a device clock far behind). It is not inserted:
//!   it would only recreate the partition until the next retention pass.
//! - **expired**: readings dropped with their partition when it expired.
//!
//! Totals are durable: they are written into the manifest with every
//! checkpoint, so they stay consistent with the files it names (a drop not
//! yet checkpointed is undone by a crash, and counted again when the replay
//! or the next retention pass repeats it), and they travel in Raft
//! snapshots. Right after a restart the store does not yet know the
//! retention bound (until its first retention pass), so a replayed reading
//! counted "expired on arrival" before the crash may be counted "expired"
//! after it; the total is the same.
//!
//! Drops are also reported for metrics and the log through
//! [`RetentionLedger::take_report`], at most once per
//! [`REPORT_INTERVAL_MS`].

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use strata_protocol::{RetentionReport, TenantRetention};

/// Shortest time between two reports of drops, ms: bounds the hub's
/// retention warnings to one line per 10 s however many readings expire.
pub const REPORT_INTERVAL_MS: i64 = 10_000;

/// Drops of one tenant. Stored in the manifest and in snapshots: never
/// change its layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Encode, Decode)]
pub(super) struct RetentionCounts {
    pub expired_on_arrival: u64,
    pub expired: u64,
}

impl RetentionCounts {
    fn add(&mut self, other: RetentionCounts) {
        self.expired_on_arrival += other.expired_on_arrival;
        self.expired += other.expired;
    }
}

/// Durable form: (tenant, counts), sorted by tenant.
pub(super) type DurableCounts = Vec<(String, RetentionCounts)>;

/// The ledger; one per store.
#[derive(Debug, Default)]
pub(super) struct RetentionLedger {
    /// Since the store was created (durable through checkpoints).
    totals: BTreeMap<String, RetentionCounts>,
    /// Not yet returned by `take_report`.
    pending: BTreeMap<String, RetentionCounts>,
    last_report_ms: Option<i64>,
    /// Readings before this are expired on arrival (set by retention passes).
    retained_from: Option<i64>,
}

impl RetentionLedger {
    /// A ledger continuing the durable `totals`.
    pub fn from_durable(totals: DurableCounts) -> Self {
        RetentionLedger {
            totals: totals.into_iter().collect(),
            ..RetentionLedger::default()
        }
    }

    /// The totals as written into the manifest.
    pub fn durable(&self) -> DurableCounts {
        self.totals.iter().map(|(t, c)| (t.clone(), *c)).collect()
    }

    /// Replaces the totals (a restored snapshot's).
    pub fn set_totals(&mut self, totals: DurableCounts) {
        self.totals = totals.into_iter().collect();
    }

    /// Whether a reading at `ts_ms` is for a partition retention dropped.
    /// One comparison: on the insert path.
    pub fn expired_on_arrival(&self, ts_ms: i64) -> bool {
        self.retained_from.is_some_and(|from| ts_ms < from)
    }

    /// Retention now keeps only partitions starting at or after `from`.
    pub fn retain_from(&mut self, from: i64) {
        // Never backwards: a clock step back must not let dropped
        // partitions be recreated.
        self.retained_from = Some(self.retained_from.map_or(from, |f| f.max(from)));
    }

    /// Counts `n` readings of `tenant`.
    pub fn count(&mut self, tenant: &str, n: RetentionCounts) {
        for map in [&mut self.totals, &mut self.pending] {
            match map.get_mut(tenant) {
                Some(c) => c.add(n),
                None => {
                    map.insert(tenant.to_owned(), n);
                }
            }
        }
    }

    /// Drops since the last report, per tenant, if there are any and the
    /// last report is at least [`REPORT_INTERVAL_MS`] before `now_ms`.
    pub fn take_report(&mut self, now_ms: i64) -> Vec<TenantRetention> {
        let due = self
            .last_report_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= REPORT_INTERVAL_MS);
        if self.pending.is_empty() || !due {
            return Vec::new();
        }
        self.last_report_ms = Some(now_ms);
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(tenant, c)| tenant_retention(tenant, c))
            .collect()
    }

    /// The totals, optionally of one tenant, for the API.
    pub fn report(&self, tenant: Option<&str>, retention_ms: u64) -> RetentionReport {
        RetentionReport {
            retention_ms,
            retained_from_ms: self.retained_from,
            tenants: self
                .totals
                .iter()
                .filter(|(t, _)| tenant.is_none_or(|want| want == t.as_str()))
                .map(|(t, c)| tenant_retention(t.clone(), *c))
                .collect(),
        }
    }
}

fn tenant_retention(tenant: String, c: RetentionCounts) -> TenantRetention {
    TenantRetention {
        tenant,
        expired_on_arrival: c.expired_on_arrival,
        expired: c.expired,
    }
}
