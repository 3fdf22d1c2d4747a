//! Identifiers and time: the small value types every other module uses.

use std::fmt;
use std::time::Duration;

use bincode::{Decode, Encode};
use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A node's name: an edge in a region, a region one level up.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(s.to_owned())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A workload: `(tenant, name)`, unique in the region.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
pub struct WorkloadId {
    /// Owning tenant.
    pub tenant: String,
    /// Name within the tenant.
    pub name: String,
}

impl WorkloadId {
    /// `(tenant, name)`.
    pub fn new(tenant: &str, name: &str) -> Self {
        WorkloadId {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

/// An allocation id: 128 random bits drawn from the scheduler's seeded rng,
/// written as 32 lowercase hex digits in JSON (a JSON number would lose bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct AllocId(pub u128);

impl AllocId {
    /// A fresh id from `rng`.
    pub fn random(rng: &mut impl Rng) -> Self {
        AllocId(rng.gen())
    }

    /// Parses 32 hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(AllocId)
    }
}

impl fmt::Display for AllocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl Serialize for AllocId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AllocId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AllocId::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("allocation id must be 32 hex digits"))
    }
}

/// An evaluation id, assigned by whoever queues evaluations (the hub leader).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(transparent)]
pub struct EvalId(pub u64);

impl fmt::Display for EvalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "eval-{}", self.0)
    }
}

/// A point in time, milliseconds since the Unix epoch, as the hub's clock
/// gave it to a pure function (nothing here reads a clock).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    Encode,
    Decode,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// `ms` milliseconds since the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// `self - earlier`, zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_id_round_trips_as_hex_text() {
        let id = AllocId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"0123456789abcdef0011223344556677\"");
        assert_eq!(serde_json::from_str::<AllocId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<AllocId>("\"xyz\"").is_err());
    }

    #[test]
    fn timestamps_saturate() {
        let t = Timestamp(i64::MAX - 1);
        assert_eq!(t.plus(Duration::from_secs(5)), Timestamp(i64::MAX));
        assert_eq!(Timestamp(5).since(Timestamp(10)), Duration::ZERO);
        assert_eq!(Timestamp(10).since(Timestamp(5)), Duration::from_millis(5));
    }
}
