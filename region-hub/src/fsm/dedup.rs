//! Layer 2 of exactly-once: recognising a reading the region already stored,
//! whichever edge and spool record it arrives in.
//!
//! # The key
//! A reading is *the same reading* as a stored one when all of these are
//! equal: tenant, device (the map it is looked up in), `seq` (both absent, or
//! both present and equal), `ts_ms`, and the [`fingerprint`] of its content.
//! Only then is it dropped, as a device retransmission. Anything else is a
//! distinct reading and is stored, whatever its seq or timestamp: a device
//! that restarts its counter, a clock that jumps by years either way, or a
//! spoofer publishing the device's upcoming seqs with a far-future timestamp
//! can add readings, never make the region drop one. A reading without a
//! `seq` takes part too, keyed by its timestamp and content: two such
//! readings with the same millisecond and the same values are one reading.
//!
//! # The window
//! Each device keeps the keys of its last [`DEVICE_DEDUP_WINDOW`] stored
//! readings, in apply order ([`RecentReadings`]). It is replicated state, so
//! its size is a constant every replica shares. Why 32:
//! - A device re-publishes only readings it has no PUBACK for, so what it
//!   can retransmit is bounded by its MQTT in-flight window. Common client
//!   libraries default to 10–20 in flight (libmosquitto and paho-python 20,
//!   paho C and Java 10); a device with a single message in flight (many
//!   small clients) needs one key. Through the same edge the original is at
//!   most the device's in-flight count behind the retransmission (it was
//!   spooled before the resend, in order), so 32 covers those defaults with
//!   room to spare.
//! - An edge resending the *same spool record* (a lost `Committed`, a
//!   restart, a leader change) is caught by layer 1, `(edge, epoch, edge
//!   seq)`, however old the record: the window is only for a device's own
//!   retransmissions, which arrive as new spool records.
//! - Beyond the window nothing is dropped wrongly: a retransmission whose
//!   original has left the window (say, the original sat in the spool of an
//!   edge that was down while the device re-published through another edge
//!   and kept sending) is stored a second time. The region prefers a rare
//!   duplicate to a lost reading.
//! - Cost: 24 bytes per key in memory (one allocation per device) and
//!   about 12 encoded (below): a device's entry in the encoded state grows
//!   from ~54 to ~445 bytes, so 100 000 devices add ~40 MB to every
//!   checkpoint (`fsm::bench` measures it). Halving the window halves that.
//!
//! The window size is part of the replicated state machine: replicas with
//! different sizes would drop different readings. Changing it needs a new
//! state format and all replicas upgraded together.
//!
//! The fast path is one comparison: a reading whose seq is above every seq
//! in the window (a device counting up, the usual case), or, without a seq,
//! whose timestamp is above that of every seq-less key, cannot match and
//! skips the scan. Otherwise the window is scanned (32 keys).
//!
//! A stored reading whose seq is in the window with another timestamp or
//! content is a *seq reuse*: counted per device, so counter restarts, clock
//! trouble and spoofing are visible to an operator, and stored.
//!
//! # Fingerprint
//! [`fingerprint`] is xxh3-64 (XXH3_64bits, seed 0, as specified by xxHash
//! 0.8) of this byte string, all integers little-endian:
//!
//! ```text
//! u64 number of metrics
//!   per metric:  u64 name length in bytes, name (UTF-8), u64 f64::to_bits(value)
//! u64 number of tags
//!   per tag:     u64 key length, key, u64 value length, value
//! ```
//!
//! Order matters (it is the reading's order). It is stored in replicated
//! state and so must never change: golden values in the tests pin it.
//!
//! # Encoding
//! [`RecentReadings`] encodes oldest key first: a count (`u8`), a mask of the
//! keys without seq (varint, usually 0), then per key the seq minus the
//! previous key's seq (zigzag varint, only for keys with a seq), the
//! timestamp minus the previous key's (zigzag varint), and the fingerprint
//! as 8 raw bytes. A device counting up once a second costs 1 + 3 + 8 bytes
//! per key.

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use strata_protocol::TelemetryRecord;
use twox_hash::XxHash3_64;

/// Keys of stored readings kept per device (see the module doc for why 32).
pub const DEVICE_DEDUP_WINDOW: usize = 32;

// The no-seq mask is a u64 and the count a u8.
const _: () = assert!(DEVICE_DEDUP_WINDOW > 0 && DEVICE_DEDUP_WINDOW <= 64);

/// The 64-bit fingerprint of a reading's content (metric names and value
/// bits, tag keys and values, in order); see the module doc for the exact
/// algorithm. `scratch` is a reusable buffer (its contents are replaced).
pub fn fingerprint(rec: &TelemetryRecord, scratch: &mut Vec<u8>) -> u64 {
    scratch.clear();
    put_len(scratch, rec.metrics.len());
    for m in &rec.metrics {
        put_str(scratch, &m.name);
        scratch.extend_from_slice(&m.value.to_bits().to_le_bytes());
    }
    put_len(scratch, rec.tags.len());
    for t in &rec.tags {
        put_str(scratch, &t.key);
        put_str(scratch, &t.value);
    }
    XxHash3_64::oneshot(scratch)
}

fn put_len(buf: &mut Vec<u8>, len: usize) {
    buf.extend_from_slice(&(len as u64).to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_len(buf, s.len());
    buf.extend_from_slice(s.as_bytes());
}

/// What identifies a reading within its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadingKey {
    /// Device sequence number, if the device sends one.
    pub seq: Option<u64>,
    /// Reading time, ms since the Unix epoch.
    pub ts_ms: i64,
    /// [`fingerprint`] of the content.
    pub fp: u64,
}

impl ReadingKey {
    /// The key of `rec` (`scratch` as for [`fingerprint`]).
    pub fn of(rec: &TelemetryRecord, scratch: &mut Vec<u8>) -> ReadingKey {
        ReadingKey {
            seq: rec.seq,
            ts_ms: rec.ts_ms,
            fp: fingerprint(rec, scratch),
        }
    }
}

/// What [`RecentReadings::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not in the window: store it.
    New,
    /// Its seq is in the window, with another timestamp or content: a
    /// distinct reading; store it (and count the reuse).
    SeqReuse,
    /// The same reading is in the window: drop it.
    Retransmission,
}

/// One key in the ring; `seq` is meaningful only if its `has_seq` bit is set.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    ts_ms: i64,
    fp: u64,
}

/// The keys of a device's last [`DEVICE_DEDUP_WINDOW`] stored readings.
#[derive(Debug, Clone, Default)]
pub struct RecentReadings {
    /// A ring: appended to until full, then `next` is the oldest slot and
    /// the next one overwritten.
    slots: Vec<Slot>,
    /// Bit `i` set: `slots[i]` has a seq.
    has_seq: u64,
    next: u8,
    /// Highest seq in the window (derived, not encoded): the fast path.
    max_seq: Option<u64>,
    /// Highest timestamp of the keys without seq (derived): the fast path
    /// of readings without seq.
    max_unseq_ts: Option<i64>,
}

impl RecentReadings {
    /// Decides whether `key` was stored already and, unless it was,
    /// remembers it (evicting the oldest key when full).
    pub fn admit(&mut self, key: ReadingKey) -> Admission {
        let verdict = match key.seq {
            // Above every seq (or seq-less timestamp) in the window: nothing
            // can match.
            Some(s) if self.max_seq.is_none_or(|m| s > m) => Admission::New,
            None if self.max_unseq_ts.is_none_or(|m| key.ts_ms > m) => Admission::New,
            _ => self.classify(&key),
        };
        if verdict != Admission::Retransmission {
            self.push(key);
        }
        verdict
    }

    fn classify(&self, key: &ReadingKey) -> Admission {
        let mut reused = false;
        for (i, slot) in self.slots.iter().enumerate() {
            let slot_has_seq = self.has_seq & (1 << i) != 0;
            let same_seq = match key.seq {
                Some(s) => slot_has_seq && slot.seq == s,
                None => !slot_has_seq,
            };
            if !same_seq {
                continue;
            }
            if slot.ts_ms == key.ts_ms && slot.fp == key.fp {
                return Admission::Retransmission;
            }
            reused |= key.seq.is_some();
        }
        if reused {
            Admission::SeqReuse
        } else {
            Admission::New
        }
    }

    fn push(&mut self, key: ReadingKey) {
        let slot = Slot {
            seq: key.seq.unwrap_or(0),
            ts_ms: key.ts_ms,
            fp: key.fp,
        };
        let mut evicted = None;
        let i = if self.slots.len() < DEVICE_DEDUP_WINDOW {
            if self.slots.capacity() == 0 {
                // One allocation per device rather than one per doubling:
                // with many devices the growth churned the allocator.
                self.slots.reserve_exact(DEVICE_DEDUP_WINDOW);
            }
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let i = usize::from(self.next);
            evicted = Some((self.has_seq & (1 << i) != 0, self.slots[i]));
            self.slots[i] = slot;
            // Fits: the window is at most 64 slots.
            self.next = ((i + 1) % DEVICE_DEDUP_WINDOW) as u8;
            i
        };
        if key.seq.is_some() {
            self.has_seq |= 1 << i;
        } else {
            self.has_seq &= !(1 << i);
        }
        match key.seq {
            Some(s) => self.max_seq = Some(self.max_seq.map_or(s, |m| m.max(s))),
            None => {
                self.max_unseq_ts = Some(self.max_unseq_ts.map_or(key.ts_ms, |m| m.max(key.ts_ms)))
            }
        }
        // The evicted key may have been a bound: then recompute it (32 keys;
        // never on the fast path, where the new key is the bound).
        match evicted {
            Some((true, e)) if self.max_seq == Some(e.seq) => {
                self.max_seq = self.slots_with_seq(true).map(|s| s.seq).max();
            }
            Some((false, e)) if self.max_unseq_ts == Some(e.ts_ms) => {
                self.max_unseq_ts = self.slots_with_seq(false).map(|s| s.ts_ms).max();
            }
            _ => {}
        }
    }

    /// The slots that have (or lack) a seq.
    fn slots_with_seq(&self, with_seq: bool) -> impl Iterator<Item = &Slot> {
        self.slots
            .iter()
            .enumerate()
            .filter(move |(i, _)| (self.has_seq & (1 << i) != 0) == with_seq)
            .map(|(_, s)| s)
    }

    /// Keys held, oldest first.
    pub fn keys(&self) -> impl Iterator<Item = ReadingKey> + '_ {
        let n = self.slots.len();
        let start = if n == DEVICE_DEDUP_WINDOW {
            usize::from(self.next)
        } else {
            0
        };
        (0..n).map(move |k| {
            let i = (start + k) % n;
            let s = self.slots[i];
            ReadingKey {
                seq: (self.has_seq & (1 << i) != 0).then_some(s.seq),
                ts_ms: s.ts_ms,
                fp: s.fp,
            }
        })
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Same keys in the same order (wherever the ring starts).
impl PartialEq for RecentReadings {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.keys().eq(other.keys())
    }
}

impl Eq for RecentReadings {}

impl Encode for RecentReadings {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        // At most 64: checked at compile time.
        (self.len() as u8).encode(e)?;
        let no_seq: u64 = self
            .keys()
            .enumerate()
            .filter(|(_, k)| k.seq.is_none())
            .fold(0, |m, (k, _)| m | 1 << k);
        no_seq.encode(e)?;
        let (mut prev_seq, mut prev_ts) = (0u64, 0i64);
        for k in self.keys() {
            if let Some(s) = k.seq {
                (s.wrapping_sub(prev_seq) as i64).encode(e)?;
                prev_seq = s;
            }
            k.ts_ms.wrapping_sub(prev_ts).encode(e)?;
            prev_ts = k.ts_ms;
            k.fp.to_le_bytes().encode(e)?;
        }
        Ok(())
    }
}

impl<Context> Decode<Context> for RecentReadings {
    fn decode<D: Decoder<Context = Context>>(d: &mut D) -> Result<Self, DecodeError> {
        let n = usize::from(u8::decode(d)?);
        if n > DEVICE_DEDUP_WINDOW {
            return Err(DecodeError::OtherString(format!(
                "dedup window of {n} keys (at most {DEVICE_DEDUP_WINDOW})"
            )));
        }
        let no_seq = u64::decode(d)?;
        if n < 64 && no_seq >> n != 0 {
            return Err(DecodeError::OtherString(format!(
                "dedup window mask {no_seq:#x} names keys beyond its {n}"
            )));
        }
        let mut w = RecentReadings {
            slots: Vec::with_capacity(n),
            ..RecentReadings::default()
        };
        let (mut prev_seq, mut prev_ts) = (0u64, 0i64);
        for k in 0..n {
            let seq = if no_seq & (1 << k) == 0 {
                prev_seq = prev_seq.wrapping_add(i64::decode(d)? as u64);
                Some(prev_seq)
            } else {
                None
            };
            prev_ts = prev_ts.wrapping_add(i64::decode(d)?);
            let fp = u64::from_le_bytes(<[u8; 8]>::decode(d)?);
            w.push(ReadingKey {
                seq,
                ts_ms: prev_ts,
                fp,
            });
        }
        Ok(w)
    }
}

bincode::impl_borrow_decode!(RecentReadings);

#[cfg(test)]
#[path = "dedup_tests.rs"]
mod tests;
