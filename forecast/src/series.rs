//! [`Series`]: a bounded ring of evenly spaced samples, the history a
//! forecaster is fitted on.
//!
//! Bounded because a forecaster per workload per region lives for the
//! process's lifetime: it keeps the last `capacity` samples (a few weeks,
//! enough for two weekly seasons) and forgets older ones. Timestamps are
//! implicit (`start + i · step`), so a gap must be filled by the caller
//! before pushing; non-finite samples are refused at the door.

use std::collections::VecDeque;

use crate::ForecastError;

/// Evenly spaced samples, oldest first, at most `capacity` of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    step_ms: u64,
    capacity: usize,
    /// Timestamp (ms) of `values[0]`.
    start_ms: i64,
    values: VecDeque<f64>,
}

impl Series {
    /// An empty series whose first sample will be at `start_ms`, one every
    /// `step_ms` (≥ 1), keeping at most `capacity` (≥ 1) samples.
    pub fn new(start_ms: i64, step_ms: u64, capacity: usize) -> Result<Series, ForecastError> {
        let mut p = Vec::new();
        if step_ms == 0 {
            p.push("step-ms must be at least 1".to_owned());
        }
        if capacity == 0 {
            p.push("capacity must be at least 1 sample".to_owned());
        }
        if !p.is_empty() {
            return Err(ForecastError::Config(p));
        }
        Ok(Series {
            step_ms,
            capacity,
            start_ms,
            values: VecDeque::with_capacity(capacity.min(1 << 16)),
        })
    }

    /// Appends the next sample, evicting the oldest when full. A NaN or
    /// infinite value is refused and the series is unchanged.
    pub fn push(&mut self, value: f64) -> Result<(), ForecastError> {
        if !value.is_finite() {
            return Err(ForecastError::NonFinite {
                index: self.values.len(),
                value,
            });
        }
        if self.values.len() == self.capacity {
            self.values.pop_front();
            self.start_ms = self.start_ms.saturating_add_unsigned(self.step_ms);
        }
        self.values.push_back(value);
        Ok(())
    }

    /// Milliseconds between samples.
    pub fn step_ms(&self) -> u64 {
        self.step_ms
    }

    /// Most samples kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// No samples yet.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Timestamp of the oldest sample held.
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// Timestamp the next pushed sample stands for.
    pub fn next_ms(&self) -> i64 {
        let n = u64::try_from(self.values.len()).unwrap_or(u64::MAX);
        self.start_ms
            .saturating_add_unsigned(n.saturating_mul(self.step_ms))
    }

    /// The samples as one slice, oldest first (rotates the ring in place, so
    /// it takes `&mut self`; pass the result to [`crate::Forecaster::fit`]).
    pub fn as_slice(&mut self) -> &[f64] {
        self.values.make_contiguous()
    }

    /// The samples, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.values.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_evicts_oldest_and_moves_start() {
        let mut s = Series::new(1_000, 10, 3).unwrap();
        assert!(s.is_empty());
        for v in 0..5 {
            s.push(f64::from(v)).unwrap();
        }
        assert_eq!(s.as_slice(), &[2.0, 3.0, 4.0]);
        assert_eq!((s.start_ms(), s.next_ms()), (1_020, 1_050));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![2.0, 3.0, 4.0]);
    }

    #[test]
    fn refuses_non_finite_and_bad_config() {
        let mut s = Series::new(0, 10, 3).unwrap();
        s.push(1.0).unwrap();
        assert!(matches!(
            s.push(f64::NAN),
            Err(ForecastError::NonFinite { index: 1, .. })
        ));
        assert_eq!(s.len(), 1);
        let Err(ForecastError::Config(p)) = Series::new(0, 0, 0) else {
            panic!("expected a config error");
        };
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
