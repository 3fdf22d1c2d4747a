//! Edge liveness in the replicated state: each edge's last decided
//! [`EdgeLiveness`] (written by [`EdgeTransition`] commands, which only the
//! leader's failure detector proposes) and the region's bounded, ordered
//! [`EventLog`], appended to on apply so that every replica serves the same
//! events with the same sequence numbers, across leader changes and
//! restarts.

use std::collections::VecDeque;

use bincode::{Decode, Encode};
use strata_protocol::liveness::{
    EdgeEventDetail, EdgeLiveness, EventAttr, EventKind, EventPage, LivenessState, RegionEvent,
};

/// Events the log holds; older ones are dropped first (a reader that falls
/// this far behind is told how many it missed).
pub const MAX_EVENTS: usize = 2048;

/// Most events one page returns.
pub const MAX_PAGE: usize = 1000;

/// A liveness decision of the leader: the body of the `EdgeTransition`
/// command. Stored in the Raft log: its layout never changes.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct EdgeTransition {
    /// The edge.
    pub edge: String,
    /// Which event it is.
    pub kind: EventKind,
    /// The state before, as the leader saw it.
    pub from: LivenessState,
    /// When it was decided, ms since the Unix epoch (leader clock): the
    /// event's time. Equal to `liveness.since_ms` but for a
    /// reclassification, which keeps the time the edge went down.
    pub at_ms: i64,
    /// The decision; its `event_seq` is assigned on apply.
    pub liveness: EdgeLiveness,
    /// One line for people.
    pub message: String,
}

/// The region's event log: sequence numbers 1, 2, 3, … assigned on apply,
/// at most [`MAX_EVENTS`] held.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct EventLog {
    /// Sequence number of the next event.
    next_seq: u64,
    /// Held events, oldest first, consecutive.
    events: VecDeque<RegionEvent>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            next_seq: 1,
            events: VecDeque::new(),
        }
    }
}

impl EventLog {
    /// Appends an event; returns its sequence number.
    pub fn append(
        &mut self,
        at_ms: i64,
        kind: EventKind,
        subject: String,
        message: String,
        edge: Option<EdgeEventDetail>,
        attrs: Vec<EventAttr>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(RegionEvent {
            seq,
            at_ms,
            kind,
            subject,
            message,
            edge,
            attrs,
        });
        seq
    }

    /// Sequence number the next event will get (one past the newest).
    pub fn end_seq(&self) -> u64 {
        self.next_seq
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Up to `limit` (at most [`MAX_PAGE`]) events with `seq >= from_seq`.
    pub fn page(&self, from_seq: u64, limit: usize) -> EventPage {
        let limit = limit.clamp(1, MAX_PAGE);
        let oldest = self.events.front().map_or(0, |e| e.seq);
        let start = if oldest == 0 {
            self.events.len()
        } else {
            // Consecutive: the index is the distance from the oldest.
            from_seq
                .saturating_sub(oldest)
                .min(self.events.len() as u64) as usize
        };
        let events: Vec<RegionEvent> = self.events.range(start..).take(limit).cloned().collect();
        // Nothing matched only when the reader is caught up (or the log
        // is empty): then nothing was missed either.
        let missed = events
            .first()
            .map_or(0, |first| first.seq.saturating_sub(from_seq.max(1)));
        let next_seq = events.last().map_or(self.next_seq, |e| e.seq + 1);
        EventPage {
            events,
            next_seq,
            oldest_seq: oldest,
            missed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: u64) -> EventLog {
        let mut log = EventLog::default();
        for i in 0..n {
            let seq = log.append(
                i as i64,
                EventKind::EdgeUp,
                format!("e{i}"),
                "up".into(),
                None,
                vec![],
            );
            assert_eq!(seq, i + 1);
        }
        log
    }

    #[test]
    fn pages_follow_sequence_numbers() {
        let log = log_with(5);
        let p = log.page(1, 2);
        assert_eq!(
            p.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!((p.next_seq, p.oldest_seq, p.missed), (3, 1, 0));
        let p = log.page(p.next_seq, 10);
        assert_eq!(
            p.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(p.next_seq, 6);
        // Caught up: empty, and the cursor stays.
        let p = log.page(6, 10);
        assert!(p.events.is_empty());
        assert_eq!((p.next_seq, p.missed), (6, 0));
        // 0 means "from the oldest".
        assert_eq!(log.page(0, 10).events.len(), 5);
        // A cursor from the future (another log) is brought back.
        assert_eq!(log.page(99, 10).next_seq, 6);
    }

    #[test]
    fn a_full_log_drops_the_oldest_and_says_how_many_a_reader_missed() {
        let log = log_with(MAX_EVENTS as u64 + 10);
        assert_eq!(log.len(), MAX_EVENTS);
        let p = log.page(1, 5);
        assert_eq!(p.oldest_seq, 11);
        assert_eq!(p.events[0].seq, 11);
        assert_eq!(p.missed, 10);
        let empty = EventLog::default().page(1, 5);
        assert!(empty.events.is_empty());
        assert_eq!((empty.next_seq, empty.oldest_seq, empty.missed), (1, 0, 0));
    }
}
