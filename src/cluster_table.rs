//! Human-readable output of `strata edges` and `strata events`: rendered
//! from central's JSON answers (what `--json` prints). Pure: JSON in,
//! strings out.

use serde_json::Value;

use crate::monitor_table::{table, utc};

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

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

fn percent(used: &Value, total: &Value) -> String {
    match (used.as_f64(), total.as_f64()) {
        (Some(u), Some(t)) if t > 0.0 => format!("{:.0}%", 100.0 * u / t),
        _ => "-".to_owned(),
    }
}

/// `GET /api/v1/edges` as a table: one row per edge with its liveness.
pub fn edges(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let l = &e["liveness"];
            let class = match l["classification"].as_str() {
                None | Some("none") => "-".to_owned(),
                Some(c) => c.to_owned(),
            };
            let boot = l["boot-id"]
                .as_u64()
                .filter(|b| *b != 0)
                .map_or("-".to_owned(), |b| format!("{b:016x}"));
            let node = &e["node"];
            vec![
                text(&e["region"]),
                text(&e["name"]),
                l["state"].as_str().unwrap_or("-").to_owned(),
                class,
                e["age-ms"]
                    .as_i64()
                    .map_or("-".to_owned(), |a| format!("{} ago", ago(a))),
                boot,
                format!(
                    "{} ({})",
                    e["spool-records"].as_u64().unwrap_or(0),
                    bytes(e["spool-bytes"].as_u64().unwrap_or(0))
                ),
                text(&e["connected-clients"]),
                percent(&node["cpu-used-millicores"], &node["cpu-total-millicores"]),
                percent(&node["memory-used-bytes"], &node["memory-total-bytes"]),
                leases(e),
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
            "DEVICES",
            "CPU",
            "MEM",
            "LEASES",
        ],
        &rows,
    )
}

/// An edge's `replace-after` leases: how many, and whether the leader
/// renews them now (`-` without any).
fn leases(e: &Value) -> String {
    let n = e["leases"].as_array().map_or(0, Vec::len);
    match (n, e["renewing-leases"].as_bool()) {
        (0, _) => "-".to_owned(),
        (n, Some(true)) => format!("{n} renewed"),
        (n, Some(false)) => format!("{n} NOT renewed"),
        (n, None) => n.to_string(),
    }
}

/// One event as a line: time, sequence number, kind, subject, the
/// classification and detection time of edge events, and the message.
pub fn event_line(e: &Value) -> String {
    let mut line = format!(
        "{}  #{}  {}  {}",
        e["at-ms"].as_i64().map_or("-".to_owned(), utc),
        text(&e["seq"]),
        text(&e["kind"]),
        text(&e["subject"]),
    );
    let l = &e["edge"]["liveness"];
    if let Some(c) = l["classification"].as_str().filter(|c| *c != "none") {
        line.push_str(&format!("  [{c}]"));
    }
    if let Some(d) = l["detection-ms"].as_u64() {
        if e["kind"] == "edge-down" {
            line.push_str(&format!("  detected in {d} ms"));
        }
    }
    line.push_str(&format!("  {}", text(&e["message"])));
    line
}

/// `GET /api/v1/regions/{region}/events` as lines, with a note when the
/// region's log no longer held some of them.
pub fn events(body: &Value) -> String {
    let mut out = String::new();
    if let Some(m) = body["missed"].as_u64().filter(|m| *m > 0) {
        out.push_str(&format!(
            "({m} older events are no longer held by the region)\n"
        ));
    }
    for e in body["events"].as_array().into_iter().flatten() {
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
    use super::*;
    use serde_json::json;

    #[test]
    fn edges_show_liveness_backlog_and_use() {
        let body = json!({"edges": [
            {"region": "local", "name": "edge-1", "age-ms": 320, "spool-records": 12,
             "spool-bytes": 3500, "connected-clients": 40,
             "node": {"cpu-used-millicores": 500, "cpu-total-millicores": 2000,
                      "memory-used-bytes": 1073741824u64, "memory-total-bytes": 4294967296u64},
             "liveness": {"state": "up", "classification": "none", "boot-id": 255},
             "leases": [{}, {}], "renewing-leases": true},
            {"region": "local", "name": "edge-2", "age-ms": 75_000, "spool-records": 0,
             "spool-bytes": 0, "connected-clients": 0, "node": {},
             "liveness": {"state": "down", "classification": "crash", "boot-id": 0},
             "leases": [{}], "renewing-leases": false},
            {"region": "local", "name": "edge-3", "age-ms": 5, "node": {}, "liveness": null}
        ]});
        let out = edges(&body);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("REGION  EDGE    STATE"), "{out}");
        assert!(lines[1].contains("edge-1  up     -"), "{out}");
        assert!(lines[1].contains("320ms ago"), "{out}");
        assert!(lines[1].contains("00000000000000ff"), "{out}");
        assert!(lines[1].contains("12 (3.4 KiB)"), "{out}");
        assert!(lines[1].ends_with("25%  25%  2 renewed"), "{out}");
        assert!(lines[2].ends_with("1 NOT renewed"), "{out}");
        assert!(lines[2].contains("down   crash"), "{out}");
        assert!(lines[2].contains("1m15s ago"), "{out}");
        assert!(lines[3].contains("edge-3  -"), "{out}");
        assert_eq!(edges(&json!({"edges": []})), "no edge has reported yet\n");
    }

    #[test]
    fn events_are_lines_with_classification_and_detection() {
        let body = json!({"missed": 2, "events": [
            {"seq": 7, "at-ms": 0, "kind": "edge-down", "subject": "edge-1",
             "message": "edge-1 is down",
             "edge": {"liveness": {"classification": "undetermined", "detection-ms": 900}}},
            {"seq": 8, "at-ms": 1000, "kind": "edge-back", "subject": "edge-1",
             "message": "edge-1 is back", "edge": {"liveness": {"classification": "partition",
             "detection-ms": null}}}
        ]});
        assert_eq!(
            events(&body),
            "(2 older events are no longer held by the region)\n\
             1970-01-01T00:00:00Z  #7  edge-down  edge-1  [undetermined]  detected in 900 ms  edge-1 is down\n\
             1970-01-01T00:00:01Z  #8  edge-back  edge-1  [partition]  edge-1 is back\n"
        );
        assert_eq!(events(&json!({"events": []})), "no events\n");
    }

    #[test]
    fn sizes_and_ages_are_short() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(ago(59_999), "60.0s");
        assert_eq!(ago(3_600_000 + 120_000), "1h02m");
    }
}
