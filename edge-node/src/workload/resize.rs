//! In-place resize decisions for one dimension of one instance, as a pure
//! function of its measured use, its budget and bounds, the node's free room
//! and whether the node is under pressure.
//!
//! Grow when use stays above `grow-above` for the sustain window and the
//! node has room; shrink when use stays below `shrink-below` for the window
//! *and* the node is under pressure (an idle instance on an idle node keeps
//! its headroom: shrinking it gains nothing and risks an OOM on its next
//! burst). Every decision carries the numbers that caused it.

use super::config::LifecycleConfig;

/// Which resource a resize touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Memory budget (MiB).
    Memory,
    /// CPU budget (millicores).
    Cpu,
}

/// The measurements behind a resize, for the event log and heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeReason {
    /// Resource resized.
    pub dimension: Dimension,
    /// Measured use (MiB or millicores).
    pub used: u32,
    /// Budget before (MiB or millicores).
    pub from: u32,
    /// Budget after.
    pub to: u32,
    /// Use / budget in percent at decision time.
    pub utilization_pct: u32,
    /// How long the condition held, ms.
    pub sustained_ms: u64,
    /// Human-readable explanation.
    pub text: String,
}

/// When the current high or low stretch started, per dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trend {
    /// Start of the current stretch above the grow threshold, ms.
    pub high_since: Option<u64>,
    /// Start of the current stretch below the shrink threshold, ms.
    pub low_since: Option<u64>,
}

/// The facts for one decision. Units: MiB for memory, millicores for CPU.
#[derive(Debug, Clone, Copy)]
pub struct ResizeInput<'a> {
    /// Which resource.
    pub dimension: Dimension,
    /// Measured use.
    pub used: u32,
    /// Current budget.
    pub budget: u32,
    /// Spec floor.
    pub min: u32,
    /// Spec ceiling.
    pub max: u32,
    /// Node capacity not reserved by any instance.
    pub free: u32,
    /// Why the node is under pressure in this dimension, if it is.
    pub pressure: Option<&'a str>,
}

fn unit(d: Dimension) -> (&'static str, &'static str) {
    match d {
        Dimension::Memory => ("memory", "MiB"),
        Dimension::Cpu => ("cpu", "millicores"),
    }
}

/// Updates `trend` with a sample taken at `now_ms` and returns a resize when
/// one is due. The trend restarts after each decision, so the next one needs
/// a full window of fresh evidence.
pub fn decide(
    cfg: &LifecycleConfig,
    input: ResizeInput<'_>,
    trend: &mut Trend,
    now_ms: u64,
) -> Option<ResizeReason> {
    let ResizeInput {
        dimension,
        used,
        budget,
        min,
        max,
        free,
        pressure,
    } = input;
    if budget == 0 {
        return None;
    }
    // Bounds never force a move on their own: a budget outside them (which
    // validation prevents) is only ever moved toward them.
    let (min, max) = (min.min(budget), max.max(budget));
    let pct64 = u64::from(used) * 100 / u64::from(budget);
    let pct = u32::try_from(pct64).unwrap_or(u32::MAX);
    let (what, u) = unit(dimension);
    if pct >= cfg.grow_above_pct {
        trend.low_since = None;
        let since = *trend.high_since.get_or_insert(now_ms);
        let sustained = now_ms - since.min(now_ms);
        if sustained < cfg.resize_sustain_ms || budget >= max {
            return None;
        }
        let target =
            (u64::from(budget) * u64::from(cfg.grow_factor_pct) / 100).max(u64::from(budget) + 1);
        let to = target
            .min(u64::from(max))
            .min(u64::from(budget) + u64::from(free));
        let to = u32::try_from(to).unwrap_or(max);
        if to <= budget {
            return None; // no room; keep the trend so the next sample retries
        }
        trend.high_since = None;
        Some(ResizeReason {
            dimension,
            used,
            from: budget,
            to,
            utilization_pct: pct,
            sustained_ms: sustained,
            text: format!(
                "grow {what} {budget}->{to} {u}: use {used} {u} is {pct}% of budget, at or above {}% for {sustained} ms; max {max}, node free {free}",
                cfg.grow_above_pct
            ),
        })
    } else if pct < cfg.shrink_below_pct {
        trend.high_since = None;
        let since = *trend.low_since.get_or_insert(now_ms);
        let sustained = now_ms - since.min(now_ms);
        let pressure = pressure?;
        if sustained < cfg.resize_sustain_ms || budget <= min {
            return None;
        }
        // Aim for shrink-target use after the shrink, never below the floor.
        let target = (u64::from(used) * 100).div_ceil(u64::from(cfg.shrink_target_pct.max(1)));
        let to = u32::try_from(target.max(u64::from(min))).unwrap_or(budget);
        if to >= budget {
            return None;
        }
        trend.low_since = None;
        Some(ResizeReason {
            dimension,
            used,
            from: budget,
            to,
            utilization_pct: pct,
            sustained_ms: sustained,
            text: format!(
                "shrink {what} {budget}->{to} {u}: use {used} {u} is {pct}% of budget, below {}% for {sustained} ms; node under pressure: {pressure}; min {min}",
                cfg.shrink_below_pct
            ),
        })
    } else {
        *trend = Trend::default();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(used: u32, budget: u32, free: u32, pressure: Option<&str>) -> ResizeInput<'_> {
        ResizeInput {
            dimension: Dimension::Memory,
            used,
            budget,
            min: 16,
            max: 128,
            free,
            pressure,
        }
    }

    /// Feeds the same sample every 10 s from t=0 to t=`until` and returns
    /// the decisions with their times.
    fn run(i: ResizeInput<'_>, until: u64) -> Vec<(u64, u32, String)> {
        let cfg = LifecycleConfig::default();
        let mut trend = Trend::default();
        (0..=until)
            .step_by(10_000)
            .filter_map(|t| decide(&cfg, i, &mut trend, t).map(|r| (t, r.to, r.text)))
            .collect()
    }

    #[test]
    fn resize_decision_table() {
        let press = Some("node memory 91% used");
        // (case, input, expected (time, new budget) list, text fragment)
        type Case<'a> = (&'a str, ResizeInput<'a>, Vec<(u64, u32)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                "hot but not yet sustained",
                input(60, 64, 1000, None),
                vec![],
                "",
            ),
            (
                "hot for the window: grow by 1.5x",
                input(60, 64, 1000, None),
                vec![(30_000, 96)],
                "use 60 MiB is 93% of budget",
            ),
            (
                "grow limited by node room",
                input(60, 64, 10, None),
                vec![(30_000, 74)],
                "node free 10",
            ),
            (
                "grow limited by spec max",
                input(120, 128, 1000, None),
                vec![],
                "",
            ),
            ("no room: no decision", input(60, 64, 0, None), vec![], ""),
            (
                "cold without pressure: keep",
                input(5, 64, 1000, None),
                vec![],
                "",
            ),
            (
                "cold under pressure: shrink to 60% use",
                input(12, 64, 0, press),
                vec![(30_000, 20)],
                "under pressure: node memory 91% used",
            ),
            (
                "shrink floors at min",
                input(1, 64, 0, press),
                vec![(30_000, 16)],
                "min 16",
            ),
            ("lukewarm: nothing", input(40, 64, 1000, press), vec![], ""),
        ];
        for (i, (name, inp, want, fragment)) in cases.into_iter().enumerate() {
            let until = if i == 0 { 20_000 } else { 30_000 };
            let got = run(inp, until);
            let times: Vec<(u64, u32)> = got.iter().map(|(t, to, _)| (*t, *to)).collect();
            assert_eq!(times, want, "case {name:?}: {got:?}");
            if let Some((_, _, text)) = got.first() {
                assert!(text.contains(fragment), "case {name:?}: {text}");
            }
        }
    }

    #[test]
    fn a_dip_restarts_the_window() {
        let cfg = LifecycleConfig::default();
        let mut trend = Trend::default();
        let samples = [
            (0, 60),
            (10_000, 60),
            (20_000, 40),
            (30_000, 60),
            (50_000, 60),
            (60_000, 60),
        ];
        let got: Vec<(u64, u32)> = samples
            .iter()
            .filter_map(|&(t, used)| {
                decide(&cfg, input(used, 64, 1000, None), &mut trend, t).map(|r| (t, r.to))
            })
            .collect();
        assert_eq!(got, vec![(60_000, 96)]);
    }
}
