//! SDK tests on the host, through the recording fake host: the export
//! bodies (decode, return codes, logging), the emit budget, kv helpers and
//! series persistence.
// Through the fake host, which exists off wasm32 only.
#![cfg(not(target_arch = "wasm32"))]

use std::cell::RefCell;

use crate::__private::{self, BAD_BATCH, BAD_INPUT, BAD_PARAMS, NOT_INITIALISED, OK};
use crate::{
    fake, run_batch, Ctx, Detector, Event, KvError, Metric, Monitor, SeriesStore, Severity,
    TelemetryRecord,
};

/// A monitor whose behaviour its params choose.
struct Toy {
    alerts_per_record: usize,
    metric_value: f64,
}

impl Monitor for Toy {
    fn init(params: &serde_json::Value) -> Result<Self, String> {
        if params.get("fail").is_some() {
            return Err("toy: field `fail` is set".into());
        }
        Ok(Toy {
            alerts_per_record: params.get("alerts").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
            metric_value: params
                .get("metric")
                .and_then(|v| v.as_f64())
                .unwrap_or(f64::NAN),
        })
    }

    fn on_batch(&mut self, records: &[TelemetryRecord], ctx: &mut Ctx) {
        for (i, r) in records.iter().enumerate() {
            for _ in 0..self.alerts_per_record {
                ctx.alert(Severity::Critical, &r.device, "toy.alert", "boom");
            }
            // Last value per (device, name) wins.
            ctx.metric(&r.device, "m", self.metric_value + i as f64);
        }
    }
}

thread_local! {
    static TOY: RefCell<Option<Toy>> = const { RefCell::new(None) };
}

fn rec(device: &str, v: f64) -> TelemetryRecord {
    TelemetryRecord {
        tenant: "acme".into(),
        device: device.into(),
        ts_ms: 1,
        seq: None,
        metrics: vec![Metric {
            name: "t".into(),
            value: v,
        }],
        tags: vec![],
    }
}

fn batch(recs: &[TelemetryRecord]) -> Vec<u8> {
    bincode::encode_to_vec(recs, bincode::config::standard()).unwrap()
}

fn reset() -> fake::FakeHost {
    fake::with(|h| {
        std::mem::replace(
            h,
            fake::FakeHost {
                kv_quota: usize::MAX,
                ..Default::default()
            },
        )
    })
}

#[test]
fn init_return_codes_and_logs() {
    reset();
    assert_eq!(
        __private::on_batch_bytes(&TOY, &batch(&[])),
        NOT_INITIALISED
    );
    assert_eq!(__private::init_bytes(&TOY, b"{nope"), BAD_PARAMS);
    assert_eq!(__private::init_bytes(&TOY, br#"{"fail": 1}"#), BAD_PARAMS);
    let h = reset();
    assert_eq!(h.logs.len(), 3, "{:?}", h.logs);
    assert!(h.logs.iter().all(|(lvl, _)| *lvl == 3));
    assert!(h.logs[2].1.contains("field `fail`"));
    assert_eq!(__private::init_bytes(&TOY, b"null"), OK);
}

#[test]
fn batches_decode_and_metrics_are_gauges() {
    reset();
    assert_eq!(
        __private::init_bytes(&TOY, br#"{"alerts": 1, "metric": 10}"#),
        OK
    );
    let recs = [rec("a", 1.0), rec("b", 2.0), rec("a", 3.0)];
    assert_eq!(__private::on_batch_bytes(&TOY, &batch(&recs)), OK);
    let h = reset();
    assert_eq!(h.alerts.len(), 3);
    assert_eq!(
        h.alerts[0],
        (2, "a".into(), "toy.alert".into(), "boom".into())
    );
    // One sample per (device, name), the last: a got 10+0 then 10+2.
    assert_eq!(
        h.metrics,
        vec![
            ("a".into(), "m".into(), 12.0),
            ("b".into(), "m".into(), 11.0)
        ]
    );

    let mut bytes = batch(&recs);
    bytes.push(0);
    assert_eq!(__private::on_batch_bytes(&TOY, &bytes), BAD_BATCH);
    assert_eq!(__private::on_batch_bytes(&TOY, &bytes[..5]), BAD_BATCH);
    assert_eq!(reset().logs.len(), 2);
}

#[test]
fn emit_budget_keeps_the_guest_under_the_host_limit() {
    reset();
    assert_eq!(
        __private::init_bytes(&TOY, br#"{"alerts": 3, "metric": 1}"#),
        OK
    );
    let recs: Vec<_> = (0..700).map(|i| rec(&format!("d{i}"), 0.0)).collect();
    assert_eq!(__private::on_batch_bytes(&TOY, &batch(&recs)), OK);
    let h = reset();
    assert_eq!(h.alerts.len(), crate::ALERT_BUDGET);
    assert_eq!(h.alerts.len() + h.metrics.len(), crate::EMIT_BUDGET);
    assert!(
        h.logs
            .iter()
            .any(|(l, m)| *l == 2 && m.contains("dropped 1600 alerts and 200 metrics")),
        "{:?}",
        h.logs
    );
}

#[test]
fn non_finite_metrics_are_dropped() {
    reset();
    assert_eq!(__private::init_bytes(&TOY, b"{}"), OK); // metric NaN
    assert_eq!(
        __private::on_batch_bytes(&TOY, &batch(&[rec("a", 0.0)])),
        OK
    );
    let h = reset();
    assert!(h.metrics.is_empty());
    assert!(h.logs.iter().any(|(_, m)| m.contains("1 metrics")));
}

#[test]
fn input_must_be_the_alloc_buffer() {
    reset();
    let p = __private::alloc(16);
    assert_eq!(__private::init(&TOY, p.wrapping_add(1), 2), BAD_INPUT);
    assert_eq!(__private::on_batch(&TOY, p, -1), BAD_INPUT);
    assert_eq!(__private::alloc(-5), 0);
}

#[test]
fn kv_helpers_round_trip_and_refuse_bad_keys() {
    reset();
    let mut ctx = Ctx::new();
    ctx.kv_set_f64("f", 1.5).unwrap();
    ctx.kv_set_u64("u", 7).unwrap();
    ctx.kv_set_json("j", &vec![1, 2, 3]).unwrap();
    let big = vec![9u8; 5000]; // larger than the first read buffer
    ctx.kv_set("big", &big).unwrap();
    assert_eq!(ctx.kv_get_f64("f"), Some(1.5));
    assert_eq!(ctx.kv_get_u64("u"), Some(7));
    assert_eq!(ctx.kv_get_json::<Vec<i32>>("j"), Some(vec![1, 2, 3]));
    assert_eq!(ctx.kv_get("big"), Some(big));
    assert_eq!(ctx.kv_get_f64("j"), None, "wrong length is not an f64");
    ctx.kv_delete("f");
    assert_eq!(ctx.kv_get("f"), None);
    let long = "k".repeat(300);
    assert!(matches!(
        ctx.kv_set(&long, b"x"),
        Err(KvError::KeyTooLong { len: 300, .. })
    ));
    fake::with(|h| h.kv_quota = 10);
    assert!(matches!(
        ctx.kv_set("q", &[0; 20]),
        Err(KvError::QuotaExceeded { .. })
    ));
}

#[test]
fn log_lines_are_cut_on_a_char_boundary() {
    reset();
    crate::log(crate::LogLevel::Info, &"é".repeat(1000));
    let h = reset();
    assert_eq!(h.logs[0].1.len(), 1024);
}

/// Counts readings per series.
struct Count(SeriesStore<u32>);

impl Detector for Count {
    type State = u32;
    fn series(&mut self) -> &mut SeriesStore<u32> {
        &mut self.0
    }
    fn watches(&self, name: &str) -> bool {
        name == "t"
    }
    fn step_metric(
        &self,
        r: &TelemetryRecord,
        _m: &crate::Metric,
        n: &mut u32,
        out: &mut Vec<Event>,
    ) {
        *n += 1;
        out.push(Event::Metric {
            device: r.device.clone(),
            name: "count".into(),
            value: f64::from(*n),
        });
    }
}

#[test]
fn run_batch_persists_and_reloads_series() {
    reset();
    let mut ctx = Ctx::new();
    let mut a = Count(SeriesStore::new("c"));
    run_batch(&mut a, &[rec("d", 0.0), rec("d", 0.0)], &mut ctx);
    ctx.finish();
    let h = fake::with(|h| h.clone());
    assert_eq!(h.kv.len(), 1);
    assert!(h.kv.contains_key("c/d/t"));

    let mut ctx = Ctx::new();
    let mut b = Count(SeriesStore::new("c"));
    run_batch(&mut b, &[rec("d", 0.0)], &mut ctx);
    ctx.finish();
    assert_eq!(
        fake::with(|h| h.metrics.last().cloned()),
        Some(("d".into(), "count".into(), 3.0))
    );

    // Quota: the state stays in memory, a warning is logged.
    fake::with(|h| h.kv_quota = 0);
    let mut ctx = Ctx::new();
    run_batch(&mut b, &[rec("e", 0.0)], &mut ctx);
    assert!(fake::with(|h| h
        .logs
        .iter()
        .any(|(l, m)| *l == 2 && m.contains("not persisted"))));
}

#[test]
fn long_series_keys_are_hashed_under_the_limit() {
    let s: SeriesStore<u32> = SeriesStore::new("z");
    let (d, m) = ("d".repeat(128), "m".repeat(128));
    let k = s.key(&d, &m);
    assert!(k.len() <= crate::MAX_KEY_LEN && k.starts_with("z#"), "{k}");
    assert_ne!(k, s.key(&d, &"n".repeat(128)));
    assert_eq!(s.key("dev", "temp"), "z/dev/temp");
}
