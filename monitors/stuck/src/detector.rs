//! The stuck-sensor detector's pure core: params and per-record state machine.
//!
//! Per (device, metric) series: a run is the readings since the value last
//! moved more than `tolerance` away from the run's first value. When a run
//! reaches `count` readings, alert `stuck.detected` (once); the first reading
//! that leaves the run after that alerts `stuck.recovered` (info) and starts
//! a new run. Every reading emits `<metric>.stuck_run` (the run length).

use bincode::{Decode, Encode};
use serde::Deserialize;
use strata_monitor_sdk::{
    parse_params, watches, Detector, Event, Metric, SeriesStore, Severity, TelemetryRecord,
};

/// Alert code: the same value `count` times in a row.
pub const CODE_STUCK: &str = "stuck.detected";
/// Alert code: a stuck series moved again.
pub const CODE_RECOVERED: &str = "stuck.recovered";

/// The monitor's params (JSON, kebab-case; every field optional).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Params {
    /// Metric names to watch; empty watches every metric. Default: empty.
    pub metrics: Vec<String>,
    /// Readings in a row with the same value that count as stuck
    /// (2 to 1000000). Default 10.
    pub count: u32,
    /// Largest difference from the run's first value still counted as the
    /// same, in the metric's unit (>= 0). Default 0 (exactly equal).
    pub tolerance: f64,
    /// Severity of `stuck.detected`. Default "warning".
    pub severity: Severity,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            metrics: Vec::new(),
            count: 10,
            tolerance: 0.0,
            severity: Severity::Warning,
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
        if !(2..=1_000_000).contains(&self.count) {
            errs.push(format!(
                "count must be 2..=1000000 readings, got {}",
                self.count
            ));
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            errs.push(format!(
                "tolerance must be finite and >= 0, got {}",
                self.tolerance
            ));
        }
        if self.metrics.iter().any(|m| m.is_empty()) {
            errs.push("metrics must not contain an empty name".to_owned());
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid stuck params: {}", errs.join("; ")))
        }
    }
}

/// Per-series state, persisted in kv.
#[derive(Debug, Clone, Copy, Default, PartialEq, Encode, Decode)]
pub struct StuckState {
    /// The run's first value.
    pub anchor: f64,
    /// Readings in the run (0: no reading yet).
    pub run: u32,
    /// `stuck.detected` was raised for this run.
    pub alerted: bool,
}

/// The detector: params plus every series' run.
pub struct Stuck {
    params: Params,
    series: SeriesStore<StuckState>,
}

impl Stuck {
    /// A detector with no history.
    pub fn new(params: Params) -> Self {
        Stuck {
            params,
            series: SeriesStore::new("s"),
        }
    }
}

impl Detector for Stuck {
    type State = StuckState;

    fn series(&mut self) -> &mut SeriesStore<StuckState> {
        &mut self.series
    }

    fn watches(&self, name: &str) -> bool {
        watches(&self.params.metrics, name)
    }

    fn step_metric(
        &self,
        record: &TelemetryRecord,
        m: &Metric,
        st: &mut StuckState,
        out: &mut Vec<Event>,
    ) {
        let p = &self.params;
        let x = m.value;
        if st.run > 0 && (x - st.anchor).abs() <= p.tolerance {
            st.run = st.run.saturating_add(1);
        } else {
            if st.alerted {
                out.push(Event::Alert {
                    severity: Severity::Info,
                    device: record.device.clone(),
                    code: CODE_RECOVERED,
                    message: format!(
                        "{} moved to {x} after {} readings at {}",
                        m.name, st.run, st.anchor
                    ),
                });
            }
            *st = StuckState {
                anchor: x,
                run: 1,
                alerted: false,
            };
        }
        if st.run >= p.count && !st.alerted {
            st.alerted = true;
            out.push(Event::Alert {
                severity: p.severity,
                device: record.device.clone(),
                code: CODE_STUCK,
                message: format!(
                    "{} has read {} for {} readings in a row",
                    m.name, st.anchor, st.run
                ),
            });
        }
        out.push(Event::Metric {
            device: record.device.clone(),
            name: format!("{}.stuck_run", m.name),
            value: f64::from(st.run),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim_data::{base_values, record};
    use strata_monitor_sdk::{MemKv, Metric};

    fn rec(v: f64) -> TelemetryRecord {
        TelemetryRecord {
            tenant: "acme".into(),
            device: "d1".into(),
            ts_ms: 0,
            seq: None,
            metrics: vec![Metric {
                name: "t".into(),
                value: v,
            }],
            tags: vec![],
        }
    }

    fn alerts(
        det: &mut Stuck,
        recs: impl IntoIterator<Item = TelemetryRecord>,
    ) -> Vec<(usize, String, &'static str)> {
        let mut out = vec![];
        for (i, r) in recs.into_iter().enumerate() {
            for e in det.step(&r) {
                if let Event::Alert { code, device, .. } = e {
                    out.push((i, device, code));
                }
            }
        }
        out
    }

    #[test]
    fn n_equal_readings_alert_once_then_recover() {
        let mut det = Stuck::new(Params::from_json(&serde_json::json!({"count": 3})).unwrap());
        let got = alerts(&mut det, [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0].map(rec));
        assert_eq!(
            got,
            vec![
                (3, "d1".into(), CODE_STUCK),
                (6, "d1".into(), CODE_RECOVERED)
            ]
        );
    }

    #[test]
    fn tolerance_is_measured_from_the_run_start() {
        let mut det = Stuck::new(
            Params::from_json(&serde_json::json!({"count": 3, "tolerance": 0.1})).unwrap(),
        );
        // A slow drift of 0.06 per reading leaves the band after two steps.
        let got = alerts(&mut det, [1.0, 1.06, 1.12, 1.18, 1.24].map(rec));
        assert!(got.is_empty(), "{got:?}");
        let got = alerts(&mut det, [5.0, 5.05, 4.95].map(rec));
        assert_eq!(got, vec![(2, "d1".into(), CODE_STUCK)]);
    }

    #[test]
    fn firmware_sim_stuck_window_is_caught_and_normal_data_is_not() {
        // firmware-sim's `stuck` freezes every metric at the window start's
        // undisturbed value.
        for seed in 1..=3u64 {
            let mut det = Stuck::new(Params::default());
            for d in 0..10 {
                let recs = (0..3000).map(|i| {
                    let mut r = record(seed, d, i, &[0, 1, 2, 3], None);
                    if d == 4 && (1000..1030).contains(&i) {
                        for (k, m) in r.metrics.iter_mut().enumerate() {
                            m.value = base_values(seed, d, 1000)[k];
                        }
                    }
                    r
                });
                let got = alerts(&mut det, recs);
                if d == 4 {
                    let stuck: Vec<_> = got
                        .iter()
                        .filter(|a| a.2 == CODE_STUCK)
                        .map(|a| a.0)
                        .collect();
                    assert_eq!(stuck, vec![1009; 4], "seed {seed}: {got:?}");
                    assert_eq!(
                        got.iter()
                            .filter(|a| a.2 == CODE_RECOVERED && a.0 == 1030)
                            .count(),
                        4
                    );
                } else {
                    assert!(got.is_empty(), "seed {seed} device {d}: {got:?}");
                }
            }
        }
    }

    #[test]
    fn run_survives_restart() {
        let p = Params::from_json(&serde_json::json!({"count": 4})).unwrap();
        let mut kv = MemKv::default();
        let mut a = Stuck::new(p.clone());
        assert!(alerts(&mut a, [7.0, 7.0].map(rec)).is_empty());
        assert_eq!(a.series().flush(&mut kv), 0);
        let mut b = Stuck::new(p);
        b.series().preload(&rec(7.0), |_| true, &mut kv);
        assert_eq!(
            alerts(&mut b, [7.0, 7.0].map(rec)),
            vec![(1, "d1".into(), CODE_STUCK)]
        );
    }

    #[test]
    fn bad_params() {
        let e = Params::from_json(&serde_json::json!({"count": 1, "tolerance": -1})).unwrap_err();
        assert!(e.contains("count") && e.contains("tolerance"), "{e}");
    }
}
