//! Stuck-sensor detector, as a Strata monitor module.
//!
//! Alerts when a watched metric reports the same value (within
//! `tolerance`) `count` times in a row, as a frozen sensor does, and clears
//! when the value moves again. The run state is persisted in kv, so a
//! restart neither forgets a run nor repeats its alert. See [`detector`] for
//! the rules and [`Params`] for the configuration.
//!
//! # Layout
//! - [`detector`]: params and the pure per-record state machine (host-tested).
//! - this file: the ABI glue (exports exist only on wasm32).

pub mod detector;

pub use detector::{Params, Stuck};
#[cfg(test)]
#[path = "../../zscore/src/sim_data.rs"]
mod sim_data;

use strata_monitor_sdk::{run_batch, strata_monitor, Ctx, Monitor, TelemetryRecord};

/// The module's [`Monitor`]: the detector driven by the SDK.
pub struct StuckMonitor(pub Stuck);

impl Monitor for StuckMonitor {
    fn init(params: &serde_json::Value) -> Result<Self, String> {
        Ok(StuckMonitor(Stuck::new(Params::from_json(params)?)))
    }

    fn on_batch(&mut self, records: &[TelemetryRecord], ctx: &mut Ctx) {
        run_batch(&mut self.0, records, ctx);
    }
}

strata_monitor!(StuckMonitor);
