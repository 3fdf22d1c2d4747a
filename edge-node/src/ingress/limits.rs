//! Per-source connection accounting for `ingress.max-connections-per-ip`.
//!
//! [`SourceLimits`] is a plain table owned by the accept loop. A connection
//! task holds a [`SourceSlot`]; dropping it (however the task ends) sends
//! the source back to the accept loop, which releases it. One owner, messages
//! in: no lock is shared between the accept loop and 10,000 connections.
//!
//! A *source* is an IPv4 address, or an IPv6 /64: a single host is normally
//! handed a whole /64, so counting /128s would let one host open a slot per
//! address. IPv4-mapped IPv6 addresses (a dual-stack listener) count as the
//! IPv4 address they carry.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tokio::sync::mpsc;

/// Where connections are counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl SourceKey {
    /// The source a peer address counts against.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(v4),
                None => SourceKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceKey::V4(a) => write!(f, "{a}"),
            SourceKey::V6Prefix(p) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*p) << 64)),
        }
    }
}

/// Open connections per source, capped.
#[derive(Debug)]
pub struct SourceLimits {
    max_per_source: usize,
    open: HashMap<SourceKey, usize>,
}

impl SourceLimits {
    /// A table allowing `max_per_source` connections per source.
    pub fn new(max_per_source: usize) -> Self {
        SourceLimits {
            max_per_source,
            open: HashMap::new(),
        }
    }

    /// Takes a slot for `key`; false (nothing taken) at the cap.
    pub fn try_admit(&mut self, key: SourceKey) -> bool {
        let n = self.open.entry(key).or_insert(0);
        if *n >= self.max_per_source {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back a slot of `key`; an idle source leaves the table, so the
    /// table is as large as the set of sources connected now.
    pub fn release(&mut self, key: SourceKey) {
        if let Some(n) = self.open.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&key);
            }
        }
    }

    /// Connections open from `key`.
    pub fn open_from(&self, key: SourceKey) -> usize {
        self.open.get(&key).copied().unwrap_or(0)
    }

    /// Sources with at least one connection.
    pub fn sources(&self) -> usize {
        self.open.len()
    }
}

/// A taken slot; dropping it tells the accept loop to release it.
#[derive(Debug)]
pub struct SourceSlot {
    key: SourceKey,
    released: mpsc::UnboundedSender<SourceKey>,
}

impl SourceSlot {
    /// A slot of `key` that reports to `released` when dropped.
    pub fn new(key: SourceKey, released: mpsc::UnboundedSender<SourceKey>) -> Self {
        SourceSlot { key, released }
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        // Fails only when the accept loop is gone, and its table with it.
        let _ = self.released.send(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_per_source_and_release() {
        let mut t = SourceLimits::new(2);
        let a = SourceKey::of("10.0.0.1".parse().unwrap());
        let b = SourceKey::of("10.0.0.2".parse().unwrap());
        assert!(t.try_admit(a));
        assert!(t.try_admit(a));
        assert!(!t.try_admit(a), "third from one source");
        assert_eq!(t.open_from(a), 2, "a refusal takes nothing");
        assert!(t.try_admit(b), "other sources are unaffected");
        t.release(a);
        assert!(t.try_admit(a));
        t.release(a);
        t.release(a);
        t.release(b);
        assert_eq!(t.sources(), 0, "idle sources leave the table");
        t.release(b);
        assert_eq!(t.open_from(b), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let k = |s: &str| SourceKey::of(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_eq!(k("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(k("::ffff:192.0.2.7").to_string(), "192.0.2.7");
    }

    #[tokio::test]
    async fn dropping_a_slot_reports_its_source() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let key = SourceKey::of("127.0.0.1".parse().unwrap());
        drop(SourceSlot::new(key, tx));
        assert_eq!(rx.recv().await, Some(key));
    }
}
