//! Rolling z-score anomaly detector, as a Strata monitor module.
//!
//! Per (device, metric) it keeps an exponentially weighted mean and
//! variance over a window of `window` readings (constant state per series,
//! so it fits the host's 64 KiB kv quota for hundreds of series) and alerts
//! when a reading lies `threshold` standard deviations or more from the
//! mean. The state is persisted in kv once per batch, so a restarted or
//! moved instance keeps its baseline. See [`detector`] for the rules and
//! [`Params`] for the configuration.
//!
//! # Layout
//! - [`detector`]: params and the pure per-record state machine (host-tested).
//! - this file: the ABI glue (exports exist only on wasm32).

pub mod detector;
#[cfg(test)]
mod sim_data;

pub use detector::{Params, ZScore, ZState};

use strata_monitor_sdk::{run_batch, strata_monitor, Ctx, Monitor, TelemetryRecord};

/// The module's [`Monitor`]: the detector driven by the SDK.
pub struct ZScoreMonitor(pub ZScore);

impl Monitor for ZScoreMonitor {
    fn init(params: &serde_json::Value) -> Result<Self, String> {
        Ok(ZScoreMonitor(ZScore::new(Params::from_json(params)?)))
    }

    fn on_batch(&mut self, records: &[TelemetryRecord], ctx: &mut Ctx) {
        run_batch(&mut self.0, records, ctx);
    }
}

strata_monitor!(ZScoreMonitor);
