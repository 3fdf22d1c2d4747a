use std::collections::BTreeMap;

use central::http::views::{BucketView, DeviceView};
use strata_protocol::liveness::{Classification, EdgeLiveness};
use strata_protocol::messages::{EdgeInfo, EdgeStatus};
use strata_protocol::monitoring::InstanceStatus;
use strata_protocol::Severity;

use super::*;

/// Through JSON and back, as the CLI receives a view from central: a field
/// renamed or retyped on one side fails here.
fn via_json<T: serde::Serialize + DeserializeOwned>(v: &T) -> T {
    serde_json::from_value(serde_json::to_value(v).unwrap()).unwrap()
}

fn edge(name: &str, state: LivenessState, rate: f64, backlog: u64, running: usize) -> EdgeView {
    let info = EdgeInfo {
        edge: name.into(),
        last_seen_ms: 9_000,
        status: EdgeStatus {
            ingest_rate: rate,
            spool_records: backlog,
            spool_bytes: backlog * 100,
            instances: (0..running)
                .map(|i| InstanceStatus {
                    tenant: "acme".into(),
                    name: format!("m{i}"),
                    state: "running".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
        records_stored: 5,
        resends_dropped: 0,
        liveness: Some(EdgeLiveness {
            state,
            classification: Classification::None,
            evidence: vec![],
            boot_id: 7,
            since_ms: 0,
            last_heartbeat_ms: 0,
            detection_ms: None,
            event_seq: 1,
        }),
        leases: vec![],
        renewing_leases: None,
    };
    EdgeView::new("north", info, 10_000)
}

fn device(region: &str, id: &str, last: i64) -> DeviceView {
    DeviceView {
        region: region.into(),
        tenant: "acme".into(),
        device: id.into(),
        records: 1234,
        first_ts_ms: 0,
        last_ts_ms: last,
        retransmissions_dropped: 0,
        seq_reuses: 0,
        edge: Some("edge-1".into()),
    }
}

fn alert(ts: i64, device: &str) -> AlertView {
    AlertView {
        region: "north".into(),
        ts_ms: ts,
        severity: Severity::Critical,
        tenant: "acme".into(),
        device: device.into(),
        monitor: "hot".into(),
        edge: "edge-1".into(),
        code: "threshold".into(),
        message: "temperature 91 > 80".into(),
    }
}

#[test]
fn status_sums_edges_and_names_what_is_down_and_what_did_not_answer() {
    let now = 200_000;
    let parts = StatusParts {
        central: Err(CliError::Api {
            status: 503,
            code: "unavailable".into(),
            message: "no leader".into(),
            fields: vec![],
        }),
        regions: Ok(via_json(&RegionsView { regions: vec![] })),
        edges: Ok(via_json(&EdgesView {
            edges: vec![
                edge("edge-1", LivenessState::Up, 600.4, 1000, 2),
                edge("edge-2", LivenessState::Down, 400.0, 234, 0),
            ],
            stale: false,
            errors: vec![RegionFailure {
                region: "south".into(),
                code: "unavailable".into(),
                message: "no leader".into(),
            }],
        })),
        devices: Ok(via_json(&DevicesView {
            devices: vec![device("north", "d1", now - 1000), device("south", "d2", 0)],
            total: 2,
            stale: false,
            errors: vec![],
        })),
        alerts: Ok(via_json(&AlertsView {
            alerts: vec![alert(now - 12_000, "d1")],
            count: 1,
            truncated: false,
            from_ms: 0,
            to_ms: now,
            stale: false,
            errors: vec![],
        })),
    };
    let text = render_status(&parts, now);
    assert!(text.contains("central  unavailable"), "{text}");
    assert!(text.contains("regions  none configured"), "{text}");
    assert!(
        text.contains("2 (1 up, 0 suspect, 1 down) · ingest 1,000 rec/s · backlog 1,234 records"),
        "{text}"
    );
    assert!(text.contains("monitor instances 2/2 running"), "{text}");
    assert!(text.contains("not up: edge-2"), "{text}");
    assert!(text.contains("region south did not answer"), "{text}");
    assert!(
        text.contains("2 in 2 region(s), 1 tenant(s) · 2,468 records stored · 1 silent > 1m"),
        "{text}"
    );
    assert!(
        text.contains("1 in the last hour · newest 12.0s ago: critical acme/d1"),
        "{text}"
    );
}

#[test]
fn telemetry_renders_raw_readings_with_a_column_per_metric_and_buckets() {
    let raw = TelemetryView {
        region: "north".into(),
        tenant: "acme".into(),
        device: "d1".into(),
        from_ms: 0,
        to_ms: 10_000,
        step_ms: None,
        limit: 2,
        count: 2,
        truncated: true,
        stale: false,
        served_by: "127.0.0.1:1".into(),
        data: TelemetryData::Raw {
            records: vec![
                RecordView {
                    ts_ms: 1_500,
                    seq: Some(1),
                    metrics: BTreeMap::from([("temp".into(), 20.5)]),
                    tags: BTreeMap::new(),
                },
                RecordView {
                    ts_ms: 2_000,
                    seq: None,
                    metrics: BTreeMap::from([("hum".into(), 40.0)]),
                    tags: BTreeMap::new(),
                },
            ],
        },
    };
    let text = render_telemetry(&via_json(&raw));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["TIME", "SEQ", "hum", "temp"]
    );
    assert!(
        lines[1].starts_with("1970-01-01T00:00:01.500Z  1    -    20.5"),
        "{text}"
    );
    assert!(lines[2].contains(" -    40 "), "{text}");
    assert!(text.contains("more exist"), "{text}");

    let buckets = TelemetryView {
        step_ms: Some(60_000),
        truncated: false,
        data: TelemetryData::Downsampled {
            buckets: vec![BucketView {
                metric: "temp".into(),
                start_ms: 60_000,
                min: 1.0,
                max: 3.0,
                avg: 2.0,
                count: 1200,
            }],
        },
        ..raw
    };
    let text = render_telemetry(&via_json(&buckets));
    assert!(
        text.contains("temp    1970-01-01T00:01:00Z  1.000  2.000  3.000  1,200"),
        "{text}"
    );
}

#[test]
fn a_follower_prints_each_row_once_even_when_polls_overlap() {
    let mut seen = Seen::default();
    let a = alert(1_000, "d1");
    let b = alert(1_000, "d2");
    let c = alert(2_000, "d1");
    assert!(seen.first(a.ts_ms, &a));
    assert!(seen.first(b.ts_ms, &b), "same time, other content");
    assert!(!seen.first(a.ts_ms, &a), "read again at the boundary");
    assert!(seen.first(c.ts_ms, &c));
    assert!(!seen.first(b.ts_ms, &b), "older than the newest");
    assert_eq!(seen.newest, Some(2_000));
}

#[test]
fn devices_table_lists_failed_regions_and_counts_read_well() {
    let text = render_devices(&DevicesView {
        devices: vec![device("north", "pump-7", 1_000)],
        total: 1,
        stale: false,
        errors: vec![RegionFailure {
            region: "south".into(),
            code: "unavailable".into(),
            message: "no leader".into(),
        }],
    });
    assert!(
        text.contains("north   acme    pump-7  edge-1  1,234"),
        "{text}"
    );
    assert!(text.contains("region south did not answer (unavailable): no leader"));
    assert_eq!(count(0), "0");
    assert_eq!(count(999), "999");
    assert_eq!(count(1_000), "1,000");
    assert_eq!(count(12_345_678), "12,345,678");
}
