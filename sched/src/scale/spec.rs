//! [`ScaleSpec`]: how a workload asks to be autoscaled, and
//! [`ScaleSpec::validate`], which reports every bad field at once.
//!
//! ```toml
//! scale = { min = 1, max = 8, metric = "records-per-second", target = 500 }
//! # optional, with their defaults:
//! # tolerance = 0.1, scale-up-window = "0s", scale-down-window = "5m",
//! # max-step-up and max-step-down unset (no limit; 4 = instances, "50%" = percent),
//! # cooldown = "0s"
//! ```
//!
//! Parsing checks only shape: an unknown metric or a malformed step parses
//! (as [`Metric::Unknown`], [`Step::Invalid`]) so that validation names it
//! together with every other problem. Field paths are absolute under the
//! spec's `scale` key (`scale.min`), as a workload spec writes them.

use std::fmt;
use std::time::Duration;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::intent::{FieldError, MAX_COUNT};

/// Largest `max`: the same bound as a placement intent's `count`.
pub const MAX_INSTANCES: u32 = MAX_COUNT;
/// Largest `tolerance`: a wider band would let each instance run at half or
/// twice its target without any scaling, which is no longer autoscaling.
pub const MAX_TOLERANCE: f64 = 0.5;
/// Longest `scale-up-window`, `scale-down-window` and `cooldown`. Also
/// bounds how long the autoscaler keeps samples.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// Largest percent `max-step-up` (10×: a surge may grow a workload tenfold
/// per decision).
pub const MAX_STEP_UP_PERCENT: u32 = 1000;
/// Default `tolerance`: ±10 %.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// Default `scale-down-window`, Kubernetes' default: long enough that a
/// dip between two bursts does not release instances the next burst needs.
pub const DEFAULT_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);

/// A workload's autoscaling: keep `metric` per instance near `target` by
/// running between `min` and `max` instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScaleSpec {
    /// Fewest instances, at least 1 (at zero no instance would report the
    /// demand that should wake the workload). Default 1.
    #[serde(default = "default_min")]
    pub min: u32,
    /// Most instances, `min`..=[`MAX_INSTANCES`]. Required.
    pub max: u32,
    /// What is measured. Required.
    pub metric: Metric,
    /// The metric's wanted value per instance, in the metric's unit
    /// (records/s, millicores, pending records); finite and above 0.
    /// Required.
    pub target: f64,
    /// Relative band around `target` inside which nothing changes: 0.1
    /// holds while the per-instance value is within ±10 % of target.
    /// 0..=[`MAX_TOLERANCE`]. Default 0.1.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// A scale-up acts on the highest recommendation of this window, so a
    /// burst between two decisions still counts. At most
    /// `scale-down-window` (a longer one would scale up on a peak that
    /// scale-down has already let go of, and flap). Default 0 s: the
    /// newest sample only.
    #[serde(default, with = "humantime_serde")]
    pub scale_up_window: Duration,
    /// A scale-down goes only as low as the highest recommendation of this
    /// window, so instances are released once load has stayed low this
    /// long. At most [`MAX_WINDOW`]. Default 5 min.
    #[serde(default = "default_scale_down_window", with = "humantime_serde")]
    pub scale_down_window: Duration,
    /// Most instances added by one decision: a count (`4`) or a percent of
    /// the current count (`"100%"`, rounded up, at least 1). Default unset:
    /// no limit, `max` bounds it.
    #[serde(default)]
    pub max_step_up: Option<Step>,
    /// Most instances removed by one decision, as `max-step-up` (percent at
    /// most 100). Default unset: no limit, `min` bounds it.
    #[serde(default)]
    pub max_step_down: Option<Step>,
    /// After a change, no further change for this long, either way (new
    /// instances need time to start and drain a backlog before their
    /// counters mean anything). At most [`MAX_WINDOW`]. Default 0 s: the
    /// windows already damp flapping.
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Duration,
}

fn default_min() -> u32 {
    1
}

fn default_tolerance() -> f64 {
    DEFAULT_TOLERANCE
}

fn default_scale_down_window() -> Duration {
    DEFAULT_SCALE_DOWN_WINDOW
}

impl ScaleSpec {
    /// `min..=max` instances keeping `metric` near `target`, every optional
    /// knob at its default.
    pub fn new(min: u32, max: u32, metric: Metric, target: f64) -> Self {
        ScaleSpec {
            min,
            max,
            metric,
            target,
            tolerance: DEFAULT_TOLERANCE,
            scale_up_window: Duration::ZERO,
            scale_down_window: DEFAULT_SCALE_DOWN_WINDOW,
            max_step_up: None,
            max_step_down: None,
            cooldown: Duration::ZERO,
        }
    }
}

/// The measured quantity. Every metric is additive over instances: the
/// autoscaler is given the workload's total and divides by `target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(from = "String", into = "String")]
pub enum Metric {
    /// `records-per-second`: records processed per second; `target` is per
    /// instance.
    RecordsPerSecond,
    /// `cpu`: CPU used, in millicores (1000 = one core); `target` is per
    /// instance. Millicores rather than percent because they add up over
    /// instances and do not depend on each instance's reservation.
    Cpu,
    /// `queue-depth`: records waiting to be processed; `target` is the
    /// backlog one instance may have.
    QueueDepth,
    /// Anything else; refused by validation.
    Unknown(String),
}

impl Metric {
    /// The metric as written in specs.
    pub fn as_str(&self) -> &str {
        match self {
            Metric::RecordsPerSecond => "records-per-second",
            Metric::Cpu => "cpu",
            Metric::QueueDepth => "queue-depth",
            Metric::Unknown(s) => s,
        }
    }
}

impl From<String> for Metric {
    fn from(s: String) -> Self {
        match s.as_str() {
            "records-per-second" => Metric::RecordsPerSecond,
            "cpu" => Metric::Cpu,
            "queue-depth" => Metric::QueueDepth,
            _ => Metric::Unknown(s),
        }
    }
}

impl From<Metric> for String {
    fn from(m: Metric) -> String {
        m.as_str().to_owned()
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step limit: a number of instances (written `4`) or a percent of the
/// current count (written `"50%"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(from = "StepRepr", into = "StepRepr")]
pub enum Step {
    /// At most this many instances.
    Instances(u32),
    /// At most this percent of the current count, rounded up, at least one.
    Percent(u32),
    /// Text that is not `"<n>%"`; refused by validation.
    Invalid(String),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StepRepr {
    Instances(u32),
    Text(String),
}

impl From<StepRepr> for Step {
    fn from(r: StepRepr) -> Self {
        match r {
            StepRepr::Instances(n) => Step::Instances(n),
            StepRepr::Text(s) => match s.strip_suffix('%').map(|p| p.trim().parse::<u32>()) {
                Some(Ok(p)) => Step::Percent(p),
                _ => Step::Invalid(s),
            },
        }
    }
}

impl From<Step> for StepRepr {
    fn from(s: Step) -> Self {
        match s {
            Step::Instances(n) => StepRepr::Instances(n),
            Step::Percent(p) => StepRepr::Text(format!("{p}%")),
            Step::Invalid(s) => StepRepr::Text(s),
        }
    }
}

impl Step {
    /// How many instances this step allows from `current`. Only called on
    /// a validated spec in practice; an invalid step allows nothing.
    pub fn allows(&self, current: u32) -> u32 {
        match self {
            Step::Instances(n) => *n,
            Step::Percent(p) => {
                let n = (u64::from(current) * u64::from(*p)).div_ceil(100);
                u32::try_from(n).unwrap_or(u32::MAX).max(1)
            }
            Step::Invalid(_) => 0,
        }
    }
}

/// Every bad field of one scale spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, thiserror::Error)]
pub struct ScaleErrors(pub Vec<FieldError>);

impl fmt::Display for ScaleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::intent::write_field_errors(f, "invalid scale spec", &self.0)
    }
}

impl ScaleErrors {
    /// The fields at fault, in report order.
    pub fn fields(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.field.as_str()).collect()
    }
}

fn dur(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

impl ScaleSpec {
    /// Checks every field and returns all problems at once, each under its
    /// path (`scale.min`).
    pub fn validate(&self) -> Result<(), ScaleErrors> {
        let mut errs = Vec::new();
        let mut bad = |field: &str, message: String| {
            errs.push(FieldError {
                field: format!("scale.{field}"),
                message,
            })
        };
        if self.min == 0 {
            bad(
                "min",
                "must be at least 1: with no instance running, no counter reports the demand that would scale it up".to_owned(),
            );
        }
        if self.max > MAX_INSTANCES {
            bad(
                "max",
                format!("{} is over the limit of {MAX_INSTANCES}", self.max),
            );
        } else if self.max < self.min {
            bad("max", format!("{} is below min ({})", self.max, self.min));
        }
        if let Metric::Unknown(m) = &self.metric {
            bad(
                "metric",
                format!("unknown metric {m:?}; use one of records-per-second, cpu, queue-depth"),
            );
        }
        // NaN fails `is_finite`.
        if !self.target.is_finite() || self.target <= 0.0 {
            bad(
                "target",
                format!("{} must be a finite number above 0", self.target),
            );
        }
        if !(0.0..=MAX_TOLERANCE).contains(&self.tolerance) {
            bad(
                "tolerance",
                format!("{} must be 0-{MAX_TOLERANCE}", self.tolerance),
            );
        }
        if self.scale_down_window > MAX_WINDOW {
            bad(
                "scale-down-window",
                format!(
                    "{} is over the maximum of {}",
                    dur(self.scale_down_window),
                    dur(MAX_WINDOW)
                ),
            );
        }
        if self.scale_up_window > self.scale_down_window {
            bad(
                "scale-up-window",
                format!(
                    "{} is longer than scale-down-window ({}): a peak would keep scaling up after scale-down let go of it, and flap",
                    dur(self.scale_up_window),
                    dur(self.scale_down_window)
                ),
            );
        }
        if self.cooldown > MAX_WINDOW {
            bad(
                "cooldown",
                format!(
                    "{} is over the maximum of {}",
                    dur(self.cooldown),
                    dur(MAX_WINDOW)
                ),
            );
        }
        for (field, step, max_percent) in [
            ("max-step-up", &self.max_step_up, MAX_STEP_UP_PERCENT),
            ("max-step-down", &self.max_step_down, 100),
        ] {
            match step {
                None => {}
                Some(Step::Instances(n)) if *n == 0 || *n > MAX_INSTANCES => bad(
                    field,
                    format!("{n} instances must be 1-{MAX_INSTANCES}: 0 would never scale"),
                ),
                Some(Step::Percent(p)) if *p == 0 || *p > max_percent => {
                    bad(field, format!("{p}% must be 1-{max_percent}%"))
                }
                Some(Step::Invalid(s)) => bad(
                    field,
                    format!("{s:?} is neither a number of instances nor a percent like \"50%\""),
                ),
                Some(_) => {}
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ScaleErrors(errs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Spec {
        scale: ScaleSpec,
    }

    fn parse(text: &str) -> ScaleSpec {
        toml::from_str::<Spec>(text).unwrap().scale
    }

    #[test]
    fn the_issue_example_parses_with_documented_defaults() {
        let s =
            parse(r#"scale = { min = 1, max = 8, metric = "records-per-second", target = 500 }"#);
        assert_eq!(
            s,
            ScaleSpec::new(1, 8, Metric::RecordsPerSecond, 500.0),
            "every optional knob at its default"
        );
        assert_eq!(s.tolerance, 0.1);
        assert_eq!(s.scale_down_window, Duration::from_secs(300));
        assert_eq!(s.scale_up_window, Duration::ZERO);
        assert_eq!(s.cooldown, Duration::ZERO);
        s.validate().unwrap();
        // min defaults to 1.
        assert_eq!(
            parse(r#"scale = { max = 3, metric = "cpu", target = 800 }"#).min,
            1
        );
    }

    #[test]
    fn every_knob_round_trips_through_toml_json_and_bincode() {
        let s = parse(
            r#"
[scale]
min = 2
max = 40
metric = "queue-depth"
target = 1000.5
tolerance = 0.05
scale-up-window = "15s"
scale-down-window = "10m"
max-step-up = "200%"
max-step-down = 3
cooldown = "1m"
"#,
        );
        assert_eq!(s.metric, Metric::QueueDepth);
        assert_eq!(s.max_step_up, Some(Step::Percent(200)));
        assert_eq!(s.max_step_down, Some(Step::Instances(3)));
        assert_eq!(s.scale_up_window, Duration::from_secs(15));
        assert_eq!(s.cooldown, Duration::from_secs(60));
        s.validate().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"max-step-up\":\"200%\""), "{json}");
        assert!(json.contains("\"scale-down-window\":\"10m\""), "{json}");
        assert_eq!(serde_json::from_str::<ScaleSpec>(&json).unwrap(), s);
        let cfg = bincode::config::standard();
        let bytes = bincode::encode_to_vec(&s, cfg).unwrap();
        let (back, _): (ScaleSpec, _) = bincode::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn unknown_keys_are_refused_by_the_parser() {
        assert!(toml::from_str::<Spec>(
            r#"scale = { max = 3, metric = "cpu", target = 1, mni = 2 }"#
        )
        .is_err());
        assert!(
            toml::from_str::<Spec>(r#"scale = { metric = "cpu", target = 1 }"#).is_err(),
            "max is required"
        );
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let s = parse(
            r#"
[scale]
min = 9
max = 8
metric = "temperature"
target = -1
tolerance = 0.9
scale-up-window = "20m"
scale-down-window = "10m"
max-step-up = "lots"
max-step-down = "150%"
cooldown = "2h"
"#,
        );
        let e = s.validate().unwrap_err();
        assert_eq!(
            e.fields(),
            vec![
                "scale.max",
                "scale.metric",
                "scale.target",
                "scale.tolerance",
                "scale.scale-up-window",
                "scale.cooldown",
                "scale.max-step-up",
                "scale.max-step-down",
            ],
            "{e}"
        );
        let text = e.to_string();
        assert!(text.contains("8 is below min (9)"), "{text}");
        assert!(text.contains("unknown metric \"temperature\""), "{text}");
        assert!(text.contains("\"lots\" is neither"), "{text}");
    }

    #[test]
    fn bounds_are_refused_with_reasons() {
        let mut s = ScaleSpec::new(0, MAX_INSTANCES + 1, Metric::Cpu, f64::NAN);
        s.scale_down_window = MAX_WINDOW + Duration::from_secs(1);
        s.scale_up_window = Duration::from_secs(1);
        s.max_step_up = Some(Step::Instances(0));
        s.max_step_down = Some(Step::Percent(0));
        let e = s.validate().unwrap_err();
        assert_eq!(
            e.fields(),
            vec![
                "scale.min",
                "scale.max",
                "scale.target",
                "scale.scale-down-window",
                "scale.max-step-up",
                "scale.max-step-down",
            ],
            "{e}"
        );
        assert!(e.to_string().contains("over the limit of 10000"), "{e}");
        for target in [0.0, f64::INFINITY, -0.0] {
            let s = ScaleSpec::new(1, 2, Metric::Cpu, target);
            assert_eq!(s.validate().unwrap_err().fields(), vec!["scale.target"]);
        }
        // The edges of every range are accepted.
        let mut s = ScaleSpec::new(1, MAX_INSTANCES, Metric::Cpu, f64::MIN_POSITIVE);
        s.tolerance = MAX_TOLERANCE;
        s.scale_up_window = MAX_WINDOW;
        s.scale_down_window = MAX_WINDOW;
        s.cooldown = MAX_WINDOW;
        s.max_step_up = Some(Step::Percent(MAX_STEP_UP_PERCENT));
        s.max_step_down = Some(Step::Instances(MAX_INSTANCES));
        s.validate().unwrap();
        s.tolerance = 0.0;
        s.max_step_down = Some(Step::Percent(100));
        s.validate().unwrap();
    }

    #[test]
    fn steps_allow_instances_or_a_rounded_up_percent_of_at_least_one() {
        assert_eq!(Step::Instances(3).allows(100), 3);
        assert_eq!(Step::Percent(50).allows(5), 3, "2.5 rounds up");
        assert_eq!(Step::Percent(10).allows(1), 1, "never 0");
        assert_eq!(Step::Percent(100).allows(4), 4);
        assert_eq!(
            Step::Percent(1000).allows(MAX_INSTANCES),
            10 * MAX_INSTANCES
        );
        assert_eq!(Step::from(StepRepr::Text("25 %".into())), Step::Percent(25));
        assert_eq!(
            Step::from(StepRepr::Text("-5%".into())),
            Step::Invalid("-5%".into())
        );
    }
}
