//! [`LoadHistory`]: one autoscaled workload's measured load, one point per
//! forecast step, replicated so that a new leader forecasts from the same
//! history as the old one.
//!
//! Points are numbered by step since the epoch (`at_ms / step_ms`), so
//! every replica and every leader numbers them alike, and a ring keeps the
//! newest [`HISTORY_POINTS`]. Holt-Winters needs evenly spaced samples: a
//! gap (no leader, a region unreachable for a few steps) is filled by
//! carrying the last point forward; a gap longer than the ring starts it
//! afresh. A point for a step already held is a retry or a late proposal
//! and changes nothing, so the leader writes at most once per step.
//!
//! Values are stored as `f32`: half the snapshot size of `f64`, and seven
//! significant digits are far finer than the noise of a load measurement.

use std::collections::VecDeque;

use bincode::{Decode, Encode};

/// Most points kept per workload: two weeks at 5-minute steps, with room
/// for the weekly season to be seen twice (Holt-Winters uses a season only
/// when the history covers two of it). 16 KiB per workload.
pub const HISTORY_POINTS: usize = 4096;

/// What recording a point did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Appended (after carrying the last point over `filled` missed steps).
    Appended {
        /// Steps filled with the previous point.
        filled: u64,
    },
    /// The history started afresh: first point, another metric or step, or
    /// a gap longer than the ring.
    Restarted,
    /// A point for a step already held: nothing changed.
    AlreadyHeld,
}

/// One workload's load history (see the module docs).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct LoadHistory {
    /// The scale metric the points measure (`records-per-second`, …).
    pub metric: String,
    /// Milliseconds per step.
    pub step_ms: u64,
    /// Step number of `values[0]` (`at_ms / step_ms`).
    pub first_step: i64,
    /// Oldest first, at most [`HISTORY_POINTS`].
    pub values: VecDeque<f32>,
}

impl LoadHistory {
    /// A history holding one point.
    fn start(metric: &str, step_ms: u64, step: i64, value: f32) -> LoadHistory {
        LoadHistory {
            metric: metric.to_owned(),
            step_ms,
            first_step: step,
            values: VecDeque::from([value]),
        }
    }

    /// Step number the next point stands for.
    pub fn next_step(&self) -> i64 {
        let n = i64::try_from(self.values.len()).unwrap_or(i64::MAX);
        self.first_step.saturating_add(n)
    }

    /// Points held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// No points (never true of a stored history).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The points as `f64`, oldest first, for a forecaster.
    pub fn to_vec(&self) -> Vec<f64> {
        self.values.iter().map(|v| f64::from(*v)).collect()
    }

    /// Records `value` (finite, ≥ 0: the caller checks) for step `step` of
    /// `step_ms` measuring `metric`, into `history` (created if `None`).
    pub fn record(
        history: &mut Option<LoadHistory>,
        metric: &str,
        step_ms: u64,
        step: i64,
        value: f64,
    ) -> Recorded {
        // Narrowing to f32 is the documented storage precision.
        let value = value as f32;
        let h = match history {
            Some(h) if h.metric == metric && h.step_ms == step_ms => h,
            _ => {
                *history = Some(LoadHistory::start(metric, step_ms, step, value));
                return Recorded::Restarted;
            }
        };
        let next = h.next_step();
        if step < next {
            return Recorded::AlreadyHeld;
        }
        let gap = u64::try_from(step - next).unwrap_or(u64::MAX);
        if gap >= HISTORY_POINTS as u64 {
            *h = LoadHistory::start(metric, step_ms, step, value);
            return Recorded::Restarted;
        }
        // Held points are never empty; a carried-forward point stands for
        // "no measurement", the least surprising value for the model.
        let last = h.values.back().copied().unwrap_or(value);
        for _ in 0..gap {
            h.values.push_back(last);
        }
        h.values.push_back(value);
        while h.values.len() > HISTORY_POINTS {
            h.values.pop_front();
            h.first_step += 1;
        }
        Recorded::Appended { filled: gap }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RPS: &str = "records-per-second";

    #[test]
    fn a_step_is_recorded_once_and_gaps_carry_the_last_point() {
        let mut h = None;
        assert_eq!(
            LoadHistory::record(&mut h, RPS, 1000, 10, 1.0),
            Recorded::Restarted
        );
        assert_eq!(
            LoadHistory::record(&mut h, RPS, 1000, 11, 2.0),
            Recorded::Appended { filled: 0 }
        );
        // A retry, and a late point for an older step: both ignored.
        assert_eq!(
            LoadHistory::record(&mut h, RPS, 1000, 11, 9.0),
            Recorded::AlreadyHeld
        );
        assert_eq!(
            LoadHistory::record(&mut h, RPS, 1000, 3, 9.0),
            Recorded::AlreadyHeld
        );
        assert_eq!(
            LoadHistory::record(&mut h, RPS, 1000, 14, 5.0),
            Recorded::Appended { filled: 2 }
        );
        let h = h.unwrap();
        assert_eq!(h.to_vec(), vec![1.0, 2.0, 2.0, 2.0, 5.0]);
        assert_eq!((h.first_step, h.next_step()), (10, 15));
    }

    #[test]
    fn the_ring_keeps_the_newest_points() {
        let mut h = None;
        let n = HISTORY_POINTS as i64 + 10;
        for s in 0..n {
            LoadHistory::record(&mut h, RPS, 60_000, s, s as f64);
        }
        let h = h.unwrap();
        assert_eq!(h.len(), HISTORY_POINTS);
        assert_eq!(h.first_step, 10);
        assert_eq!(h.values.front().copied(), Some(10.0));
        assert_eq!(h.next_step(), n);
    }

    #[test]
    fn another_metric_step_or_a_long_gap_starts_afresh() {
        let mut h = None;
        LoadHistory::record(&mut h, RPS, 1000, 0, 1.0);
        LoadHistory::record(&mut h, RPS, 1000, 1, 1.0);
        assert_eq!(
            LoadHistory::record(&mut h, "cpu", 1000, 2, 3.0),
            Recorded::Restarted
        );
        assert_eq!(h.as_ref().map(|h| h.len()), Some(1));
        assert_eq!(
            LoadHistory::record(&mut h, "cpu", 500, 5, 3.0),
            Recorded::Restarted
        );
        assert_eq!(
            LoadHistory::record(&mut h, "cpu", 500, 5 + HISTORY_POINTS as i64 + 1, 4.0),
            Recorded::Restarted
        );
        let h = h.unwrap();
        assert_eq!((h.len(), h.step_ms, h.metric.as_str()), (1, 500, "cpu"));
    }
}
