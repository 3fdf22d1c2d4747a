//! Per-(device, metric) detector state, kept in memory and persisted in kv.
//!
//! A detector's pure core reads and writes its state through
//! [`SeriesStore::get_mut`] with no IO. Around it, [`run_batch`] loads the
//! state of series not yet in memory from kv before each record (so a
//! restarted or moved instance continues where it was), and writes back the
//! series a batch changed once at the end of the batch: one kv write per
//! changed series per batch, not per record.

use std::collections::BTreeMap;

use strata_protocol::telemetry::{Metric, TelemetryRecord};

use crate::ctx::{Ctx, Kv};
use crate::{Event, LogLevel, MAX_KEY_LEN};

/// A detector with a pure per-record core and per-series state.
pub trait Detector {
    /// The state kept per (device, metric).
    type State: bincode::Encode + bincode::Decode<()> + Default;
    /// Where that state lives.
    fn series(&mut self) -> &mut SeriesStore<Self::State>;
    /// Whether the detector looks at metric `name` (unwatched metrics get
    /// no state).
    fn watches(&self, name: &str) -> bool;
    /// Decides what one reading of one watched metric means, given (and
    /// updating) that series' state. Pure: reads only `self`'s parameters.
    fn step_metric(
        &self,
        record: &TelemetryRecord,
        metric: &Metric,
        state: &mut Self::State,
        out: &mut Vec<Event>,
    );
    /// Decides what one record means: [`Detector::step_metric`] for each
    /// watched metric, with its series' state.
    fn step(&mut self, record: &TelemetryRecord) -> Vec<Event> {
        let mut out = Vec::new();
        for m in &record.metrics {
            if !self.watches(&m.name) {
                continue;
            }
            // Taken out and put back so step_metric can read `self` while
            // it changes the state.
            let mut st = std::mem::take(self.series().get_mut(&record.device, &m.name));
            self.step_metric(record, m, &mut st, &mut out);
            *self.series().get_mut(&record.device, &m.name) = st;
        }
        out
    }
}

/// Feeds a batch through a detector: load state, step, emit, persist.
pub fn run_batch<D: Detector>(det: &mut D, records: &[TelemetryRecord], ctx: &mut Ctx) {
    for r in records {
        let mut load = std::mem::take(det.series());
        load.preload(r, |m| det.watches(m), ctx);
        *det.series() = load;
        for ev in det.step(r) {
            ctx.emit(ev);
        }
    }
    let failed = det.series().flush(ctx);
    if failed > 0 {
        ctx.log(
            LogLevel::Warn,
            &format!("kv: state of {failed} series not persisted (quota); kept in memory, retried next batch"),
        );
    }
}

fn series_key(prefix: &str, device: &str, metric: &str) -> String {
    let k = format!("{prefix}/{device}/{metric}");
    if k.len() <= MAX_KEY_LEN {
        return k;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in k.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{prefix}#{h:016x}")
}

struct Slot<S> {
    state: S,
    dirty: bool,
}

/// State per (device, metric), with the kv key prefix that names it.
pub struct SeriesStore<S> {
    prefix: &'static str,
    map: BTreeMap<String, BTreeMap<String, Slot<S>>>,
}

impl<S> Default for SeriesStore<S> {
    fn default() -> Self {
        SeriesStore {
            prefix: "",
            map: BTreeMap::new(),
        }
    }
}

impl<S: bincode::Encode + bincode::Decode<()> + Default> SeriesStore<S> {
    /// An empty store whose kv keys start with `prefix`.
    pub fn new(prefix: &'static str) -> Self {
        SeriesStore {
            prefix,
            map: BTreeMap::new(),
        }
    }

    /// The kv key of a series: `<prefix>/<device>/<metric>`, or
    /// `<prefix>#<fnv64 hex>` of that when it would exceed [`MAX_KEY_LEN`].
    pub fn key(&self, device: &str, metric: &str) -> String {
        series_key(self.prefix, device, metric)
    }

    /// Loads from `kv` the state of every watched metric of `record` not yet
    /// in memory (absent or undecodable: the default state).
    pub fn preload(
        &mut self,
        record: &TelemetryRecord,
        watches: impl Fn(&str) -> bool,
        kv: &mut impl Kv,
    ) {
        for m in &record.metrics {
            if !watches(&m.name) || self.contains(&record.device, &m.name) {
                continue;
            }
            let state = kv
                .get(&self.key(&record.device, &m.name))
                .and_then(|b| bincode::decode_from_slice(&b, bincode::config::standard()).ok())
                .map(|(s, _)| s)
                .unwrap_or_default();
            self.map.entry(record.device.clone()).or_default().insert(
                m.name.clone(),
                Slot {
                    state,
                    dirty: false,
                },
            );
        }
    }

    /// Whether the series is in memory.
    pub fn contains(&self, device: &str, metric: &str) -> bool {
        self.map.get(device).is_some_and(|m| m.contains_key(metric))
    }

    /// The state of a series (created at default if new), marked changed.
    pub fn get_mut(&mut self, device: &str, metric: &str) -> &mut S {
        if !self.contains(device, metric) {
            self.map.entry(device.to_owned()).or_default().insert(
                metric.to_owned(),
                Slot {
                    state: S::default(),
                    dirty: true,
                },
            );
        }
        let slot = self
            .map
            .get_mut(device)
            .and_then(|m| m.get_mut(metric))
            .unwrap_or_else(|| unreachable!("inserted just above"));
        slot.dirty = true;
        &mut slot.state
    }

    /// Writes every changed series to `kv`; returns how many did not fit
    /// (those stay marked and are retried by the next flush).
    pub fn flush(&mut self, kv: &mut impl Kv) -> usize {
        let mut failed = 0;
        for (device, metrics) in &mut self.map {
            for (metric, slot) in metrics.iter_mut().filter(|(_, s)| s.dirty) {
                // Encoding plain structs into a Vec cannot fail.
                let Ok(bytes) = bincode::encode_to_vec(&slot.state, bincode::config::standard())
                else {
                    continue;
                };
                match kv.set(&series_key(self.prefix, device, metric), &bytes) {
                    Ok(()) => slot.dirty = false,
                    Err(_) => failed += 1,
                }
            }
        }
        failed
    }
}
