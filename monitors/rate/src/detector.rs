//! The rate-of-change monitor's pure core: params and per-record state machine.
//!
//! Per (device, metric) series: `rate = (x - prev) / ((ts - prev_ts) / 1000)`
//! per second, emitted as `<metric>.rate`. A reading whose timestamp is not
//! after the previous one (a duplicate or a reordered retransmission) is
//! ignored. When the rate's magnitude (or only rises / falls, per
//! `direction`) exceeds `max-rate`, alert `rate.exceeded` once per
//! excursion; when it is back at or under `clear-rate`, alert
//! `rate.recovered` (info).

use bincode::{Decode, Encode};
use serde::Deserialize;
use strata_monitor_sdk::{
    parse_params, watches, Detector, Event, Metric, SeriesStore, Severity, TelemetryRecord,
};

/// Alert code: the rate of change went over `max-rate`.
pub const CODE_EXCEEDED: &str = "rate.exceeded";
/// Alert code: the rate is back under `clear-rate`.
pub const CODE_RECOVERED: &str = "rate.recovered";

/// Which changes count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Rises and falls.
    #[default]
    Both,
    /// Rises only.
    Rising,
    /// Falls only.
    Falling,
}

/// The monitor's params (JSON, kebab-case).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Params {
    /// Metric names to watch; empty watches every metric. Default: empty.
    pub metrics: Vec<String>,
    /// Largest allowed change per second, in the metric's unit (> 0).
    /// Required.
    pub max_rate: Option<f64>,
    /// Rate at or under which an excursion clears, per second
    /// (0 <= clear-rate <= max-rate). Default: `max-rate`.
    pub clear_rate: Option<f64>,
    /// "both", "rising" or "falling". Default "both".
    pub direction: Direction,
    /// Severity of `rate.exceeded`. Default "warning".
    pub severity: Severity,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            metrics: Vec::new(),
            max_rate: None,
            clear_rate: None,
            direction: Direction::Both,
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
        match self.max_rate {
            None => errs.push("max-rate (change per second) is required".to_owned()),
            Some(m) if !(m.is_finite() && m > 0.0) => {
                errs.push(format!("max-rate must be finite and > 0, got {m}"))
            }
            Some(m) => {
                if let Some(c) = self.clear_rate {
                    if !(c.is_finite() && (0.0..=m).contains(&c)) {
                        errs.push(format!("clear-rate must be in 0..=max-rate ({m}), got {c}"));
                    }
                }
            }
        }
        if self.metrics.iter().any(|m| m.is_empty()) {
            errs.push("metrics must not contain an empty name".to_owned());
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid rate params: {}", errs.join("; ")))
        }
    }
}

/// Per-series state, persisted in kv.
#[derive(Debug, Clone, Copy, Default, PartialEq, Encode, Decode)]
pub struct RateState {
    /// A previous reading exists.
    pub seen: bool,
    /// Its value.
    pub value: f64,
    /// Its timestamp, ms.
    pub ts_ms: i64,
    /// In an excursion.
    pub active: bool,
}

/// The detector: params plus every series' previous reading.
pub struct Rate {
    params: Params,
    max: f64,
    clear: f64,
    series: SeriesStore<RateState>,
}

impl Rate {
    /// A detector with no history (params already validated).
    pub fn new(params: Params) -> Self {
        let max = params.max_rate.unwrap_or(f64::INFINITY);
        let clear = params.clear_rate.unwrap_or(max);
        Rate {
            params,
            max,
            clear,
            series: SeriesStore::new("r"),
        }
    }
}

impl Detector for Rate {
    type State = RateState;

    fn series(&mut self) -> &mut SeriesStore<RateState> {
        &mut self.series
    }

    fn watches(&self, name: &str) -> bool {
        watches(&self.params.metrics, name)
    }

    fn step_metric(
        &self,
        record: &TelemetryRecord,
        m: &Metric,
        st: &mut RateState,
        out: &mut Vec<Event>,
    ) {
        let p = &self.params;
        let (x, ts) = (m.value, record.ts_ms);
        if st.seen && ts <= st.ts_ms {
            return;
        }
        let prev = *st;
        *st = RateState {
            seen: true,
            value: x,
            ts_ms: ts,
            active: prev.active,
        };
        if !prev.seen {
            return;
        }
        let dt_s = (ts - prev.ts_ms) as f64 / 1000.0;
        let rate = (x - prev.value) / dt_s;
        let signed = match p.direction {
            Direction::Both => rate.abs(),
            Direction::Rising => rate,
            Direction::Falling => -rate,
        };
        out.push(Event::Metric {
            device: record.device.clone(),
            name: format!("{}.rate", m.name),
            value: rate,
        });
        if !st.active && signed > self.max {
            st.active = true;
            out.push(Event::Alert {
                severity: p.severity,
                device: record.device.clone(),
                code: CODE_EXCEEDED,
                message: format!(
                    "{} changed {} -> {x} in {dt_s} s: {rate:.3}/s, limit {}/s",
                    m.name, prev.value, self.max
                ),
            });
        } else if st.active && signed <= self.clear {
            st.active = false;
            out.push(Event::Alert {
                severity: Severity::Info,
                device: record.device.clone(),
                code: CODE_RECOVERED,
                message: format!("{} rate {rate:.3}/s is back under {}/s", m.name, self.clear),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_monitor_sdk::{MemKv, Metric};

    fn rec(ts_ms: i64, v: f64) -> TelemetryRecord {
        TelemetryRecord {
            tenant: "acme".into(),
            device: "d1".into(),
            ts_ms,
            seq: None,
            metrics: vec![Metric {
                name: "t".into(),
                value: v,
            }],
            tags: vec![],
        }
    }

    fn run(det: &mut Rate, recs: &[(i64, f64)]) -> (Vec<(usize, &'static str)>, Vec<f64>) {
        let (mut a, mut rates) = (vec![], vec![]);
        for (i, (ts, v)) in recs.iter().enumerate() {
            for e in det.step(&rec(*ts, *v)) {
                match e {
                    Event::Alert { code, .. } => a.push((i, code)),
                    Event::Metric { value, .. } => rates.push(value),
                }
            }
        }
        (a, rates)
    }

    fn det(json: serde_json::Value) -> Rate {
        Rate::new(Params::from_json(&json).unwrap())
    }

    #[test]
    fn rate_uses_timestamps_and_alerts_once_per_excursion() {
        let mut d = det(serde_json::json!({"max-rate": 5, "clear-rate": 1}));
        let (a, rates) = run(
            &mut d,
            &[
                (0, 10.0),
                (2000, 14.0),
                (3000, 24.0),
                (4000, 30.0),
                (5000, 32.0),
                (6000, 32.5),
            ],
        );
        assert_eq!(rates, vec![2.0, 10.0, 6.0, 2.0, 0.5]);
        assert_eq!(a, vec![(2, CODE_EXCEEDED), (5, CODE_RECOVERED)]);
    }

    #[test]
    fn duplicates_and_reordered_readings_are_ignored() {
        let mut d = det(serde_json::json!({"max-rate": 5}));
        let (a, rates) = run(
            &mut d,
            &[(1000, 1.0), (1000, 100.0), (500, 100.0), (2000, 2.0)],
        );
        assert_eq!(rates, vec![1.0]);
        assert!(a.is_empty());
    }

    #[test]
    fn direction_filters() {
        let mut d = det(serde_json::json!({"max-rate": 5, "direction": "falling"}));
        let (a, _) = run(&mut d, &[(0, 0.0), (1000, 100.0), (2000, 0.0)]);
        assert_eq!(a, vec![(2, CODE_EXCEEDED)]);
    }

    #[test]
    fn previous_reading_survives_restart() {
        let p = Params::from_json(&serde_json::json!({"max-rate": 5})).unwrap();
        let mut kv = MemKv::default();
        let mut a = Rate::new(p.clone());
        run(&mut a, &[(0, 0.0)]);
        assert_eq!(a.series().flush(&mut kv), 0);
        let mut b = Rate::new(p);
        b.series().preload(&rec(1000, 50.0), |_| true, &mut kv);
        assert_eq!(run(&mut b, &[(1000, 50.0)]).0, vec![(0, CODE_EXCEEDED)]);
    }

    #[test]
    fn firmware_sim_temperature_spike_exceeds_and_noise_does_not() {
        use crate::sim_data::{record, Spike};
        for seed in 1..=3 {
            let mut d = det(serde_json::json!({"metrics": ["temperature"], "max-rate": 5}));
            let spike = Spike {
                start: 800,
                duration: 5,
                sensor: 2,
                magnitude: 40.0,
            };
            let mut got = vec![];
            for i in 0..1500 {
                for e in d.step(&record(seed, 1, i, &[2], Some(spike))) {
                    if let Event::Alert { code, .. } = e {
                        got.push((i, code));
                    }
                }
            }
            // Each edge of the spike is one excursion: the jump up at 800
            // and the drop at 805, each calm again on the next reading.
            let want = vec![
                (800, CODE_EXCEEDED),
                (801, CODE_RECOVERED),
                (805, CODE_EXCEEDED),
                (806, CODE_RECOVERED),
            ];
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn bad_params() {
        let e = Params::from_json(&serde_json::json!({})).unwrap_err();
        assert!(e.contains("max-rate"), "{e}");
        let e =
            Params::from_json(&serde_json::json!({"max-rate": 1, "clear-rate": 2})).unwrap_err();
        assert!(e.contains("clear-rate"), "{e}");
        assert!(Params::from_json(&serde_json::json!({"max-rate": 1, "direction": "up"})).is_err());
    }
}
