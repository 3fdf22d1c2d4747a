//! Restart backoff and crash-loop detection, as pure helpers.
//!
//! Delays double from the policy's initial delay up to its cap, with "equal
//! jitter": half the delay is fixed and half random, so delays still grow
//! monotonically while the restarts of many instances that failed together
//! (say, on a bad artifact) spread out instead of stampeding.

use std::collections::VecDeque;

use rand::Rng;
use strata_protocol::workload::RestartPolicy;

/// The un-jittered delay before consecutive restart `attempt` (1-based):
/// `initial * 2^(attempt-1)`, capped at `max_backoff_ms`.
pub fn base_delay_ms(policy: &RestartPolicy, attempt: u32) -> u64 {
    let shift = attempt.saturating_sub(1).min(63);
    policy
        .initial_backoff_ms
        .saturating_mul(1u64 << shift)
        .min(policy.max_backoff_ms)
}

/// The jittered delay before restart `attempt`: uniform in `[base/2, base]`.
pub fn delay_ms(policy: &RestartPolicy, attempt: u32, rng: &mut impl Rng) -> u64 {
    let base = base_delay_ms(policy, attempt);
    let half = base / 2;
    half + rng.gen_range(0..=base - half)
}

/// Failure times within a sliding window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureWindow {
    times: VecDeque<u64>,
}

impl FailureWindow {
    /// Records a failure at `now_ms` and returns how many failures fall in
    /// `(now_ms - window_ms, now_ms]`.
    pub fn record(&mut self, now_ms: u64, window_ms: u64) -> usize {
        self.times.push_back(now_ms);
        while let Some(&t) = self.times.front() {
            if now_ms.saturating_sub(t) >= window_ms {
                self.times.pop_front();
            } else {
                break;
            }
        }
        self.times.len()
    }

    /// Forgets all failures (after a spec change).
    pub fn clear(&mut self) {
        self.times.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use strata_protocol::workload::RestartMode;

    #[test]
    fn backoff_grows_doubling_to_the_cap_with_bounded_jitter() {
        let policy = RestartPolicy {
            mode: RestartMode::OnFailure,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 20_000,
        };
        let want_base = [1_000, 2_000, 4_000, 8_000, 16_000, 20_000, 20_000];
        for (i, want) in want_base.iter().enumerate() {
            assert_eq!(
                base_delay_ms(&policy, i as u32 + 1),
                *want,
                "attempt {}",
                i + 1
            );
        }
        assert_eq!(base_delay_ms(&policy, u32::MAX), 20_000, "no overflow");
        for seed in 0..50u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut prev = 0;
            for attempt in 1..=10 {
                let d = delay_ms(&policy, attempt, &mut rng);
                let base = base_delay_ms(&policy, attempt);
                assert!(
                    d >= base / 2 && d <= base,
                    "seed {seed} attempt {attempt}: {d} outside [{}, {base}]",
                    base / 2
                );
                assert!(d >= prev / 2, "seed {seed}: delays must not collapse");
                prev = d;
            }
        }
        // The jitter is real: different seeds give different delays.
        let draws: std::collections::BTreeSet<u64> = (0..20u64)
            .map(|s| delay_ms(&policy, 5, &mut ChaCha8Rng::seed_from_u64(s)))
            .collect();
        assert!(draws.len() > 10, "jitter too narrow: {draws:?}");
    }

    #[test]
    fn failure_window_slides() {
        let mut w = FailureWindow::default();
        let counts: Vec<usize> = [0, 10_000, 20_000, 59_999, 60_000, 130_000]
            .iter()
            .map(|&t| w.record(t, 60_000))
            .collect();
        assert_eq!(counts, vec![1, 2, 3, 4, 4, 1]);
        w.clear();
        assert_eq!(w.record(130_001, 60_000), 1);
    }
}
