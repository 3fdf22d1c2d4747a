//! Unit tests of the dedup window and the fingerprint.

use super::*;
use strata_protocol::{Metric, Tag};

fn record(metrics: &[(&str, f64)], tags: &[(&str, &str)]) -> TelemetryRecord {
    TelemetryRecord {
        tenant: "acme".into(),
        device: "d".into(),
        ts_ms: 0,
        seq: None,
        metrics: metrics
            .iter()
            .map(|(n, v)| Metric {
                name: (*n).into(),
                value: *v,
            })
            .collect(),
        tags: tags
            .iter()
            .map(|(k, v)| Tag {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
    }
}

fn fp(metrics: &[(&str, f64)], tags: &[(&str, &str)]) -> u64 {
    fingerprint(&record(metrics, tags), &mut Vec::new())
}

fn key(seq: Option<u64>, ts_ms: i64, fp: u64) -> ReadingKey {
    ReadingKey { seq, ts_ms, fp }
}

/// Golden values: the fingerprint is replicated state and must never
/// change. They were computed independently, with the reference xxHash
/// library (libxxhash 0.8.1, `XXH3_64bits`) over the byte layout of the
/// module doc; a failure here means the algorithm or the layout changed.
#[test]
fn fingerprint_golden_values() {
    assert_eq!(XxHash3_64::oneshot(b""), 0x2d06_8005_38d3_94c2);
    assert_eq!(fp(&[("t", 21.5)], &[]), 0x058c_e294_3581_818c);
    assert_eq!(
        fp(
            &[("temperature", 21.5), ("humidity", 40.0)],
            &[("site", "lab")]
        ),
        0x370e_3ef2_1a4d_9979
    );
    assert_eq!(fp(&[], &[]), 0xd0a6_6a65_c752_8968);
    assert_eq!(fp(&[("x", 0.0)], &[]), 0xe533_6668_ecf8_b843);
    assert_eq!(fp(&[("x", -0.0)], &[]), 0x9b07_2ae9_72da_048d);
}

#[test]
fn fingerprint_sees_order_values_and_boundaries_but_not_identity() {
    let base = fp(
        &[("temperature", 21.5), ("humidity", 40.0)],
        &[("site", "lab")],
    );
    // Order is part of the reading.
    assert_eq!(
        fp(
            &[("humidity", 40.0), ("temperature", 21.5)],
            &[("site", "lab")]
        ),
        0x7595_68dd_dd77_c597
    );
    // Lengths delimit names: moving bytes between fields changes it.
    assert_ne!(
        fp(&[("ab", 1.0)], &[("c", "d")]),
        fp(&[("a", 1.0)], &[("bc", "d")])
    );
    assert_ne!(fp(&[], &[("ab", "")]), fp(&[], &[("a", "b")]));
    // Value bits, not numeric equality: NaN payloads differ from each other.
    assert_ne!(fp(&[("x", f64::NAN)], &[]), fp(&[("x", -f64::NAN)], &[]));
    // Tenant, device, seq and ts are separate parts of the key.
    let mut r = record(
        &[("temperature", 21.5), ("humidity", 40.0)],
        &[("site", "lab")],
    );
    r.tenant = "other".into();
    r.device = "elsewhere".into();
    r.seq = Some(9);
    r.ts_ms = 123;
    let mut scratch = vec![0xff; 3];
    assert_eq!(fingerprint(&r, &mut scratch), base);
}

#[test]
fn retransmission_in_window_is_dropped_and_anything_else_kept() {
    let mut w = RecentReadings::default();
    assert_eq!(w.admit(key(Some(5), 100, 1)), Admission::New);
    assert_eq!(w.admit(key(Some(5), 100, 1)), Admission::Retransmission);
    assert_eq!(w.len(), 1, "a dropped reading adds no key");
    // Same seq, another ts or content: a distinct reading.
    assert_eq!(w.admit(key(Some(5), 101, 1)), Admission::SeqReuse);
    assert_eq!(w.admit(key(Some(5), 100, 2)), Admission::SeqReuse);
    // Both versions are now recognised.
    assert_eq!(w.admit(key(Some(5), 101, 1)), Admission::Retransmission);
    assert_eq!(w.admit(key(Some(5), 100, 2)), Admission::Retransmission);
    // A lower seq never seen: new (slow path), not a reuse.
    assert_eq!(w.admit(key(Some(1), 100, 1)), Admission::New);
    // Without seq the key is ts + content; it never matches a seq'd key.
    assert_eq!(w.admit(key(None, 100, 1)), Admission::New);
    assert_eq!(w.admit(key(None, 100, 1)), Admission::Retransmission);
    assert_eq!(w.admit(key(None, 100, 3)), Admission::New);
    assert_eq!(w.admit(key(None, 99, 1)), Admission::New);
    assert_eq!(w.len(), 7);
}

#[test]
fn window_evicts_oldest_first() {
    let mut w = RecentReadings::default();
    let n = DEVICE_DEDUP_WINDOW as u64;
    for s in 0..n + 3 {
        assert_eq!(w.admit(key(Some(s), s as i64, s)), Admission::New);
    }
    assert_eq!(w.len(), DEVICE_DEDUP_WINDOW);
    let seqs: Vec<u64> = w.keys().filter_map(|k| k.seq).collect();
    assert_eq!(seqs, (3..n + 3).collect::<Vec<_>>());
    // Seqs 0..3 left the window: a late retransmission is stored again.
    assert_eq!(w.admit(key(Some(1), 1, 1)), Admission::New);
    // The oldest still held is recognised.
    assert_eq!(w.admit(key(Some(4), 4, 4)), Admission::Retransmission);
}

#[test]
fn fast_path_bound_follows_evictions() {
    let mut w = RecentReadings::default();
    let n = DEVICE_DEDUP_WINDOW as u64;
    w.admit(key(Some(1_000), 0, 0));
    assert_eq!(w.max_seq, Some(1_000));
    // Counter restart: low seqs, slow path until 1000 is evicted.
    for s in 0..n - 1 {
        assert_eq!(w.admit(key(Some(s), 1, s)), Admission::New);
    }
    assert_eq!(w.max_seq, Some(1_000));
    assert_eq!(w.admit(key(Some(n - 1), 1, 0)), Admission::New);
    assert_eq!(w.max_seq, Some(n - 1), "recomputed once 1000 left");
    // Readings without seq do not move the bound but may evict it.
    let mut w = RecentReadings::default();
    w.admit(key(Some(7), 0, 0));
    for t in 0..n as i64 - 1 {
        w.admit(key(None, t, 0));
    }
    assert_eq!(w.max_seq, Some(7));
    assert_eq!(w.max_unseq_ts, Some(n as i64 - 2));
    w.admit(key(None, -1, 0));
    assert_eq!(w.max_seq, None);
    assert_eq!(w.admit(key(Some(0), 0, 0)), Admission::New);
    // Without seq the bound is the timestamp: a clock jump back means
    // scanning (and a newer timestamp never matches) until it leaves.
    let mut w = RecentReadings::default();
    w.admit(key(None, 1_000_000, 0));
    assert_eq!(w.admit(key(None, 5, 0)), Admission::New);
    assert_eq!(w.admit(key(None, 5, 0)), Admission::Retransmission);
    assert_eq!(w.max_unseq_ts, Some(1_000_000));
    for t in 10..10 + n as i64 - 2 {
        w.admit(key(None, t, 0));
    }
    assert_eq!(w.max_unseq_ts, Some(1_000_000));
    w.admit(key(Some(3), 0, 0));
    assert_eq!(
        w.max_unseq_ts,
        Some(n as i64 + 7),
        "recomputed once 1 000 000 left"
    );
    assert_eq!(w.admit(key(None, 5, 0)), Admission::Retransmission);
}

#[test]
fn encoding_round_trips_compactly_and_rejects_garbage() {
    let cfg = bincode::config::standard();
    let mut w = RecentReadings::default();
    assert_eq!(bincode::encode_to_vec(&w, cfg).unwrap(), vec![0, 0]);
    let base = 1_700_000_000_000i64;
    // 40 readings, once a second: the ring wraps (starts mid-buffer).
    for s in 0..40u64 {
        w.admit(key(
            Some(s),
            base + s as i64 * 1000,
            s.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ));
    }
    w.admit(key(None, base - 5, 77));
    let bytes = bincode::encode_to_vec(&w, cfg).unwrap();
    let (back, used): (RecentReadings, usize) = bincode::decode_from_slice(&bytes, cfg).unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(back, w);
    assert_eq!(back.max_seq, w.max_seq);
    assert_eq!(
        back.keys().collect::<Vec<_>>(),
        w.keys().collect::<Vec<_>>()
    );
    // Count 1 and mask 5 (bit 31: the newest key has no seq); the first key
    // 1 + 9 + 8 (full timestamp); the next 30 keys 1 + 3 + 8 (seq +1, ts
    // +1 s); the seq-less one 5 + 8.
    assert_eq!(bytes.len(), 6 + 18 + 30 * 12 + 13);
    // Behaves the same after decoding.
    let mut a = w.clone();
    let mut b = back;
    for k in [
        key(
            Some(39),
            base + 39_000,
            39u64.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ),
        key(Some(3), 0, 0),
        key(None, base - 5, 77),
    ] {
        assert_eq!(a.admit(k), b.admit(k));
    }
    // Too many keys, or a mask naming keys that are not there.
    let err = |bytes: &[u8]| {
        bincode::decode_from_slice::<RecentReadings, _>(bytes, cfg)
            .unwrap_err()
            .to_string()
    };
    assert!(err(&[DEVICE_DEDUP_WINDOW as u8 + 1, 0]).contains("at most"));
    assert!(err(&[1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).contains("beyond"));
}

#[test]
fn equality_ignores_where_the_ring_starts() {
    let mut a = RecentReadings::default();
    let n = DEVICE_DEDUP_WINDOW as u64;
    for s in 0..n + 5 {
        a.admit(key(Some(s), 0, 0));
    }
    let mut b = RecentReadings::default();
    for s in 5..n + 5 {
        b.admit(key(Some(s), 0, 0));
    }
    assert_ne!(a.next, b.next);
    assert_eq!(a, b);
    b.admit(key(None, 0, 0));
    assert_ne!(a, b);
}
