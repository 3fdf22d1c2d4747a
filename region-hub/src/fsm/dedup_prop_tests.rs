//! Adversarial property tests of exactly-once (both dedup layers) against a
//! reference model, and the regression test of issue 7's attack.
//!
//! Devices publish through several edges while their clocks jump by years
//! either way, their counters restart, a spoofer publishes their upcoming
//! seqs with timestamps ten years ahead, and they re-publish readings (an
//! MQTT retransmission: the same reading as a new spool record, maybe
//! through another edge). Edges deliver their spools in batches that are
//! cut, re-cut, resent and reordered. The model is the specification
//! written the obvious way: layer 1 a set of `(edge, epoch, edge seq)`,
//! layer 2 the last [`DEVICE_DEDUP_WINDOW`] stored readings of each device,
//! compared by full content (not by fingerprint).
//!
//! Checked on every run: apply drops exactly what the model drops; every
//! distinct reading that was delivered is stored; a reading stored twice had
//! left its device's window in between; the counters of the outcomes, the
//! devices and the edges add up; a second replica, and one whose state went
//! through encode/decode midway, agree byte for byte. Inputs come from
//! proptest (it prints the failing case, delivery seed included).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_protocol::{DeviceInfo, Metric, SpoolEntry, Tag};

use super::*;

const TENANT: &str = "acme";
const YEAR_MS: i64 = 365 * 24 * 3_600_000;
const START_MS: i64 = 1_700_000_000_000;

/// What a device (or a spoofer posing as it) does next.
#[derive(Debug, Clone)]
enum Act {
    /// Its next reading; `value` from a small set so contents repeat.
    Reading { value: u8, no_seq: bool },
    /// Its clock jumps by whole years (either way).
    ClockJump { years: i8 },
    /// Its counter restarts at 0 (a reboot).
    Restart,
    /// A spoofer publishes seq `next + ahead` with a timestamp 10 years ahead.
    Spoof { ahead: u8, value: u8 },
    /// It re-publishes its `back`-th latest publication, unchanged.
    Retransmit { back: u8 },
}

/// (device, act, edge it goes through).
type Step = (u8, Act, u8);

fn arb_act() -> impl Strategy<Value = Act> {
    prop_oneof![
        10 => (0u8..4, proptest::bool::weighted(0.15))
            .prop_map(|(value, no_seq)| Act::Reading { value, no_seq }),
        1 => (-10i8..=10).prop_map(|years| Act::ClockJump { years }),
        1 => Just(Act::Restart),
        2 => (0u8..40, 0u8..4).prop_map(|(ahead, value)| Act::Spoof { ahead, value }),
        4 => (1u8..48).prop_map(|back| Act::Retransmit { back }),
    ]
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec((0u8..3, arb_act(), 0u8..3), 1..220)
}

fn reading(device: &str, seq: Option<u64>, ts_ms: i64, value: u8) -> TelemetryRecord {
    TelemetryRecord {
        tenant: TENANT.into(),
        device: device.into(),
        ts_ms,
        seq,
        metrics: vec![Metric {
            name: "t".into(),
            value: f64::from(value),
        }],
        tags: if value % 2 == 0 {
            vec![Tag {
                key: "fw".into(),
                value: "1".into(),
            }]
        } else {
            Vec::new()
        },
    }
}

/// Every publication, in order, as spools per edge.
fn publish(steps: &[Step]) -> BTreeMap<String, Vec<TelemetryRecord>> {
    struct Dev {
        next_seq: u64,
        clock: i64,
        published: Vec<TelemetryRecord>,
    }
    let mut devs: Vec<Dev> = (0..3)
        .map(|_| Dev {
            next_seq: 0,
            clock: START_MS,
            published: Vec::new(),
        })
        .collect();
    let mut spools: BTreeMap<String, Vec<TelemetryRecord>> = BTreeMap::new();
    for (d, act, e) in steps {
        let name = format!("d{d}");
        let dev = &mut devs[usize::from(*d)];
        let rec = match act {
            Act::Reading { value, no_seq } => {
                dev.clock += 1000;
                let seq = (!no_seq).then_some(dev.next_seq);
                dev.next_seq += u64::from(!no_seq);
                reading(&name, seq, dev.clock, *value)
            }
            Act::ClockJump { years } => {
                dev.clock += i64::from(*years) * YEAR_MS;
                continue;
            }
            Act::Restart => {
                dev.next_seq = 0;
                continue;
            }
            Act::Spoof { ahead, value } => reading(
                &name,
                Some(dev.next_seq + u64::from(*ahead)),
                dev.clock + 10 * YEAR_MS,
                *value,
            ),
            Act::Retransmit { back } => {
                let n = dev.published.len();
                if n == 0 {
                    continue;
                }
                dev.published[n - usize::from(*back).min(n)].clone()
            }
        };
        dev.published.push(rec.clone());
        spools.entry(format!("e{e}")).or_default().push(rec);
    }
    spools
}

/// Batches as the edges would send them: each spool cut into batches, some
/// ranges re-cut and resent, all shuffled together.
fn deliveries(
    spools: &BTreeMap<String, Vec<TelemetryRecord>>,
    rng: &mut ChaCha8Rng,
) -> Vec<TelemetryBatch> {
    let mut out = Vec::new();
    for (edge, spool) in spools {
        let epoch = 7;
        let batch = |a: usize, b: usize| TelemetryBatch {
            edge: edge.clone(),
            epoch,
            first_seq: a as u64,
            entries: spool[a..b]
                .iter()
                .cloned()
                .map(SpoolEntry::Telemetry)
                .collect(),
        };
        let mut at = 0;
        while at < spool.len() {
            let end = (at + rng.gen_range(1..=12)).min(spool.len());
            out.push(batch(at, end));
            at = end;
        }
        for _ in 0..rng.gen_range(0..6) {
            let a = rng.gen_range(0..spool.len());
            let b = (a + rng.gen_range(1..=16)).min(spool.len());
            out.push(batch(a, b));
        }
    }
    out.shuffle(rng);
    out
}

/// A reading's identity in the model: everything, content in full.
type FullKey = (
    String,
    Option<u64>,
    i64,
    Vec<(String, u64)>,
    Vec<(String, String)>,
);

fn full_key(r: &TelemetryRecord) -> FullKey {
    (
        r.device.clone(),
        r.seq,
        r.ts_ms,
        r.metrics
            .iter()
            .map(|m| (m.name.clone(), m.value.to_bits()))
            .collect(),
        r.tags
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect(),
    )
}

/// The specification, written plainly.
#[derive(Default)]
struct Model {
    edge_seqs: BTreeSet<(String, u64, u64)>,
    windows: BTreeMap<String, VecDeque<FullKey>>,
    edge_resends: BTreeMap<String, u64>,
    stored_per_edge: BTreeMap<String, u64>,
    retransmissions: BTreeMap<String, u64>,
    seq_reuses: BTreeMap<String, u64>,
}

impl Model {
    /// The records `batch` must store, updating the model.
    fn apply(&mut self, batch: &TelemetryBatch) -> Vec<TelemetryRecord> {
        let mut stored = Vec::new();
        for (i, entry) in batch.entries.iter().enumerate() {
            let SpoolEntry::Telemetry(r) = entry else {
                unreachable!("only telemetry is generated")
            };
            let id = (batch.edge.clone(), batch.epoch, batch.first_seq + i as u64);
            if !self.edge_seqs.insert(id) {
                *self.edge_resends.entry(batch.edge.clone()).or_default() += 1;
                continue;
            }
            let key = full_key(r);
            let window = self.windows.entry(r.device.clone()).or_default();
            if window.contains(&key) {
                *self.retransmissions.entry(r.device.clone()).or_default() += 1;
                continue;
            }
            if r.seq.is_some() && window.iter().any(|k| k.1 == r.seq) {
                *self.seq_reuses.entry(r.device.clone()).or_default() += 1;
            }
            window.push_back(key);
            if window.len() > DEVICE_DEDUP_WINDOW {
                window.pop_front();
            }
            *self.stored_per_edge.entry(batch.edge.clone()).or_default() += 1;
            stored.push(r.clone());
        }
        stored
    }
}

fn store_cmd(batch: &TelemetryBatch) -> Vec<u8> {
    encode_command(&Command::StoreBatch {
        batch: batch.clone(),
        received_ms: START_MS,
    })
}

fn check(steps: &[Step], delivery_seed: u64) -> Result<(), TestCaseError> {
    let spools = publish(steps);
    let mut rng = ChaCha8Rng::seed_from_u64(delivery_seed);
    let batches = deliveries(&spools, &mut rng);
    let round_trip_at = rng.gen_range(0..=batches.len());

    let mut model = Model::default();
    let mut s1 = RegionState::default();
    let mut s2 = RegionState::default();
    let mut stored: Vec<TelemetryRecord> = Vec::new();
    let (mut sent, mut totals) = (0u64, [0u64; 4]);
    for (i, b) in batches.iter().enumerate() {
        if i == round_trip_at {
            s1 = RegionState::decode(&s1.encode()).expect("state decodes");
        }
        let data = store_cmd(b);
        let a1 = apply(&mut s1, i as u64 + 1, &data).expect("applies");
        let a2 = apply(&mut s2, i as u64 + 1, &data).expect("applies");
        prop_assert_eq!(&a1, &a2, "replicas disagree on batch {}", i);
        let want = model.apply(b);
        prop_assert_eq!(
            &a1.records,
            &want,
            "batch {} of {}: {:?}",
            i,
            b.edge,
            b.first_seq
        );
        let Outcome::Committed {
            count,
            new_records,
            edge_resends,
            device_retransmissions,
            seq_reuses,
            ..
        } = a1.outcome
        else {
            return Err(TestCaseError::fail(format!("outcome {:?}", a1.outcome)));
        };
        prop_assert_eq!(count as usize, b.entries.len());
        prop_assert_eq!(count, new_records + edge_resends + device_retransmissions);
        prop_assert_eq!(new_records as usize, a1.records.len());
        sent += u64::from(count);
        for (t, n) in totals.iter_mut().zip([
            new_records,
            edge_resends,
            device_retransmissions,
            seq_reuses,
        ]) {
            *t += u64::from(n);
        }
        stored.extend(a1.records);
    }
    prop_assert_eq!(s1.encode(), s2.encode());
    prop_assert_eq!(totals[0] + totals[1] + totals[2], sent);

    // No distinct reading that reached the region is missing.
    let delivered: BTreeSet<FullKey> = spools.values().flatten().map(full_key).collect();
    let kept: BTreeSet<FullKey> = stored.iter().map(full_key).collect();
    prop_assert_eq!(&kept, &delivered);

    // A reading stored twice had left its device's window in between.
    let mut per_device: BTreeMap<&str, Vec<FullKey>> = BTreeMap::new();
    for r in &stored {
        per_device.entry(&r.device).or_default().push(full_key(r));
    }
    for (device, keys) in &per_device {
        let mut last: BTreeMap<&FullKey, usize> = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(prev) = last.insert(k, i) {
                prop_assert!(
                    i - prev > DEVICE_DEDUP_WINDOW,
                    "{} stored {:?} again only {} readings later",
                    device,
                    k,
                    i - prev
                );
            }
        }
    }

    // Per-device and per-edge counters add up to the outcomes and the model.
    let devices = s1.devices(Some(TENANT));
    let sum = |f: fn(&DeviceInfo) -> u64| devices.iter().map(f).sum::<u64>();
    prop_assert_eq!(sum(|d| d.records), stored.len() as u64);
    prop_assert_eq!(sum(|d| d.retransmissions_dropped), totals[2]);
    prop_assert_eq!(sum(|d| d.seq_reuses), totals[3]);
    for d in &devices {
        let of = |m: &BTreeMap<String, u64>| m.get(&d.device).copied().unwrap_or(0);
        prop_assert_eq!(
            d.records,
            per_device
                .get(d.device.as_str())
                .map_or(0, |k| k.len() as u64)
        );
        prop_assert_eq!(d.retransmissions_dropped, of(&model.retransmissions));
        prop_assert_eq!(d.seq_reuses, of(&model.seq_reuses));
    }
    let edges = s1.edges();
    prop_assert_eq!(
        edges.iter().map(|e| e.resends_dropped).sum::<u64>(),
        totals[1]
    );
    for e in &edges {
        let want = model.edge_resends.get(&e.edge).copied().unwrap_or(0);
        prop_assert_eq!(e.resends_dropped, want);
        let want = model.stored_per_edge.get(&e.edge).copied().unwrap_or(0);
        prop_assert_eq!(e.records_stored, want);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn adversarial_devices_and_edges_never_lose_a_reading(
        steps in arb_steps(),
        delivery_seed in any::<u64>(),
    ) {
        check(&steps, delivery_seed)?;
    }
}

/// Issue 7's attack: an anonymous client publishes 30 readings as
/// `demo/dev-7` with the device's upcoming seqs and a timestamp ten years
/// ahead; then the real device publishes those seqs. Every real reading is
/// stored; the spoofed ones are too (they were acknowledged), and the reuse
/// is visible per device.
#[test]
fn spoofed_future_readings_cannot_erase_real_ones() {
    let real = |seq: u64| TelemetryRecord {
        tenant: "demo".into(),
        device: "dev-7".into(),
        ts_ms: START_MS + seq as i64 * 1000,
        seq: Some(seq),
        metrics: vec![Metric {
            name: "temperature".into(),
            value: 20.0 + seq as f64 / 10.0,
        }],
        tags: Vec::new(),
    };
    let spoof = |seq: u64| TelemetryRecord {
        ts_ms: START_MS + 10 * YEAR_MS,
        metrics: vec![Metric {
            name: "temperature".into(),
            value: 99.0,
        }],
        ..real(seq)
    };
    let batch = |edge: &str, first_seq: u64, records: Vec<TelemetryRecord>| {
        store_cmd(&TelemetryBatch {
            edge: edge.into(),
            epoch: 1,
            first_seq,
            entries: records.into_iter().map(SpoolEntry::Telemetry).collect(),
        })
    };
    let mut s = RegionState::default();
    // The device has sent seqs 0..10.
    let first: Vec<_> = (0..10).map(real).collect();
    assert_eq!(
        apply(&mut s, 1, &batch("e1", 0, first))
            .unwrap()
            .records
            .len(),
        10
    );
    // The spoofer takes seqs 10..40, ten years ahead, through the same edge.
    let spoofed: Vec<_> = (10..40).map(spoof).collect();
    let a = apply(&mut s, 2, &batch("e1", 10, spoofed.clone())).unwrap();
    assert_eq!(a.records, spoofed);
    // The real device publishes seqs 10..40: every one is stored.
    let genuine: Vec<_> = (10..40).map(real).collect();
    let b = apply(&mut s, 3, &batch("e1", 40, genuine.clone())).unwrap();
    assert_eq!(b.records, genuine, "no real reading may be erased");
    assert!(matches!(
        b.outcome,
        Outcome::Committed {
            new_records: 30,
            device_retransmissions: 0,
            seq_reuses: 30,
            ..
        }
    ));
    // Its own retransmissions of the latest readings are still dropped.
    let again: Vec<_> = (30..40).map(real).collect();
    let c = apply(&mut s, 4, &batch("e2", 0, again)).unwrap();
    assert!(c.records.is_empty());
    let d = &s.devices(Some("demo"))[0];
    assert_eq!(d.records, 70);
    assert_eq!((d.retransmissions_dropped, d.seq_reuses), (10, 30));
}
