//! Threshold monitor with hysteresis, as a Strata monitor module.
//!
//! Alerts when a watched metric goes above `above` or below `below`, once
//! per excursion, and clears only when the value is back inside by
//! `hysteresis`, so a value hovering at the threshold does not flap. The
//! alarm state is persisted in kv, so a restart does not repeat an alert.
//! See [`detector`] for the rules and [`Params`] for the configuration.
//!
//! # Layout
//! - [`detector`]: params and the pure per-record state machine (host-tested).
//! - this file: the ABI glue (exports exist only on wasm32).

pub mod detector;

pub use detector::{Params, Threshold};

use strata_monitor_sdk::{run_batch, strata_monitor, Ctx, Monitor, TelemetryRecord};

/// The module's [`Monitor`]: the detector driven by the SDK.
pub struct ThresholdMonitor(pub Threshold);

impl Monitor for ThresholdMonitor {
    fn init(params: &serde_json::Value) -> Result<Self, String> {
        Ok(ThresholdMonitor(Threshold::new(Params::from_json(params)?)))
    }

    fn on_batch(&mut self, records: &[TelemetryRecord], ctx: &mut Ctx) {
        run_batch(&mut self.0, records, ctx);
    }
}

strata_monitor!(ThresholdMonitor);
