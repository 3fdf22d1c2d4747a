//! How Raft messages leave a node: the [`Transport`] trait, and fault
//! injection filters (drop, partition, isolate, random loss) that wrap any
//! transport, in the spirit of tikv's `transport_simulate.rs` and raft-rs's
//! test `Network`. The QUIC implementation is in `quic.rs`; the in-memory
//! one used by the multi-node harness lives in the tests.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use raft::eraftpb::{Message, MessageType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_protocol::ReplicaInfo;

/// Sends Raft messages to peers. Implementations must not block: the node
/// calls them from its Ready loop. Delivery is best effort; raft retries.
pub trait Transport: Send {
    /// Sends the messages of one Ready step (to any mix of peers); an
    /// implementation batches them per peer.
    fn send(&mut self, msgs: Vec<Message>);
    /// The group's membership changed: connect to new peers, drop old ones.
    fn update_peers(&mut self, members: &[ReplicaInfo]);
    /// `peer` restarted (it dialed in with a new boot id): whatever link
    /// to it predates that is dead, even if it has not timed out yet, so
    /// drop it and dial again now. Default: nothing to drop.
    fn reconnect(&mut self, _peer: u64) {}
}

/// Decides which messages get through. Filters see each Ready's batch.
pub trait Filter: Send + Sync {
    /// Removes the messages that must not be delivered.
    fn before(&self, msgs: &mut Vec<Message>);
}

/// Drops every message to the given peers.
pub struct DropTo(pub HashSet<u64>);

impl Filter for DropTo {
    fn before(&self, msgs: &mut Vec<Message>) {
        msgs.retain(|m| !self.0.contains(&m.to));
    }
}

/// Drops messages of the given types to one peer: with appends and
/// snapshots dropped, a peer still answers heartbeats but never catches up.
pub struct DropTypes {
    /// The peer.
    pub to: u64,
    /// Message types lost on the way to it.
    pub types: Vec<MessageType>,
}

impl Filter for DropTypes {
    fn before(&self, msgs: &mut Vec<Message>) {
        msgs.retain(|m| m.to != self.to || !self.types.contains(&m.get_msg_type()));
    }
}

/// Cuts the group in two: messages crossing between `a` and `b` are lost.
pub struct Partition {
    /// One side.
    pub a: HashSet<u64>,
    /// The other side.
    pub b: HashSet<u64>,
}

impl Filter for Partition {
    fn before(&self, msgs: &mut Vec<Message>) {
        msgs.retain(|m| {
            let cross = (self.a.contains(&m.from) && self.b.contains(&m.to))
                || (self.b.contains(&m.from) && self.a.contains(&m.to));
            !cross
        });
    }
}

/// Isolates one node: nothing from it or to it gets through.
pub struct Isolate(pub u64);

impl Filter for Isolate {
    fn before(&self, msgs: &mut Vec<Message>) {
        msgs.retain(|m| m.from != self.0 && m.to != self.0);
    }
}

/// Loses each message with probability `rate`, from a seeded RNG.
pub struct DropRandom {
    rate: f64,
    rng: Mutex<StdRng>,
}

impl DropRandom {
    /// Loses a `rate` fraction of messages; `seed` makes it reproducible.
    pub fn new(rate: f64, seed: u64) -> Self {
        DropRandom {
            rate,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl Filter for DropRandom {
    fn before(&self, msgs: &mut Vec<Message>) {
        let Ok(mut rng) = self.rng.lock() else { return };
        msgs.retain(|_| !rng.gen_bool(self.rate));
    }
}

/// A shared, changeable set of filters (tests add and clear them while
/// nodes run).
#[derive(Clone, Default)]
pub struct Filters(Arc<Mutex<Vec<Box<dyn Filter>>>>);

impl Filters {
    /// Adds a filter.
    pub fn add(&self, f: impl Filter + 'static) {
        if let Ok(mut v) = self.0.lock() {
            v.push(Box::new(f));
        }
    }

    /// Removes every filter (heals the network).
    pub fn clear(&self) {
        if let Ok(mut v) = self.0.lock() {
            v.clear();
        }
    }

    /// Applies every filter to `msgs`.
    pub fn apply(&self, msgs: &mut Vec<Message>) {
        if let Ok(v) = self.0.lock() {
            for f in v.iter() {
                f.before(msgs);
            }
        }
    }
}

/// A transport whose outgoing messages pass through [`Filters`] first.
pub struct FilteredTransport<T> {
    inner: T,
    filters: Filters,
}

impl<T: Transport> FilteredTransport<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, filters: Filters) -> Self {
        FilteredTransport { inner, filters }
    }
}

impl<T: Transport> Transport for FilteredTransport<T> {
    fn send(&mut self, mut msgs: Vec<Message>) {
        self.filters.apply(&mut msgs);
        if !msgs.is_empty() {
            self.inner.send(msgs);
        }
    }

    fn update_peers(&mut self, members: &[ReplicaInfo]) {
        self.inner.update_peers(members);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(from: u64, to: u64) -> Message {
        let mut m = Message::default();
        m.from = from;
        m.to = to;
        m
    }

    fn all() -> Vec<Message> {
        let mut v = Vec::new();
        for f in 1..=3 {
            for t in 1..=3 {
                if f != t {
                    v.push(msg(f, t));
                }
            }
        }
        v
    }

    fn pairs(v: &[Message]) -> Vec<(u64, u64)> {
        v.iter().map(|m| (m.from, m.to)).collect()
    }

    #[test]
    fn filters_drop_what_they_say() {
        let mut v = all();
        Isolate(1).before(&mut v);
        assert_eq!(pairs(&v), vec![(2, 3), (3, 2)]);

        let mut v = all();
        Partition {
            a: [1].into(),
            b: [2, 3].into(),
        }
        .before(&mut v);
        assert_eq!(pairs(&v), vec![(2, 3), (3, 2)]);

        let mut v = all();
        DropTo([2].into()).before(&mut v);
        assert!(v.iter().all(|m| m.to != 2));
        assert_eq!(v.len(), 4);

        let mut v = all();
        v[0].set_msg_type(MessageType::MsgAppend);
        let first = (v[0].from, v[0].to);
        DropTypes {
            to: first.1,
            types: vec![MessageType::MsgAppend],
        }
        .before(&mut v);
        assert_eq!(v.len(), 5);
        assert!(v.iter().any(|m| m.to == first.1), "other types still pass");

        let mut v: Vec<Message> = (0..1000).map(|_| msg(1, 2)).collect();
        DropRandom::new(0.5, 7).before(&mut v);
        assert!((350..650).contains(&v.len()), "{}", v.len());
    }

    #[test]
    fn filters_can_be_cleared() {
        let f = Filters::default();
        f.add(Isolate(2));
        let mut v = all();
        f.apply(&mut v);
        assert_eq!(v.len(), 2);
        f.clear();
        let mut v = all();
        f.apply(&mut v);
        assert_eq!(v.len(), 6);
    }
}
