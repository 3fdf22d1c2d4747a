//! The threshold monitor's pure core: params and per-record state machine.
//!
//! Per (device, metric) series the state is normal, high or low:
//! - normal -> high when `x > above`: alert `threshold.high`;
//!   normal -> low when `x < below`: alert `threshold.low`.
//! - high -> normal when `x <= above - hysteresis` (and low -> normal when
//!   `x >= below + hysteresis`): alert `threshold.cleared` (info).
//! - high <-> low directly when the value jumps across both thresholds.
//!
//! Every reading also emits `<metric>.threshold_state` (1 high, -1 low, 0
//! normal).

use bincode::{Decode, Encode};
use serde::Deserialize;
use strata_monitor_sdk::{
    parse_params, watches, Detector, Event, Metric, SeriesStore, Severity, TelemetryRecord,
};

/// Alert code: the value went above `above`.
pub const CODE_HIGH: &str = "threshold.high";
/// Alert code: the value went below `below`.
pub const CODE_LOW: &str = "threshold.low";
/// Alert code: the value is back inside, past the hysteresis band.
pub const CODE_CLEARED: &str = "threshold.cleared";

/// The monitor's params (JSON, kebab-case).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Params {
    /// Metric names to watch; empty watches every metric. Default: empty.
    pub metrics: Vec<String>,
    /// Upper threshold, in the metric's unit. Default: none. At least one
    /// of `above` and `below` is required.
    pub above: Option<f64>,
    /// Lower threshold, in the metric's unit (< `above`). Default: none.
    pub below: Option<f64>,
    /// How far back inside a value must come to clear, in the metric's
    /// unit (>= 0). Default 0.
    pub hysteresis: f64,
    /// Severity of `threshold.high` / `threshold.low`. Default "warning".
    pub severity: Severity,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            metrics: Vec::new(),
            above: None,
            below: None,
            hysteresis: 0.0,
            severity: Severity::Warning,
        }
    }
}

impl Params {
    /// Parses and validates params JSON; the error lists every problem.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let p: Params = parse_params(v)?;
        p.validate()?;
        Ok(p)
    }

    /// Every problem with these params, in one message.
    pub fn validate(&self) -> Result<(), String> {
        let mut errs = Vec::new();
        match (self.above, self.below) {
            (None, None) => errs.push("at least one of above and below is required".to_owned()),
            (Some(a), Some(b)) if a.is_finite() && b.is_finite() && b >= a => {
                errs.push(format!("below ({b}) must be less than above ({a})"))
            }
            _ => {}
        }
        for (name, v) in [("above", self.above), ("below", self.below)] {
            if v.is_some_and(|v| !v.is_finite()) {
                errs.push(format!("{name} must be finite"));
            }
        }
        if !(self.hysteresis.is_finite() && self.hysteresis >= 0.0) {
            errs.push(format!(
                "hysteresis must be finite and >= 0, got {}",
                self.hysteresis
            ));
        }
        if self.metrics.iter().any(|m| m.is_empty()) {
            errs.push("metrics must not contain an empty name".to_owned());
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid threshold params: {}", errs.join("; ")))
        }
    }
}

/// Per-series state, persisted in kv: 0 normal, 1 high, 2 low.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Encode, Decode)]
pub struct ThState {
    /// 0 normal, 1 high, 2 low.
    pub level: u8,
}

const NORMAL: u8 = 0;
const HIGH: u8 = 1;
const LOW: u8 = 2;

/// The detector: params plus every series' alarm state.
pub struct Threshold {
    params: Params,
    series: SeriesStore<ThState>,
}

impl Threshold {
    /// A detector with every series normal.
    pub fn new(params: Params) -> Self {
        Threshold {
            params,
            series: SeriesStore::new("t"),
        }
    }
}

impl Detector for Threshold {
    type State = ThState;

    fn series(&mut self) -> &mut SeriesStore<ThState> {
        &mut self.series
    }

    fn watches(&self, name: &str) -> bool {
        watches(&self.params.metrics, name)
    }

    fn step_metric(
        &self,
        record: &TelemetryRecord,
        m: &Metric,
        st: &mut ThState,
        out: &mut Vec<Event>,
    ) {
        let p = &self.params;
        let x = m.value;
        let is_high = p.above.is_some_and(|a| x > a);
        let is_low = p.below.is_some_and(|b| x < b);
        let next = match st.level {
            _ if is_high => HIGH,
            _ if is_low => LOW,
            HIGH if p.above.is_some_and(|a| x > a - p.hysteresis) => HIGH,
            LOW if p.below.is_some_and(|b| x < b + p.hysteresis) => LOW,
            _ => NORMAL,
        };
        if next != st.level {
            let (severity, code, message) = match next {
                HIGH => (
                    p.severity,
                    CODE_HIGH,
                    format!("{} = {x} is above {}", m.name, p.above.unwrap_or_default()),
                ),
                LOW => (
                    p.severity,
                    CODE_LOW,
                    format!("{} = {x} is below {}", m.name, p.below.unwrap_or_default()),
                ),
                _ => (
                    Severity::Info,
                    CODE_CLEARED,
                    format!("{} = {x} is back within its thresholds", m.name),
                ),
            };
            out.push(Event::Alert {
                severity,
                device: record.device.clone(),
                code,
                message,
            });
            st.level = next;
        }
        out.push(Event::Metric {
            device: record.device.clone(),
            name: format!("{}.threshold_state", m.name),
            value: match next {
                HIGH => 1.0,
                LOW => -1.0,
                _ => 0.0,
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_monitor_sdk::{MemKv, Metric};

    fn rec(v: f64) -> TelemetryRecord {
        TelemetryRecord {
            tenant: "acme".into(),
            device: "d1".into(),
            ts_ms: 0,
            seq: None,
            metrics: vec![
                Metric {
                    name: "t".into(),
                    value: v,
                },
                Metric {
                    name: "other".into(),
                    value: 1e9,
                },
            ],
            tags: vec![],
        }
    }

    fn codes(det: &mut Threshold, vals: &[f64]) -> Vec<(usize, &'static str)> {
        let mut out = vec![];
        for (i, v) in vals.iter().enumerate() {
            for e in det.step(&rec(*v)) {
                if let Event::Alert { code, .. } = e {
                    out.push((i, code));
                }
            }
        }
        out
    }

    fn params(json: serde_json::Value) -> Params {
        Params::from_json(&json).unwrap()
    }

    #[test]
    fn hysteresis_stops_flapping() {
        let mut det = Threshold::new(params(
            serde_json::json!({"metrics": ["t"], "above": 30, "hysteresis": 2}),
        ));
        let got = codes(&mut det, &[25.0, 31.0, 29.5, 30.5, 28.5, 29.0, 27.9, 31.0]);
        assert_eq!(got, vec![(1, CODE_HIGH), (6, CODE_CLEARED), (7, CODE_HIGH)]);
    }

    #[test]
    fn low_and_direct_jumps() {
        let mut det = Threshold::new(params(
            serde_json::json!({"metrics": ["t"], "above": 30, "below": 10, "hysteresis": 1}),
        ));
        let got = codes(&mut det, &[20.0, 9.0, 10.5, 40.0, 5.0, 11.0, 12.0]);
        assert_eq!(
            got,
            vec![
                (1, CODE_LOW),
                (3, CODE_HIGH),
                (4, CODE_LOW),
                (5, CODE_CLEARED)
            ]
        );
    }

    #[test]
    fn state_metric_and_severity() {
        let mut det = Threshold::new(params(
            serde_json::json!({"metrics": ["t"], "below": 0, "severity": "critical"}),
        ));
        let ev = det.step(&rec(-1.0));
        assert!(matches!(
            &ev[0],
            Event::Alert {
                severity: Severity::Critical,
                code: CODE_LOW,
                ..
            }
        ));
        assert!(
            matches!(&ev[1], Event::Metric { name, value, .. } if name == "t.threshold_state" && *value == -1.0)
        );
        assert_eq!(ev.len(), 2, "unwatched metric ignored");
    }

    #[test]
    fn restart_does_not_repeat_an_alert() {
        let p = params(serde_json::json!({"metrics": ["t"], "above": 30}));
        let mut kv = MemKv::default();
        let mut a = Threshold::new(p.clone());
        assert_eq!(codes(&mut a, &[31.0]), vec![(0, CODE_HIGH)]);
        assert_eq!(a.series().flush(&mut kv), 0);
        let mut b = Threshold::new(p);
        b.series().preload(&rec(32.0), |m| m == "t", &mut kv);
        assert_eq!(codes(&mut b, &[32.0, 20.0]), vec![(1, CODE_CLEARED)]);
    }

    #[test]
    fn bad_params_are_all_reported() {
        let e = Params::from_json(&serde_json::json!({})).unwrap_err();
        assert!(e.contains("at least one of above and below"), "{e}");
        let e = Params::from_json(&serde_json::json!({"above": 1, "below": 2, "hysteresis": -1}))
            .unwrap_err();
        assert!(
            e.contains("below (2) must be less") && e.contains("hysteresis"),
            "{e}"
        );
        assert!(Params::from_json(&serde_json::json!({"above": 1, "severity": "loud"})).is_err());
    }
}
