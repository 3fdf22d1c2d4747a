//! Sync lag: how long ago the oldest record the region has not yet
//! acknowledged was made durable here. The spool numbers its records but
//! keeps no append time per record (that would cost bytes on every
//! record), so [`LagClock`] remembers, at each status read, which sequence
//! number the spool had reached then. The oldest unacknowledged record was
//! appended after the last mark at or below it and no later than the first
//! mark above it, so the lag is known to one status interval — the
//! heartbeat's resolution, which is what an operator reads it at.
//!
//! Pure: time is a parameter. Bounded: at most [`MAX_MARKS`] marks; when
//! full, every other one is dropped, which halves the resolution of the
//! oldest part of a very long backlog instead of forgetting its start.

use std::collections::VecDeque;

/// Most marks kept.
pub const MAX_MARKS: usize = 1024;

/// Marks of (next sequence number, time in ms) at status reads.
#[derive(Debug, Default)]
pub struct LagClock {
    /// Oldest first; sequence numbers and times both non-decreasing.
    marks: VecDeque<(u64, u64)>,
}

impl LagClock {
    /// Records that at `now_ms` the spool's next sequence number was
    /// `next_seq` and the region had acknowledged everything below
    /// `first_unacked`, and returns the sync lag in ms (0 when nothing is
    /// unacknowledged).
    pub fn observe(&mut self, now_ms: u64, first_unacked: u64, next_seq: u64) -> u64 {
        // Marks the acknowledgements have passed say nothing about what
        // is still waiting: the first mark *above* the ack point bounds
        // the oldest waiting record's append time.
        if first_unacked >= next_seq {
            self.marks.clear();
            return 0;
        }
        while self
            .marks
            .front()
            .is_some_and(|&(seq, _)| seq <= first_unacked)
        {
            self.marks.pop_front();
        }
        if self.marks.back().is_none_or(|&(seq, _)| seq < next_seq) {
            if self.marks.len() >= MAX_MARKS {
                self.thin();
            }
            self.marks.push_back((next_seq, now_ms));
        }
        // The first mark above the ack point: the oldest waiting record
        // was durable by then.
        self.marks
            .front()
            .map_or(0, |&(_, t)| now_ms.saturating_sub(t))
    }

    /// Drops every other mark after the first, keeping the oldest (the one
    /// the lag is read from).
    fn thin(&mut self) {
        let kept: VecDeque<(u64, u64)> = self
            .marks
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, m)| *m)
            .collect();
        self.marks = kept;
    }

    /// Marks held (for tests and bounds).
    pub fn marks(&self) -> usize {
        self.marks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_waiting_is_no_lag() {
        let mut c = LagClock::default();
        assert_eq!(c.observe(1_000, 0, 0), 0);
        assert_eq!(c.observe(2_000, 10, 10), 0);
        assert_eq!(c.marks(), 0, "acknowledged marks are forgotten");
    }

    #[test]
    fn lag_is_the_age_of_the_first_mark_above_the_ack_point() {
        let mut c = LagClock::default();
        // Records 0..10 appended by t=1000, 10..20 by t=2000.
        assert_eq!(c.observe(1_000, 0, 10), 0, "just seen: no age yet");
        assert_eq!(c.observe(2_000, 0, 20), 1_000);
        assert_eq!(c.observe(3_000, 0, 20), 2_000, "a stalled uplink ages");
        // Acks reach 10: the oldest waiting record (10) was durable by 2000.
        assert_eq!(c.observe(3_500, 10, 20), 1_500);
        // Acks reach 15: still a record of the second mark.
        assert_eq!(c.observe(4_000, 15, 20), 2_000);
        // Caught up.
        assert_eq!(c.observe(4_500, 20, 20), 0);
        // New records after catching up start a new clock.
        assert_eq!(c.observe(5_000, 20, 25), 0);
        assert_eq!(c.observe(5_250, 20, 25), 250);
    }

    #[test]
    fn records_from_before_a_restart_age_from_the_first_read() {
        let mut c = LagClock::default();
        assert_eq!(c.observe(100, 500, 900), 0);
        assert_eq!(c.observe(1_100, 500, 900), 1_000);
    }

    #[test]
    fn marks_stay_bounded_and_keep_the_oldest() {
        let mut c = LagClock::default();
        for i in 0..10 * MAX_MARKS as u64 {
            c.observe(i * 10, 0, i + 1);
            assert!(c.marks() <= MAX_MARKS);
        }
        let now = 10 * MAX_MARKS as u64 * 10;
        assert_eq!(c.observe(now, 0, u64::MAX), now, "age of the first mark");
    }
}
