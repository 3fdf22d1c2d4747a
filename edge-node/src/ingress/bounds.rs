//! Time bounds on readings: how far ahead of and how far behind the edge's
//! wall clock a reading's `ts` may be.
//!
//! Why refuse at all: a reading far in the future is stored but no query
//! ever reaches it (`ts = i64::MAX`), and it poisons per-device state keyed
//! on the newest timestamp; a reading older than the region's retention is
//! acknowledged, stored and dropped by retention moments later. Both are
//! refused before they are spooled, with a reason, and counted.
//!
//! The upper bound is `ingress.max-future-skew`. The lower bound is the
//! stricter of `ingress.max-past-age` and the region's store retention, which
//! the hub announces in every heartbeat ack and the uplink publishes through
//! [`RegionRetention`]; until the first ack only the config applies.
//!
//! Everything here is pure except [`RegionRetention`], a shared cell with
//! one writer (the uplink driver) and many readers (connection drivers and
//! the bridge), which read it once per read pass or batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counter labels of the two refusals, next to
/// [`super::metrics::PROTOCOL_REASONS`].
pub const TIME_BOUND_REASONS: [&str; 2] = ["too_far_future", "too_old"];

/// The window of acceptable timestamps, relative to the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// Largest `ts - now` accepted, ms.
    pub max_future_skew_ms: u64,
    /// Largest `now - ts` accepted, ms.
    pub max_past_age_ms: u64,
    /// True when `max_past_age_ms` is the region's retention (stricter than
    /// the edge's own config), so a refusal can say where the limit is from.
    pub past_from_region: bool,
}

impl TimeBounds {
    /// The bounds in force: the configured ones, with the past bound
    /// tightened to the region's retention when the region announced one.
    /// `region_retention_ms` is `None` before the first heartbeat ack and
    /// `Some(0)` for a region that keeps data for ever.
    pub fn effective(
        max_future_skew: Duration,
        max_past_age: Duration,
        region_retention_ms: Option<u64>,
    ) -> Self {
        let cfg_past = duration_ms(max_past_age);
        let (max_past_age_ms, past_from_region) = match region_retention_ms {
            Some(r) if r > 0 && r < cfg_past => (r, true),
            _ => (cfg_past, false),
        };
        TimeBounds {
            max_future_skew_ms: duration_ms(max_future_skew),
            max_past_age_ms,
            past_from_region,
        }
    }

    /// Whether a reading stamped `ts_ms` is acceptable at wall time
    /// `wall_ms` (both ms since the Unix epoch). The bounds are inclusive.
    pub fn check(&self, ts_ms: i64, wall_ms: i64) -> Result<(), OutOfBounds> {
        // i128: `ts` is anything a device sent, from i64::MIN to i64::MAX.
        let ahead = i128::from(ts_ms) - i128::from(wall_ms);
        if ahead > i128::from(self.max_future_skew_ms) {
            return Err(OutOfBounds::TooFarFuture {
                ts_ms,
                ahead_ms: clamp_u64(ahead),
                limit_ms: self.max_future_skew_ms,
            });
        }
        if -ahead > i128::from(self.max_past_age_ms) {
            return Err(OutOfBounds::TooOld {
                ts_ms,
                age_ms: clamp_u64(-ahead),
                limit_ms: self.max_past_age_ms,
                from_region: self.past_from_region,
            });
        }
        Ok(())
    }
}

/// A reading outside the [`TimeBounds`]: which bound, and by how much.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutOfBounds {
    /// `ts` is further ahead of the edge's clock than `max-future-skew`.
    #[error("ts {ts_ms} is {} ahead of the edge clock; max-future-skew is {}", human(*ahead_ms), human(*limit_ms))]
    TooFarFuture {
        /// The reading's timestamp, ms.
        ts_ms: i64,
        /// `ts - now`, ms.
        ahead_ms: u64,
        /// The bound, ms.
        limit_ms: u64,
    },
    /// `ts` is older than the past bound.
    #[error(
        "ts {ts_ms} is {} old; the oldest accepted is {} ({})",
        human(*age_ms),
        human(*limit_ms),
        if *from_region { "the region's retention" } else { "max-past-age" }
    )]
    TooOld {
        /// The reading's timestamp, ms.
        ts_ms: i64,
        /// `now - ts`, ms.
        age_ms: u64,
        /// The bound, ms.
        limit_ms: u64,
        /// Whether the bound is the region's retention.
        from_region: bool,
    },
}

impl OutOfBounds {
    /// The counter label (one of [`TIME_BOUND_REASONS`]).
    pub fn reason(&self) -> &'static str {
        match self {
            OutOfBounds::TooFarFuture { .. } => TIME_BOUND_REASONS[0],
            OutOfBounds::TooOld { .. } => TIME_BOUND_REASONS[1],
        }
    }
}

/// The region's store retention as the hub last announced it. Cheap to
/// clone; every clone is the same cell.
#[derive(Debug, Clone)]
pub struct RegionRetention(Arc<AtomicU64>);

impl Default for RegionRetention {
    fn default() -> Self {
        Self::new()
    }
}

/// The cell's value before any announcement (a retention of u64::MAX ms
/// is not representable in the hub's config, which caps it at i64::MAX).
const UNKNOWN: u64 = u64::MAX;

impl RegionRetention {
    /// A cell that has heard nothing yet.
    pub fn new() -> Self {
        RegionRetention(Arc::new(AtomicU64::new(UNKNOWN)))
    }

    /// Records the region's retention (0: keeps data for ever). Returns
    /// whether it changed.
    pub fn publish(&self, retention_ms: u64) -> bool {
        let v = retention_ms.min(UNKNOWN - 1);
        self.0.swap(v, Ordering::Relaxed) != v
    }

    /// The last announced retention, `None` before the first.
    pub fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            UNKNOWN => None,
            v => Some(v),
        }
    }
}

/// The configured limits and the region's retention cell: what the bridge
/// needs to compute the [`TimeBounds`] in force for each batch.
#[derive(Debug, Clone)]
pub struct LiveBounds {
    max_future_skew: Duration,
    max_past_age: Duration,
    retention: RegionRetention,
}

impl LiveBounds {
    /// Bounds from `ingress.max-future-skew` / `ingress.max-past-age`,
    /// tightened by whatever `retention` holds when asked.
    pub fn new(
        max_future_skew: Duration,
        max_past_age: Duration,
        retention: RegionRetention,
    ) -> Self {
        LiveBounds {
            max_future_skew,
            max_past_age,
            retention,
        }
    }

    /// The bounds in force now.
    pub fn current(&self) -> TimeBounds {
        TimeBounds::effective(
            self.max_future_skew,
            self.max_past_age,
            self.retention.get(),
        )
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn clamp_u64(v: i128) -> u64 {
    u64::try_from(v.max(0)).unwrap_or(u64::MAX)
}

/// `1h 5m 3s` for durations of a second or more (milliseconds dropped:
/// noise at that scale), `250ms` below.
fn human(ms: u64) -> String {
    let d = if ms >= 1000 {
        Duration::from_secs(ms / 1000)
    } else {
        Duration::from_millis(ms)
    };
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: u64 = 60_000;
    const DAY: u64 = 86_400_000;

    fn bounds(region: Option<u64>) -> TimeBounds {
        TimeBounds::effective(
            Duration::from_millis(5 * MIN),
            Duration::from_millis(7 * DAY),
            region,
        )
    }

    #[test]
    fn inclusive_edges_and_refusals() {
        let b = bounds(None);
        let now = 1_700_000_000_000;
        assert_eq!(b.check(now, now), Ok(()));
        assert_eq!(b.check(now + 5 * MIN as i64, now), Ok(()));
        assert_eq!(b.check(now - 7 * DAY as i64, now), Ok(()));
        let e = b.check(now + 5 * MIN as i64 + 1, now).unwrap_err();
        assert_eq!(e.reason(), "too_far_future");
        assert_eq!(
            e.to_string(),
            format!(
                "ts {} is 5m ahead of the edge clock; max-future-skew is 5m",
                now + 5 * MIN as i64 + 1
            )
        );
        let e = b.check(now - 30 * DAY as i64, now).unwrap_err();
        assert_eq!(e.reason(), "too_old");
        assert!(
            e.to_string()
                .ends_with("is 30days old; the oldest accepted is 7days (max-past-age)"),
            "{e}"
        );
    }

    #[test]
    fn extremes_do_not_overflow() {
        let b = bounds(None);
        let now = 1_700_000_000_000;
        assert!(matches!(
            b.check(i64::MAX, now),
            Err(OutOfBounds::TooFarFuture { ahead_ms, .. }) if ahead_ms == (i64::MAX - now) as u64
        ));
        assert!(matches!(
            b.check(i64::MIN, now),
            Err(OutOfBounds::TooOld { .. })
        ));
        assert!(
            matches!(b.check(i64::MIN, i64::MAX), Err(OutOfBounds::TooOld { age_ms, .. }) if age_ms == u64::MAX)
        );
        assert!(b.check(0, now).is_err());
    }

    #[test]
    fn region_retention_only_tightens() {
        assert_eq!(bounds(None).max_past_age_ms, 7 * DAY);
        assert_eq!(bounds(Some(0)).max_past_age_ms, 7 * DAY, "0 keeps for ever");
        assert_eq!(bounds(Some(30 * DAY)).max_past_age_ms, 7 * DAY);
        let b = bounds(Some(DAY));
        assert_eq!((b.max_past_age_ms, b.past_from_region), (DAY, true));
        let e = b.check(0, 2 * DAY as i64).unwrap_err();
        assert!(e.to_string().ends_with("(the region's retention)"), "{e}");
    }

    #[test]
    fn retention_cell() {
        let r = RegionRetention::default();
        assert_eq!(r.get(), None, "nothing heard yet");
        assert!(r.publish(DAY));
        assert!(!r.publish(DAY));
        assert_eq!(r.clone().get(), Some(DAY));
        assert!(r.publish(0));
        assert_eq!(r.get(), Some(0));
        r.publish(u64::MAX);
        assert_eq!(r.get(), Some(u64::MAX - 1));
    }

    proptest! {
        /// Accepted exactly when `now - past <= ts <= now + skew`.
        #[test]
        fn check_matches_the_window(ts: i64, now in -(1i64 << 50)..(1i64 << 50), skew in 0u64..(1 << 40), past in 0u64..(1 << 40)) {
            let b = TimeBounds { max_future_skew_ms: skew, max_past_age_ms: past, past_from_region: false };
            let inside = i128::from(ts) <= i128::from(now) + i128::from(skew)
                && i128::from(ts) >= i128::from(now) - i128::from(past);
            prop_assert_eq!(b.check(ts, now).is_ok(), inside);
        }
    }
}
