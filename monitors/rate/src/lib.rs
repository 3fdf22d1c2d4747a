//! Rate-of-change monitor, as a Strata monitor module.
//!
//! Computes each watched metric's rate of change per second between
//! consecutive readings (by their timestamps) and alerts, once per
//! excursion, when its magnitude exceeds `max-rate`; it clears when the rate
//! is back under `clear-rate`. The previous reading is persisted in kv, so a
//! restart does not lose the first rate. See [`detector`] for the rules and
//! [`Params`] for the configuration.
//!
//! # Layout
//! - [`detector`]: params and the pure per-record state machine (host-tested).
//! - this file: the ABI glue (exports exist only on wasm32).

pub mod detector;

pub use detector::{Params, Rate};
#[cfg(test)]
#[path = "../../zscore/src/sim_data.rs"]
mod sim_data;

use strata_monitor_sdk::{run_batch, strata_monitor, Ctx, Monitor, TelemetryRecord};

/// The module's [`Monitor`]: the detector driven by the SDK.
pub struct RateMonitor(pub Rate);

impl Monitor for RateMonitor {
    fn init(params: &serde_json::Value) -> Result<Self, String> {
        Ok(RateMonitor(Rate::new(Params::from_json(params)?)))
    }

    fn on_batch(&mut self, records: &[TelemetryRecord], ctx: &mut Ctx) {
        run_batch(&mut self.0, records, ctx);
    }
}

strata_monitor!(RateMonitor);
