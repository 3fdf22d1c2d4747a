//! Human-readable output of `strata edges` and `strata events`: rendered
//! from central's view types, decoded from the JSON `--json` prints. Pure:
//! views in, strings out.

use central::http::events::EventsView;
use central::http::views::{EdgeView, EdgesView};
use strata_protocol::liveness::{Classification, EventKind, RegionEvent};

use crate::monitor_table::{table, utc};

/// `n` bytes with a binary unit.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A duration in ms, short: `850ms`, `3.2s`, `4m05s`, `2h10m`.
pub fn ago(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

fn percent(used: u64, total: u64) -> String {
    if total == 0 {
        return "-".to_owned();
    }
    format!("{:.0}%", 100.0 * used as f64 / total as f64)
}

/// `GET /api/v1/edges` as a table: one row per edge with its liveness.
pub fn edges(view: &EdgesView) -> String {
    let rows: Vec<Vec<String>> = view
        .edges
        .iter()
        .map(|e| {
            let (state, class, boot) = match &e.liveness {
                Some(l) => (
                    l.state.as_str().to_owned(),
                    match l.classification {
                        Classification::None => "-".to_owned(),
                        c => c.as_str().to_owned(),
                    },
                    if l.boot_id == 0 {
                        "-".to_owned()
                    } else {
                        format!("{:016x}", l.boot_id)
                    },
                ),
                None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            };
            let node = &e.node;
            vec![
                e.region.clone(),
                e.name.clone(),
                state,
                class,
                format!("{} ago", ago(e.age_ms)),
                boot,
                format!("{} ({})", e.spool_records, bytes(e.spool_bytes)),
                ago(i64::try_from(e.sync_lag_ms).unwrap_or(i64::MAX)),
                e.connected_clients.to_string(),
                percent(
                    u64::from(node.cpu_used_millicores),
                    u64::from(node.cpu_total_millicores),
                ),
                percent(node.memory_used_bytes, node.memory_total_bytes),
                leases(e),
                // The day the certificate ends (UTC).
                e.cert_expires_ms
                    .map_or_else(|| "-".to_owned(), |ms| utc(ms)[..10].to_owned()),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no edge has reported yet\n".to_owned();
    }
    table(
        &[
            "REGION",
            "EDGE",
            "STATE",
            "CLASS",
            "LAST SEEN",
            "BOOT ID",
            "BACKLOG",
            "SYNC LAG",
            "DEVICES",
            "CPU",
            "MEM",
            "LEASES",
            "CERT UNTIL",
        ],
        &rows,
    )
}

/// An edge's `replace-after` leases: how many, and whether the leader
/// renews them now (`-` without any).
fn leases(e: &EdgeView) -> String {
    match (e.leases.len(), e.renewing_leases) {
        (0, _) => "-".to_owned(),
        (n, Some(true)) => format!("{n} renewed"),
        (n, Some(false)) => format!("{n} NOT renewed"),
        (n, None) => n.to_string(),
    }
}

/// One event as a line: time, sequence number, kind, subject, the
/// classification and detection time of edge events, and the message.
pub fn event_line(e: &RegionEvent) -> String {
    let mut line = format!(
        "{}  #{}  {}  {}",
        utc(e.at_ms),
        e.seq,
        e.kind.as_str(),
        e.subject,
    );
    if let Some(d) = &e.edge {
        let l = &d.liveness;
        if l.classification != Classification::None {
            line.push_str(&format!("  [{}]", l.classification.as_str()));
        }
        if let (Some(ms), EventKind::EdgeDown) = (l.detection_ms, e.kind) {
            line.push_str(&format!("  detected in {ms} ms"));
        }
    }
    line.push_str(&format!("  {}", e.message));
    line
}

/// `GET /api/v1/regions/{region}/events` as lines, with a note when the
/// region's log no longer held some of them.
pub fn events(view: &EventsView) -> String {
    let mut out = String::new();
    if view.missed > 0 {
        out.push_str(&format!(
            "({} older events are no longer held by the region)\n",
            view.missed
        ));
    }
    for e in &view.events {
        out.push_str(&event_line(e));
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("no events\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use strata_protocol::liveness::{EdgeEventDetail, EdgeLiveness, LivenessState};
    use strata_protocol::messages::{EdgeInfo, EdgeStatus};
    use strata_protocol::monitoring::NodeResources;
    use strata_protocol::scheduling::EdgeLease;

    use super::*;

    fn liveness(state: LivenessState, class: Classification, boot: u64) -> EdgeLiveness {
        EdgeLiveness {
            state,
            classification: class,
            evidence: vec![],
            boot_id: boot,
            since_ms: 0,
            last_heartbeat_ms: 0,
            detection_ms: Some(900),
            event_seq: 1,
        }
    }

    fn edge(
        name: &str,
        age: i64,
        live: Option<EdgeLiveness>,
        leases: usize,
        renewing: Option<bool>,
    ) -> EdgeView {
        let lease: EdgeLease = serde_json::from_value(serde_json::json!({
            "tenant": "acme", "workload": "w", "slot": 0, "allocation": "00000000000000000000000000000001",
            "fencing-token": 1, "expires-ms": 0
        }))
        .unwrap();
        let info = EdgeInfo {
            edge: name.into(),
            last_seen_ms: 100_000 - age,
            status: EdgeStatus {
                spool_records: 12,
                spool_bytes: 3500,
                connected_clients: 40,
                sync_lag_ms: 1_500,
                cert_expires_ms: (leases > 0).then_some(1_828_128_761_000),
                node: NodeResources {
                    cpu_used_millicores: 500,
                    cpu_total_millicores: 2000,
                    memory_used_bytes: 1 << 30,
                    memory_total_bytes: 4 << 30,
                    ..Default::default()
                },
                ..Default::default()
            },
            records_stored: 0,
            resends_dropped: 0,
            liveness: live,
            leases: vec![lease; leases],
            renewing_leases: renewing,
        };
        EdgeView::new("local", info, 100_000)
    }

    /// Through JSON, as the CLI receives it.
    fn via_json<T: serde::Serialize + serde::de::DeserializeOwned>(v: T) -> T {
        serde_json::from_value(serde_json::to_value(v).unwrap()).unwrap()
    }

    #[test]
    fn edges_show_liveness_backlog_and_use() {
        let view = via_json(EdgesView {
            edges: vec![
                edge(
                    "edge-1",
                    320,
                    Some(liveness(LivenessState::Up, Classification::None, 255)),
                    2,
                    Some(true),
                ),
                edge(
                    "edge-2",
                    75_000,
                    Some(liveness(LivenessState::Down, Classification::Crash, 0)),
                    1,
                    Some(false),
                ),
                edge("edge-3", 5, None, 0, None),
            ],
            stale: false,
            errors: vec![],
        });
        let out = edges(&view);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("REGION  EDGE    STATE"), "{out}");
        assert!(lines[1].contains("edge-1  up     -"), "{out}");
        assert!(lines[1].contains("320ms ago"), "{out}");
        assert!(lines[1].contains("00000000000000ff"), "{out}");
        assert!(lines[1].contains("12 (3.4 KiB)  1.5s"), "{out}");
        assert!(lines[1].contains("25%  25%  2 renewed"), "{out}");
        assert!(lines[1].ends_with("2027-12-06"), "{out}");
        assert!(lines[2].contains("1 NOT renewed"), "{out}");
        assert!(
            lines[3].ends_with('-') && !lines[3].contains("2027"),
            "no certificate reported: {out}"
        );
        assert!(lines[2].contains("down   crash"), "{out}");
        assert!(lines[2].contains("1m15s ago"), "{out}");
        assert!(lines[3].contains("edge-3  -"), "{out}");
        let none = EdgesView {
            edges: vec![],
            stale: false,
            errors: vec![],
        };
        assert_eq!(edges(&none), "no edge has reported yet\n");
    }

    #[test]
    fn events_are_lines_with_classification_and_detection() {
        let event = |seq: u64,
                     at_ms: i64,
                     kind: EventKind,
                     class: Classification,
                     detection: Option<u64>| {
            let mut l = liveness(LivenessState::Down, class, 0);
            l.detection_ms = detection;
            RegionEvent {
                seq,
                at_ms,
                kind,
                subject: "edge-1".into(),
                message: format!("edge-1 is {}", kind.as_str().trim_start_matches("edge-")),
                edge: Some(EdgeEventDetail {
                    from: LivenessState::Up,
                    liveness: l,
                }),
                attrs: vec![],
            }
        };
        let view = via_json(EventsView {
            region: "local".into(),
            events: vec![
                event(
                    7,
                    0,
                    EventKind::EdgeDown,
                    Classification::Undetermined,
                    Some(900),
                ),
                event(
                    8,
                    1000,
                    EventKind::EdgeBack,
                    Classification::Partition,
                    None,
                ),
            ],
            last_seq: 8,
            oldest_seq: 1,
            missed: 2,
            served_by: "h".into(),
            stale: false,
        });
        assert_eq!(
            events(&view),
            "(2 older events are no longer held by the region)\n\
             1970-01-01T00:00:00Z  #7  edge-down  edge-1  [undetermined]  detected in 900 ms  edge-1 is down\n\
             1970-01-01T00:00:01Z  #8  edge-back  edge-1  [partition]  edge-1 is back\n"
        );
        let empty = EventsView {
            events: vec![],
            missed: 0,
            ..view
        };
        assert_eq!(events(&empty), "no events\n");
    }

    #[test]
    fn sizes_and_ages_are_short() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(ago(59_999), "60.0s");
        assert_eq!(ago(3_600_000 + 120_000), "1h02m");
    }
}
