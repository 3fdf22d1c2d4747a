//! The edge node's local scheduler for device-monitor instances: a PURE core
//! with no IO, no clock, no tokio. Time comes in as `now_ms`, randomness as
//! `&mut impl Rng`, measurements as values; decisions go out as [`Command`]s.
//!
//! # Shape: events in, commands out
//! [`LocalScheduler`] is a long-lived state machine in the quinn-proto /
//! openraft style (`handle_*` inputs, `poll_command` / `poll_timeout`
//! outputs) rather than a nomad-style `schedule(snapshot) -> Plan` function,
//! because most of what it decides depends on history a snapshot would have to
//! carry anyway: backoff attempts, failure windows for crash-loop detection,
//! how long an instance has been hot or cold for resizing, admission order
//! for "newest first" preemption. The one decision that *is* a function of a
//! snapshot, admission, is the pure [`admission::admit`], tested on its own;
//! [`backoff`] and [`resize`] are pure helpers as well. Tests feed events and
//! compare the emitted command list and the per-instance [`Health`].
//!
//! The runtime driver (later) owns a `LocalScheduler`, executes its commands
//! against wasmtime, reports `handle_started` / `handle_exited`, feeds fuel
//! and memory samples plus /proc node samples into `handle_usage`, and wakes
//! it at `poll_timeout`. The hub's desired set for this node comes in through
//! `handle_desired`, also at boot from the persisted assignments, so offline
//! restarts need no hub.
//!
//! # Invariants (checked by the property test)
//! - The budgets of instances that hold capacity (pending, running, in
//!   backoff) never sum above the node's monitor capacity.
//! - An instance is only ever preempted by a strictly higher priority.
//! - A budget only moves within its spec's min/max.
//!
//! # Layout
//! - [`model`]: capacity, requests, measurements, health, refusals, commands.
//! - [`admission`]: constraint and capacity checks, preemption victims.
//! - [`backoff`]: jittered exponential restart delay, failure window.
//! - [`resize`]: grow/shrink decisions with their reasons.
//! - `core`: [`LocalScheduler`], the lifecycle state machine.

pub mod admission;
pub mod backoff;
mod core;
pub mod model;
pub mod resize;

#[cfg(test)]
mod core_tests;
#[cfg(test)]
mod prop_tests;

pub use self::core::{InstanceReport, LocalScheduler};
pub use model::{
    millicores_from_fuel, Budget, Command, Constraints, Dimension, ExitKind, Health, InstanceKey,
    InstanceUsage, NodeInfo, NodeUsage, Refusal, ResizeReason, StopReason, WorkloadRequest,
};

/// Scheduler tuning. A node-level policy, not per spec.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SchedConfig {
    /// Failures within `crash-loop-window-ms` that mark an instance
    /// crash-looping (it is then not restarted until its spec changes). Default 5.
    pub crash_loop_failures: u32,
    /// Sliding window for crash-loop detection, ms. Default 60000.
    pub crash_loop_window_ms: u64,
    /// An instance that ran this long before exiting restarts its backoff
    /// from the first step, ms. Default 60000.
    pub stable_after_ms: u64,
    /// Grow a budget when use is at or above this percentage of it. Default 90.
    pub grow_above_pct: u32,
    /// Shrink a budget (under node pressure) when use is below this
    /// percentage of it. Default 30.
    pub shrink_below_pct: u32,
    /// How long a grow or shrink condition must hold, ms. Default 30000.
    pub resize_sustain_ms: u64,
    /// A grow multiplies the budget by this percentage. Default 150.
    pub grow_factor_pct: u32,
    /// A shrink aims for this use percentage of the new budget. Default 60.
    pub shrink_target_pct: u32,
    /// The node is under pressure in a dimension when its measured use or
    /// the reserved budgets reach this percentage. Default 85.
    pub pressure_pct: u32,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            crash_loop_failures: 5,
            crash_loop_window_ms: 60_000,
            stable_after_ms: 60_000,
            grow_above_pct: 90,
            shrink_below_pct: 30,
            resize_sustain_ms: 30_000,
            grow_factor_pct: 150,
            shrink_target_pct: 60,
            pressure_pct: 85,
        }
    }
}

impl SchedConfig {
    /// Every problem at once, as `field: message` lines.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.crash_loop_failures == 0 {
            errs.push("crash-loop-failures: must be at least 1".to_owned());
        }
        if self.crash_loop_window_ms == 0 {
            errs.push("crash-loop-window-ms: must be greater than 0".to_owned());
        }
        if !(1..=100).contains(&self.shrink_below_pct)
            || self.shrink_below_pct >= self.grow_above_pct
            || self.grow_above_pct > 100
        {
            errs.push(format!(
                "shrink-below-pct ({}) and grow-above-pct ({}): need 1 <= shrink < grow <= 100",
                self.shrink_below_pct, self.grow_above_pct
            ));
        }
        if self.grow_factor_pct <= 100 {
            errs.push(format!(
                "grow-factor-pct: {} must be above 100",
                self.grow_factor_pct
            ));
        }
        if self.shrink_target_pct <= self.shrink_below_pct
            || self.shrink_target_pct >= self.grow_above_pct
        {
            errs.push(format!(
                "shrink-target-pct: {} must lie between shrink-below-pct and grow-above-pct",
                self.shrink_target_pct
            ));
        }
        if !(1..=100).contains(&self.pressure_pct) {
            errs.push(format!("pressure-pct: {} must be 1-100", self.pressure_pct));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}
