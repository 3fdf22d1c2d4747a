//! The z-score detector's pure core: params and per-record state machine.
//!
//! Rules, per (device, metric) series:
//! - The mean and variance are exponentially weighted with
//!   `alpha = max(1/n, 2/(window+1))`: an exact running mean while the
//!   series is young, then a window of about `window` readings.
//! - After `min-samples` readings, each reading gets
//!   `z = (x - mean) / max(std, min-std)`, emitted as `<metric>.zscore`.
//! - `|z| >= threshold` is an outlier. The first outlier of an excursion
//!   raises `zscore.anomaly` (critical when `|z| >= critical`, else
//!   warning); outliers are kept out of the baseline so a multi-reading
//!   spike does not hide itself. The first normal reading after an
//!   excursion raises `zscore.recovered` (info).
//! - `adapt-after` outliers in a row mean the level really changed: the
//!   detector raises `zscore.level-shift` (info) and learns the series
//!   afresh from that reading.

use bincode::{Decode, Encode};
use serde::Deserialize;
use strata_monitor_sdk::{
    parse_params, watches, Detector, Event, Metric, SeriesStore, Severity, TelemetryRecord,
};

/// Alert code: a reading far from its series' baseline.
pub const CODE_ANOMALY: &str = "zscore.anomaly";
/// Alert code: the series is back within the threshold.
pub const CODE_RECOVERED: &str = "zscore.recovered";
/// Alert code: a persistent excursion was accepted as the new baseline.
pub const CODE_LEVEL_SHIFT: &str = "zscore.level-shift";

/// The monitor's params (JSON, kebab-case; every field optional).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Params {
    /// Metric names to watch; empty watches every metric. Default: empty.
    pub metrics: Vec<String>,
    /// Window span, in readings (2 to 100000). Default 60.
    pub window: u32,
    /// |z| at or above which a reading is an outlier (> 0). Default 6.
    pub threshold: f64,
    /// |z| at or above which the alert is critical (>= threshold). Default 12.
    pub critical: f64,
    /// Readings a series needs before it can alert (2 to 100000). Default 30.
    pub min_samples: u32,
    /// Floor on the standard deviation, in the metric's unit (>= 0), so a
    /// near-constant series does not turn rounding into anomalies. Default 0.01.
    pub min_std: f64,
    /// Outliers in a row after which the new level is accepted (>= 1). Default 10.
    pub adapt_after: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            metrics: Vec::new(),
            window: 60,
            threshold: 6.0,
            critical: 12.0,
            min_samples: 30,
            min_std: 0.01,
            adapt_after: 10,
        }
    }
}

impl Params {
    /// Parses and validates params JSON (`null` = defaults); the error
    /// lists every problem.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let p: Params = parse_params(v)?;
        p.validate()?;
        Ok(p)
    }

    /// Every problem with these params, in one message.
    pub fn validate(&self) -> Result<(), String> {
        let mut errs = Vec::new();
        if !(2..=100_000).contains(&self.window) {
            errs.push(format!(
                "window must be 2..=100000 readings, got {}",
                self.window
            ));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            errs.push(format!(
                "threshold must be a finite z > 0, got {}",
                self.threshold
            ));
        }
        if !(self.critical.is_finite() && self.critical >= self.threshold) {
            errs.push(format!(
                "critical must be finite and >= threshold ({}), got {}",
                self.threshold, self.critical
            ));
        }
        if !(2..=100_000).contains(&self.min_samples) {
            errs.push(format!(
                "min-samples must be 2..=100000, got {}",
                self.min_samples
            ));
        }
        if !(self.min_std.is_finite() && self.min_std >= 0.0) {
            errs.push(format!(
                "min-std must be finite and >= 0, got {}",
                self.min_std
            ));
        }
        if self.adapt_after == 0 {
            errs.push("adapt-after must be >= 1".to_owned());
        }
        if self.metrics.iter().any(|m| m.is_empty()) {
            errs.push("metrics must not contain an empty name".to_owned());
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid zscore params: {}", errs.join("; ")))
        }
    }
}

/// Per-series state, persisted in kv (bincode).
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct ZState {
    /// Readings in the baseline since it was (re)started.
    pub n: u32,
    /// Weighted mean.
    pub mean: f64,
    /// Weighted variance.
    pub var: f64,
    /// Outliers in a row.
    pub outliers: u32,
    /// In an excursion (an anomaly alert was raised and not yet recovered).
    pub anomalous: bool,
}

impl ZState {
    fn learn(&mut self, x: f64, window: u32) {
        self.n = self.n.saturating_add(1);
        let alpha = (1.0 / f64::from(self.n)).max(2.0 / (f64::from(window) + 1.0));
        let diff = x - self.mean;
        let incr = alpha * diff;
        self.mean += incr;
        self.var = (1.0 - alpha) * (self.var + diff * incr);
    }
}

/// The detector: params plus the state of every series it has seen.
pub struct ZScore {
    params: Params,
    series: SeriesStore<ZState>,
}

impl ZScore {
    /// A detector with no history.
    pub fn new(params: Params) -> Self {
        ZScore {
            params,
            series: SeriesStore::new("z"),
        }
    }
}

impl Detector for ZScore {
    type State = ZState;

    fn series(&mut self) -> &mut SeriesStore<ZState> {
        &mut self.series
    }

    fn watches(&self, name: &str) -> bool {
        watches(&self.params.metrics, name)
    }

    fn step_metric(
        &self,
        record: &TelemetryRecord,
        m: &Metric,
        st: &mut ZState,
        out: &mut Vec<Event>,
    ) {
        let p = &self.params;
        let x = m.value;
        if st.n >= p.min_samples {
            let std = st.var.max(0.0).sqrt().max(p.min_std);
            let z = (x - st.mean) / std;
            out.push(Event::Metric {
                device: record.device.clone(),
                name: format!("{}.zscore", m.name),
                value: z,
            });
            if z.abs() >= p.threshold {
                st.outliers = st.outliers.saturating_add(1);
                if !st.anomalous {
                    st.anomalous = true;
                    out.push(Event::Alert {
                        severity: if z.abs() >= p.critical { Severity::Critical } else { Severity::Warning },
                        device: record.device.clone(),
                        code: CODE_ANOMALY,
                        message: format!(
                            "{} = {x} is {z:.1} standard deviations from its mean {:.3} (std {std:.3}, ts {})",
                            m.name, st.mean, record.ts_ms
                        ),
                    });
                }
                if st.outliers >= p.adapt_after {
                    out.push(Event::Alert {
                        severity: Severity::Info,
                        device: record.device.clone(),
                        code: CODE_LEVEL_SHIFT,
                        message: format!(
                            "{} stayed anomalous for {} readings; accepting {x} as the new level and relearning",
                            m.name, st.outliers
                        ),
                    });
                    *st = ZState::default();
                    st.learn(x, p.window);
                }
                return;
            }
            if st.anomalous {
                out.push(Event::Alert {
                    severity: Severity::Info,
                    device: record.device.clone(),
                    code: CODE_RECOVERED,
                    message: format!(
                        "{} = {x} is back within {} standard deviations (z {z:.1})",
                        m.name, p.threshold
                    ),
                });
                st.anomalous = false;
            }
            st.outliers = 0;
        }
        st.learn(x, p.window);
    }
}

#[cfg(test)]
#[path = "detector_tests.rs"]
mod tests;
