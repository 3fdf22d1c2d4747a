//! The autoscaler's input, measured (pure): one workload's running
//! instances, as the regions' edge heartbeats report them, turned into an
//! [`Observation`] of its scale metric.
//!
//! - `records-per-second`: the summed `records_in` counters' increase since
//!   the previous reading, per second. Needs a previous reading; a sum that
//!   went down means an instance restarted (or left) and took its count
//!   with it, so that sample is skipped rather than read as a drop.
//! - `cpu`: the summed `used_cpu_millicores` (a gauge, no history needed).
//! - `queue-depth`: the summed `queue_depth` (records waiting, a gauge).
//!
//! No running instance is no sample (not a total of 0): a workload whose
//! instances are all starting has not shown its load, and a 0 would let
//! the scale-down window release instances it needs.
//!
//! [`StepMean`] averages the samples of each forecast step for the
//! replicated load history.

use std::collections::BTreeMap;

use strata_protocol::monitoring::InstanceStatus;
use strata_sched::scale::{Metric, Observation};
use strata_sched::WorkloadId;

/// The running instances of every workload, from edge statuses.
pub fn running_by_workload<'a>(
    instances: impl IntoIterator<Item = &'a InstanceStatus>,
) -> BTreeMap<WorkloadId, Vec<&'a InstanceStatus>> {
    let mut out: BTreeMap<WorkloadId, Vec<&InstanceStatus>> = BTreeMap::new();
    for i in instances.into_iter().filter(|i| i.state == "running") {
        out.entry(WorkloadId::new(&i.tenant, &i.name))
            .or_default()
            .push(i);
    }
    out
}

/// A cumulative counter reading: what the next `records-per-second`
/// sample is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// When, ms since the epoch (the leader's clock).
    pub at_ms: i64,
    /// Records handed to the workload's running instances, summed.
    pub records: u64,
}

/// Why a round gave the autoscaler no sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoSample {
    /// No instance of the workload is running.
    #[error("no running instance")]
    NoInstances,
    /// A rate needs two readings; this was the first.
    #[error("first reading: a rate needs two")]
    FirstReading,
    /// The summed counter went down: an instance restarted or left.
    #[error("records counter went backwards (an instance restarted or left)")]
    CounterReset,
    /// No time passed since the previous reading (or the clock went back).
    #[error("no time passed since the previous reading")]
    NoTimePassed,
    /// The spec names a metric central does not measure (validation
    /// refuses those; a spec from a newer central could carry one).
    #[error("metric is not measured")]
    UnknownMetric,
}

impl NoSample {
    /// Stable kebab-case name, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            NoSample::NoInstances => "no-instances",
            NoSample::FirstReading => "first-reading",
            NoSample::CounterReset => "counter-reset",
            NoSample::NoTimePassed => "no-time-passed",
            NoSample::UnknownMetric => "unknown-metric",
        }
    }
}

/// One round's result: the sample (or why none) and the reading the next
/// round measures from (`None` when a rate has nothing to start from).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    /// The observation, or why there is none.
    pub sample: Result<Observation, NoSample>,
    /// Keep for the next round.
    pub reading: Option<Reading>,
}

/// Measures `metric` over a workload's `running` instances at `now_ms`,
/// from the `prev` reading (see the module docs).
pub fn sample(
    metric: &Metric,
    now_ms: i64,
    running: &[&InstanceStatus],
    prev: Option<Reading>,
) -> Sampled {
    let instances = u32::try_from(running.len()).unwrap_or(u32::MAX);
    if running.is_empty() {
        // The next instance starts its counter afresh: measure from it.
        return Sampled {
            sample: Err(NoSample::NoInstances),
            reading: None,
        };
    }
    let gauge = |total: f64| Sampled {
        sample: Ok(Observation { total, instances }),
        reading: None,
    };
    match metric {
        Metric::Cpu => gauge(
            running
                .iter()
                .map(|i| f64::from(i.used_cpu_millicores))
                .sum(),
        ),
        // u64 → f64 rounds above 2^53 records, far beyond any queue.
        Metric::QueueDepth => gauge(running.iter().map(|i| i.queue_depth as f64).sum()),
        Metric::RecordsPerSecond => {
            let records = running
                .iter()
                .fold(0u64, |s, i| s.saturating_add(i.records_in));
            let reading = Some(Reading {
                at_ms: now_ms,
                records,
            });
            let sample = match prev {
                None => Err(NoSample::FirstReading),
                Some(p) if records < p.records => Err(NoSample::CounterReset),
                Some(p) if now_ms <= p.at_ms => Err(NoSample::NoTimePassed),
                Some(p) => Ok(Observation {
                    total: (records - p.records) as f64 * 1000.0 / (now_ms - p.at_ms) as f64,
                    instances,
                }),
            };
            // A clock that did not move keeps the older reading, so the
            // next rate spans real time.
            let reading = if sample == Err(NoSample::NoTimePassed) {
                prev
            } else {
                reading
            };
            Sampled { sample, reading }
        }
        Metric::Unknown(_) => Sampled {
            sample: Err(NoSample::UnknownMetric),
            reading: None,
        },
    }
}

/// The mean of the samples taken in each step of `step_ms` (steps are
/// aligned to the epoch, so every replica numbers them alike): what one
/// point of the replicated load history holds.
#[derive(Debug, Clone, PartialEq)]
pub struct StepMean {
    step_ms: u64,
    /// The open step: (its number, sum of samples, count).
    open: Option<(i64, f64, u32)>,
}

impl StepMean {
    /// Averages over steps of `step_ms` (≥ 1).
    pub fn new(step_ms: u64) -> StepMean {
        StepMean {
            step_ms: step_ms.max(1),
            open: None,
        }
    }

    /// The step `at_ms` falls in.
    pub fn step_of(&self, at_ms: i64) -> i64 {
        at_ms.div_euclid(i64::try_from(self.step_ms).unwrap_or(i64::MAX))
    }

    /// Adds a sample at `at_ms`; returns the previous step's (number, mean)
    /// when this sample is the first of a later step. A sample from an
    /// earlier step than the open one is dropped.
    pub fn add(&mut self, at_ms: i64, total: f64) -> Option<(i64, f64)> {
        let step = self.step_of(at_ms);
        match &mut self.open {
            Some((s, sum, n)) if *s == step => {
                *sum += total;
                *n += 1;
                None
            }
            Some((s, _, _)) if *s > step => None,
            open => {
                let done = open.map(|(s, sum, n)| (s, sum / f64::from(n.max(1))));
                *open = Some((step, total, 1));
                done
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(name: &str, state: &str, records_in: u64, cpu: u32, queue: u64) -> InstanceStatus {
        InstanceStatus {
            tenant: "acme".into(),
            name: name.into(),
            state: state.into(),
            records_in,
            used_cpu_millicores: cpu,
            queue_depth: queue,
            ..InstanceStatus::default()
        }
    }

    #[test]
    fn groups_running_instances_by_workload() {
        let all = [
            inst("a", "running", 1, 0, 0),
            inst("a", "pending", 1, 0, 0),
            inst("b", "running", 1, 0, 0),
            inst("a", "running", 1, 0, 0),
        ];
        let by = running_by_workload(&all);
        assert_eq!(by[&WorkloadId::new("acme", "a")].len(), 2);
        assert_eq!(by[&WorkloadId::new("acme", "b")].len(), 1);
    }

    #[test]
    fn records_per_second_is_the_counters_rise_over_time() {
        let (a, b) = (
            inst("w", "running", 100, 0, 0),
            inst("w", "running", 50, 0, 0),
        );
        let first = sample(&Metric::RecordsPerSecond, 1_000, &[&a, &b], None);
        assert_eq!(first.sample, Err(NoSample::FirstReading));
        assert_eq!(
            first.reading,
            Some(Reading {
                at_ms: 1_000,
                records: 150
            })
        );
        let (a, b) = (
            inst("w", "running", 300, 0, 0),
            inst("w", "running", 150, 0, 0),
        );
        let s = sample(&Metric::RecordsPerSecond, 3_000, &[&a, &b], first.reading);
        // 300 more records over 2 s.
        assert_eq!(
            s.sample,
            Ok(Observation {
                total: 150.0,
                instances: 2
            })
        );
        assert_eq!(s.reading.map(|r| r.records), Some(450));
    }

    #[test]
    fn a_counter_that_goes_back_is_skipped_and_measured_from_anew() {
        let prev = Some(Reading {
            at_ms: 0,
            records: 500,
        });
        let restarted = inst("w", "running", 20, 0, 0);
        let s = sample(&Metric::RecordsPerSecond, 1_000, &[&restarted], prev);
        assert_eq!(s.sample, Err(NoSample::CounterReset));
        assert_eq!(s.reading.map(|r| r.records), Some(20));
        // The same clock reading twice: no rate, keep the older reading.
        let again = sample(&Metric::RecordsPerSecond, 1_000, &[&restarted], s.reading);
        assert_eq!(again.sample, Err(NoSample::NoTimePassed));
        assert_eq!(again.reading, s.reading);
    }

    #[test]
    fn cpu_and_queue_depth_are_summed_gauges() {
        let (a, b) = (
            inst("w", "running", 0, 120, 7),
            inst("w", "running", 0, 30, 5),
        );
        let cpu = sample(&Metric::Cpu, 1, &[&a, &b], None);
        assert_eq!(
            cpu.sample,
            Ok(Observation {
                total: 150.0,
                instances: 2
            })
        );
        assert_eq!(cpu.reading, None);
        let q = sample(&Metric::QueueDepth, 1, &[&a, &b], None);
        assert_eq!(q.sample.map(|o| o.total), Ok(12.0));
    }

    #[test]
    fn no_running_instance_is_no_sample_not_zero() {
        let prev = Some(Reading {
            at_ms: 0,
            records: 10,
        });
        for m in [Metric::RecordsPerSecond, Metric::Cpu, Metric::QueueDepth] {
            let s = sample(&m, 1_000, &[], prev);
            assert_eq!(s.sample, Err(NoSample::NoInstances), "{m:?}");
            assert_eq!(s.reading, None, "{m:?}");
        }
        let a = inst("w", "running", 0, 1, 1);
        let s = sample(&Metric::Unknown("gpu".into()), 1, &[&a], None);
        assert_eq!(s.sample, Err(NoSample::UnknownMetric));
    }

    #[test]
    fn step_mean_closes_a_step_on_the_first_sample_of_a_later_one() {
        let mut m = StepMean::new(1_000);
        assert_eq!(m.add(10, 2.0), None);
        assert_eq!(m.add(990, 4.0), None);
        // Late: dropped.
        assert_eq!(m.add(1_500, 9.0), Some((0, 3.0)));
        assert_eq!(m.add(900, 100.0), None);
        assert_eq!(m.add(1_600, 3.0), None);
        // Steps 2-3 had no sample: the next close is step 1's.
        assert_eq!(m.add(4_000, 1.0), Some((1, 6.0)));
        assert_eq!(m.step_of(-1), -1);
    }
}
