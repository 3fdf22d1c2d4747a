//! [`AlertIndex`]: the region's replicated alerts, queryable by tenant,
//! device, monitor, minimum severity and time, newest first.
//!
//! Alerts arrive through the same exactly-once batch path as telemetry, so
//! the index never sees a resent alert twice. It is bounded by count
//! ([`MAX_ALERTS`]) and by approximate bytes ([`MAX_ALERT_BYTES`]): the
//! oldest alerts (by timestamp, then arrival) are evicted first and counted
//! in [`AlertIndex::evicted`]. Text fields are cut at the host ABI's limits
//! on apply, so one misbehaving edge cannot bloat every replica's state.
//!
//! Per tenant, alerts are keyed by `(ts_ms, arrival id)`: a tenant query is
//! a reverse range scan; a query across tenants merges the per-tenant scans.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use strata_protocol::monitoring::AlertQuery;
use strata_protocol::AlertRecord;

/// Most alerts kept per region.
pub const MAX_ALERTS: usize = 100_000;
/// Most alert bytes (approximate: text lengths plus a fixed overhead) kept
/// per region, 64 MiB.
pub const MAX_ALERT_BYTES: u64 = 64 << 20;
/// Most alerts one query returns (keeps an answer well inside one frame).
pub const MAX_ALERT_QUERY_LIMIT: usize = 1_000;
/// Longest alert device, code, monitor or edge kept, bytes (the ABI's limit).
pub const MAX_ALERT_FIELD_BYTES: usize = 256;
/// Longest alert message kept, bytes (the ABI's limit).
pub const MAX_ALERT_MESSAGE_BYTES: usize = 4096;

/// Fixed per-alert overhead counted against [`MAX_ALERT_BYTES`].
const ALERT_OVERHEAD_BYTES: u64 = 64;

/// `(ts_ms, arrival id)`: unique, ordered by time.
type AlertKey = (i64, u64);

/// The bounded alert index. See the module docs.
#[derive(Debug, Default, Clone, PartialEq, Encode, Decode)]
pub struct AlertIndex {
    /// tenant → key → alert.
    by_tenant: BTreeMap<String, BTreeMap<AlertKey, AlertRecord>>,
    len: u64,
    bytes: u64,
    next_id: u64,
    evicted: u64,
}

fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn cost(a: &AlertRecord) -> u64 {
    (a.tenant.len() + a.device.len() + a.monitor.len() + a.edge.len() + a.code.len()) as u64
        + a.message.len() as u64
        + ALERT_OVERHEAD_BYTES
}

impl AlertIndex {
    /// Alerts held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when no alert is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Alerts evicted to respect the bounds since the region began.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Adds a new (already deduplicated) alert, evicting the oldest when full.
    pub(super) fn insert(&mut self, mut a: AlertRecord) {
        cut(&mut a.device, MAX_ALERT_FIELD_BYTES);
        cut(&mut a.code, MAX_ALERT_FIELD_BYTES);
        cut(&mut a.monitor, MAX_ALERT_FIELD_BYTES);
        cut(&mut a.edge, MAX_ALERT_FIELD_BYTES);
        cut(&mut a.message, MAX_ALERT_MESSAGE_BYTES);
        let key = (a.ts_ms, self.next_id);
        self.next_id += 1;
        self.len += 1;
        self.bytes += cost(&a);
        match self.by_tenant.get_mut(a.tenant.as_str()) {
            Some(m) => {
                m.insert(key, a);
            }
            None => {
                self.by_tenant
                    .entry(a.tenant.clone())
                    .or_default()
                    .insert(key, a);
            }
        }
        while self.len > MAX_ALERTS as u64 || self.bytes > MAX_ALERT_BYTES {
            if !self.evict_oldest() {
                break;
            }
        }
    }

    /// Drops the globally oldest alert. O(tenants): tenants are few.
    fn evict_oldest(&mut self) -> bool {
        let Some(tenant) = self
            .by_tenant
            .iter()
            .filter_map(|(t, m)| m.keys().next().map(|k| (*k, t)))
            .min()
            .map(|(_, t)| t.clone())
        else {
            return false;
        };
        let Some(m) = self.by_tenant.get_mut(&tenant) else {
            return false;
        };
        if let Some((_, a)) = m.pop_first() {
            self.len -= 1;
            self.bytes = self.bytes.saturating_sub(cost(&a));
            self.evicted += 1;
        }
        if m.is_empty() {
            self.by_tenant.remove(&tenant);
        }
        true
    }

    /// Alerts matching `q`, newest first, at most `min(q.limit,`
    /// [`MAX_ALERT_QUERY_LIMIT`]`)`.
    pub fn query(&self, q: &AlertQuery) -> Vec<AlertRecord> {
        let limit = (q.limit as usize).min(MAX_ALERT_QUERY_LIMIT);
        if limit == 0 || q.from_ms >= q.to_ms {
            return Vec::new();
        }
        let matches = |a: &AlertRecord| {
            q.device.as_ref().is_none_or(|d| *d == a.device)
                && q.monitor.as_ref().is_none_or(|m| *m == a.monitor)
                && q.min_severity.is_none_or(|s| a.severity >= s)
        };
        // Keys (ts, id) with from_ms <= ts < to_ms.
        let range = (q.from_ms, 0)..(q.to_ms, 0);
        let mut found: Vec<(AlertKey, &AlertRecord)> = Vec::new();
        for (tenant, m) in &self.by_tenant {
            if q.tenant.as_ref().is_some_and(|t| t != tenant) {
                continue;
            }
            found.extend(
                m.range(range.clone())
                    .rev()
                    .filter(|(_, a)| matches(a))
                    .take(limit)
                    .map(|(k, a)| (*k, a)),
            );
        }
        found.sort_unstable_by_key(|(k, _)| std::cmp::Reverse(*k));
        found.truncate(limit);
        found.into_iter().map(|(_, a)| a.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_protocol::Severity;

    fn alert(tenant: &str, device: &str, sev: Severity, ts_ms: i64) -> AlertRecord {
        AlertRecord {
            tenant: tenant.into(),
            device: device.into(),
            monitor: "z".into(),
            edge: "e1".into(),
            severity: sev,
            code: "anomaly".into(),
            message: format!("at {ts_ms}"),
            ts_ms,
        }
    }

    fn q() -> AlertQuery {
        AlertQuery {
            tenant: None,
            device: None,
            monitor: None,
            min_severity: None,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            limit: 100,
        }
    }

    #[test]
    fn filters_and_orders_newest_first() {
        let mut ix = AlertIndex::default();
        ix.insert(alert("acme", "d1", Severity::Info, 10));
        ix.insert(alert("acme", "d2", Severity::Critical, 30));
        ix.insert(alert("globex", "d1", Severity::Warning, 20));
        ix.insert(alert("acme", "d1", Severity::Warning, 30));
        let ts = |v: Vec<AlertRecord>| {
            v.iter()
                .map(|a| (a.ts_ms, a.device.clone()))
                .collect::<Vec<_>>()
        };
        // Same ts: later arrival first.
        assert_eq!(
            ts(ix.query(&q())),
            vec![
                (30, "d1".into()),
                (30, "d2".into()),
                (20, "d1".into()),
                (10, "d1".into())
            ]
        );
        let acme = AlertQuery {
            tenant: Some("acme".into()),
            ..q()
        };
        assert_eq!(ix.query(&acme).len(), 3);
        let sev = AlertQuery {
            min_severity: Some(Severity::Warning),
            ..q()
        };
        assert_eq!(ix.query(&sev).len(), 3);
        let dev = AlertQuery {
            device: Some("d2".into()),
            ..q()
        };
        assert_eq!(ts(ix.query(&dev)), vec![(30, "d2".into())]);
        let window = AlertQuery {
            from_ms: 20,
            to_ms: 30,
            ..q()
        };
        assert_eq!(ts(ix.query(&window)), vec![(20, "d1".into())]);
        let lim = AlertQuery { limit: 2, ..q() };
        assert_eq!(ix.query(&lim).len(), 2);
        let mon = AlertQuery {
            monitor: Some("other".into()),
            ..q()
        };
        assert!(ix.query(&mon).is_empty());
        assert!(ix.query(&AlertQuery { limit: 0, ..q() }).is_empty());
    }

    #[test]
    fn bounded_by_count_evicting_oldest() {
        let mut ix = AlertIndex::default();
        for i in 0..(MAX_ALERTS as i64 + 5) {
            let t = if i % 2 == 0 { "a" } else { "b" };
            ix.insert(alert(t, "d", Severity::Info, i));
        }
        assert_eq!(ix.len(), MAX_ALERTS as u64);
        assert_eq!(ix.evicted(), 5);
        let oldest = ix.query(&AlertQuery { to_ms: 6, ..q() });
        assert_eq!(oldest.iter().map(|a| a.ts_ms).collect::<Vec<_>>(), vec![5]);
    }

    proptest::proptest! {
        /// The index answers like a naive filter-sort-truncate over a list.
        #[test]
        fn query_matches_a_naive_model(
            alerts in proptest::collection::vec((0u8..3, 0u8..3, 0u8..3, 0i64..50), 0..60),
            tenant in proptest::option::of(0u8..3),
            device in proptest::option::of(0u8..3),
            sev in proptest::option::of(0u8..3),
            from_ms in 0i64..50,
            len in 0i64..50,
            limit in 0u32..20,
        ) {
            let sevs = [Severity::Info, Severity::Warning, Severity::Critical];
            let mut ix = AlertIndex::default();
            let mut model = Vec::new();
            for (i, (t, d, s, ts)) in alerts.into_iter().enumerate() {
                let a = alert(&format!("t{t}"), &format!("d{d}"), sevs[s as usize], ts);
                ix.insert(a.clone());
                model.push((ts, i, a));
            }
            let query = AlertQuery {
                tenant: tenant.map(|t| format!("t{t}")),
                device: device.map(|d| format!("d{d}")),
                min_severity: sev.map(|s| sevs[s as usize]),
                from_ms,
                to_ms: from_ms + len,
                limit,
                ..q()
            };
            model.retain(|(_, _, a)| {
                query.tenant.as_ref().is_none_or(|t| *t == a.tenant)
                    && query.device.as_ref().is_none_or(|d| *d == a.device)
                    && query.min_severity.is_none_or(|s| a.severity >= s)
                    && a.ts_ms >= query.from_ms
                    && a.ts_ms < query.to_ms
            });
            model.sort_by_key(|m| std::cmp::Reverse((m.0, m.1)));
            model.truncate(limit as usize);
            let want: Vec<AlertRecord> = model.into_iter().map(|(_, _, a)| a).collect();
            proptest::prop_assert_eq!(ix.query(&query), want);
        }
    }

    #[test]
    fn long_text_is_cut_at_char_boundaries() {
        let mut ix = AlertIndex::default();
        let mut a = alert("acme", "d", Severity::Info, 1);
        a.message = "é".repeat(MAX_ALERT_MESSAGE_BYTES);
        a.code = "x".repeat(1000);
        ix.insert(a);
        let got = &ix.query(&q())[0];
        assert!(got.message.len() <= MAX_ALERT_MESSAGE_BYTES);
        assert_eq!(got.code.len(), MAX_ALERT_FIELD_BYTES);
    }
}
