//! A set of `u64` stored as sorted, disjoint, non-adjacent half-open ranges.
//!
//! The dedup layers of the state machine remember which sequence numbers are
//! already stored. Sequences arrive almost in order, so a set of ranges stays
//! at one or two intervals in steady state however many records it covers.
//! Memory is bounded by [`IntervalSet::enforce_cap`], which trades exactness
//! for a fixed size (see its doc).

use std::ops::Range;

use bincode::{Decode, Encode};

/// Sorted, disjoint, non-adjacent half-open ranges of `u64`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct IntervalSet {
    /// Invariant: for consecutive `a`, `b`: `a.start < a.end < b.start`.
    ranges: Vec<Range<u64>>,
}

impl IntervalSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Number of disjoint intervals.
    pub fn interval_count(&self) -> usize {
        self.ranges.len()
    }

    /// Whether `v` is in the set.
    pub fn contains(&self, v: u64) -> bool {
        // First range whose end is beyond v; v is inside iff it starts at or before v.
        let i = self.ranges.partition_point(|r| r.end <= v);
        self.ranges.get(i).is_some_and(|r| r.start <= v)
    }

    /// Adds `range` and returns the sub-ranges that were not in the set
    /// before, in ascending order. An empty range adds nothing.
    pub fn insert(&mut self, range: Range<u64>) -> Vec<Range<u64>> {
        let mut new = Vec::new();
        if range.start >= range.end {
            return new;
        }
        // Ranges overlapping or adjacent to `range`: indices lo..hi.
        let lo = self.ranges.partition_point(|r| r.end < range.start);
        let hi = self.ranges.partition_point(|r| r.start <= range.end);
        let mut cursor = range.start;
        for r in &self.ranges[lo..hi] {
            if r.start > cursor {
                new.push(cursor..r.start.min(range.end));
            }
            cursor = cursor.max(r.end);
        }
        if cursor < range.end {
            new.push(cursor..range.end);
        }
        let merged = if lo < hi {
            self.ranges[lo].start.min(range.start)..self.ranges[hi - 1].end.max(range.end)
        } else {
            range
        };
        self.ranges.splice(lo..hi, std::iter::once(merged));
        new
    }

    /// Adds one value; returns true when it was new. Allocation-free unless
    /// the value opens a new interval.
    pub fn insert_one(&mut self, v: u64) -> bool {
        if v == u64::MAX {
            // `v..v+1` is not representable; u64::MAX is never a real sequence
            // number (a spool or device would need 2^64 records), so treat it as
            // always new rather than refusing it.
            return true;
        }
        if self.contains(v) {
            return false;
        }
        self.insert(v..v + 1);
        true
    }

    /// Keeps at most `max` intervals (`max >= 1`) by filling the lowest gaps;
    /// returns how many gaps were filled.
    ///
    /// Trade-off: a filled gap is remembered as "already stored" although it
    /// was not, so a record from that gap arriving *later* would be taken for
    /// a duplicate. The lowest gap is the oldest one, the least likely to be
    /// filled by a late resend; the bound keeps a hostile or broken sender
    /// (random sequence numbers) from growing replicated state without limit.
    /// Callers count the filled gaps so operators can see when it happens.
    pub fn enforce_cap(&mut self, max: usize) -> u64 {
        let max = max.max(1);
        if self.ranges.len() <= max {
            return 0;
        }
        let excess = self.ranges.len() - max;
        // Merge ranges 0..=excess into one: fills the `excess` lowest gaps.
        let end = self.ranges[excess].end;
        self.ranges[0].end = end;
        self.ranges.drain(1..=excess);
        excess as u64
    }
}

#[cfg(test)]
// One-range expectations are ranges on purpose, not typos for `start..end` lists.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn insert_reports_new_parts() {
        let mut s = IntervalSet::new();
        assert_eq!(s.insert(10..20), vec![10..20]);
        assert_eq!(s.insert(30..40), vec![30..40]);
        assert_eq!(s.insert(5..45), vec![5..10, 20..30, 40..45]);
        assert_eq!(s.ranges(), &[5..45]);
        assert_eq!(s.insert(5..45), Vec::<Range<u64>>::new());
        assert_eq!(s.insert(45..46), vec![45..46]);
        assert_eq!(s.ranges(), &[5..46], "adjacent ranges coalesce");
        assert_eq!(s.insert(3..3), Vec::<Range<u64>>::new());
    }

    #[test]
    fn cap_fills_lowest_gaps() {
        let mut s = IntervalSet::new();
        for i in 0..5 {
            s.insert(i * 10..i * 10 + 1);
        }
        assert_eq!(s.enforce_cap(3), 2);
        assert_eq!(s.ranges(), &[0..21, 30..31, 40..41]);
        assert!(s.contains(15));
        assert_eq!(s.enforce_cap(3), 0);
    }

    #[test]
    fn max_value_is_not_a_panic() {
        let mut s = IntervalSet::new();
        assert!(s.insert_one(u64::MAX));
        assert_eq!(
            s.insert(u64::MAX - 1..u64::MAX),
            vec![u64::MAX - 1..u64::MAX]
        );
    }

    proptest! {
        #[test]
        fn matches_btreeset_model(ops in proptest::collection::vec((0u64..200, 0u64..20), 0..60)) {
            let mut s = IntervalSet::new();
            let mut model = BTreeSet::new();
            for (start, len) in ops {
                let new = s.insert(start..start + len);
                let expect: Vec<u64> = (start..start + len).filter(|v| !model.contains(v)).collect();
                let got: Vec<u64> = new.iter().flat_map(|r| r.clone()).collect();
                prop_assert_eq!(got, expect);
                model.extend(start..start + len);
                // Invariant: sorted, disjoint, non-adjacent, non-empty.
                for w in s.ranges().windows(2) {
                    prop_assert!(w[0].end < w[1].start);
                }
                for r in s.ranges() {
                    prop_assert!(r.start < r.end);
                }
                for v in 0..230 {
                    prop_assert_eq!(s.contains(v), model.contains(&v));
                }
            }
        }

        #[test]
        fn insert_one_matches_model(vals in proptest::collection::vec(0u64..100, 0..100)) {
            let mut s = IntervalSet::new();
            let mut model = BTreeSet::new();
            for v in vals {
                prop_assert_eq!(s.insert_one(v), model.insert(v));
            }
        }

        #[test]
        fn cap_is_a_superset(vals in proptest::collection::vec(0u64..1000, 0..100), cap in 1usize..8) {
            let mut s = IntervalSet::new();
            for v in &vals {
                s.insert_one(*v);
            }
            let before = s.clone();
            let filled = s.enforce_cap(cap);
            prop_assert!(s.interval_count() <= cap);
            prop_assert_eq!(filled as usize, before.interval_count().saturating_sub(cap));
            for v in &vals {
                prop_assert!(s.contains(*v));
            }
        }
    }
}
