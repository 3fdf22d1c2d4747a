//! Human-readable output of the monitor CLI: aligned tables and detail
//! blocks rendered from central's JSON answers (the same documents
//! `--json` prints), plus UTC timestamps. Pure: strings in, strings out.

use central::http::monitor_views::AlertsView;
use serde_json::Value;

/// Columns padded to their widest cell, two spaces apart; the last column
/// is not padded so long messages do not leave trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    }
    out
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds).
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A JSON value as a cell: strings bare, null as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn time_cell(v: &Value) -> String {
    v.as_i64().map(utc).unwrap_or_else(|| "-".to_owned())
}

/// Warnings for a federated answer: regions that failed, stale reads.
pub fn warnings(body: &Value) -> Vec<String> {
    let mut out: Vec<String> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "warning: region {} did not answer, its entries are missing: {}",
                cell(&e["region"]),
                cell(&e["message"])
            )
        })
        .collect();
    if body["stale"] == Value::Bool(true) {
        out.push(
            "warning: a region without a Raft leader answered from a follower; \
             the list may miss the latest changes"
                .to_owned(),
        );
    }
    out
}

/// `GET /api/v1/monitors` as a table.
pub fn monitors(body: &Value) -> String {
    let list = body["monitors"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if list.is_empty() {
        return "no monitors\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|m| {
            let st = &m["status"];
            vec![
                cell(&m["region"]),
                cell(&m["tenant"]),
                cell(&m["name"]),
                cell(&m["edge"]),
                format!("{}/{}", cell(&m["placed"]), cell(&m["wanted"])),
                cell(&m["generation"]),
                if st.is_object() {
                    cell(&st["state"])
                } else {
                    "not reported".to_owned()
                },
                cell(&st["restarts"]),
                cell(&st["alerts"]),
                time_cell(&m["updated-ms"]),
            ]
        })
        .collect();
    table(
        &[
            "REGION", "TENANT", "NAME", "EDGE", "PLACED", "GEN", "STATE", "RESTARTS", "ALERTS",
            "UPDATED",
        ],
        &rows,
    )
}

/// One monitor document as a detail block.
pub fn monitor(m: &Value) -> String {
    let spec = &m["spec"];
    let res = &spec["resources"];
    let sel = &spec["selector"];
    let range = |min: &Value, max: &Value, v: &Value| {
        format!(
            "{}..{}",
            if min.is_null() { cell(v) } else { cell(min) },
            if max.is_null() { cell(v) } else { cell(max) }
        )
    };
    let target = match &spec["target"] {
        Value::Object(o) => o
            .get("node")
            .map(|n| format!("node {}", cell(n)))
            .unwrap_or_else(|| Value::Object(o.clone()).to_string()),
        other => cell(other),
    };
    let tags: Vec<String> = sel["tags"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", cell(v)))
        .collect();
    let globs: Vec<String> = sel["device-globs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(cell)
        .collect();
    let mut rows: Vec<(&str, String)> = vec![
        (
            "monitor",
            format!("{}/{}", cell(&m["tenant"]), cell(&m["name"])),
        ),
        ("region", cell(&m["region"])),
        ("edge", cell(&m["edge"])),
        ("generation", cell(&m["generation"])),
        ("created", time_cell(&m["created-ms"])),
        ("updated", time_cell(&m["updated-ms"])),
        ("runtime", cell(&spec["runtime"])),
        (
            "artifact",
            format!(
                "sha256 {} ({} bytes)",
                cell(&spec["artifact"]["sha256"]),
                cell(&spec["artifact"]["size-bytes"])
            ),
        ),
        (
            "selector",
            format!(
                "tenant {}; devices {}; tags {}",
                cell(&sel["tenant"]),
                if globs.is_empty() {
                    "any".to_owned()
                } else {
                    globs.join(", ")
                },
                if tags.is_empty() {
                    "none".to_owned()
                } else {
                    tags.join(", ")
                }
            ),
        ),
        (
            "resources",
            format!(
                "{} MiB (range {}), {} millicores (range {})",
                cell(&res["memory-mib"]),
                range(
                    &res["min-memory-mib"],
                    &res["max-memory-mib"],
                    &res["memory-mib"]
                ),
                cell(&res["cpu-millicores"]),
                range(
                    &res["min-cpu-millicores"],
                    &res["max-cpu-millicores"],
                    &res["cpu-millicores"]
                ),
            ),
        ),
        ("priority", cell(&spec["priority"])),
        (
            "restart",
            format!(
                "{}, backoff {}..{} ms",
                cell(&spec["restart"]["mode"]),
                cell(&spec["restart"]["initial-backoff-ms"]),
                cell(&spec["restart"]["max-backoff-ms"])
            ),
        ),
        ("target", target),
        (
            "placement",
            if spec["placement"].is_object() {
                compact(&spec["placement"]).to_string()
            } else {
                "one instance, anywhere it fits, kept on disconnect".to_owned()
            },
        ),
        (
            "placed",
            format!("{} of {} wanted", cell(&m["placed"]), cell(&m["wanted"])),
        ),
        ("params", cell(&spec["params"])),
    ];
    let st = &m["status"];
    if st.is_object() {
        rows.push((
            "state",
            format!(
                "{} (generation {}, {} restarts)",
                cell(&st["state"]),
                cell(&st["generation"]),
                cell(&st["restarts"])
            ),
        ));
        for (k, key) in [("reason", "reason"), ("last event", "last-event")] {
            if !st[key].is_null() {
                rows.push((k, cell(&st[key])));
            }
        }
        rows.push((
            "budget",
            format!(
                "{} MiB, {} millicores",
                cell(&st["memory-mib"]),
                cell(&st["cpu-millicores"])
            ),
        ));
        rows.push((
            "used",
            format!(
                "{} bytes memory, {} millicores",
                cell(&st["used-memory-bytes"]),
                cell(&st["used-cpu-millicores"])
            ),
        ));
        rows.push((
            "records",
            format!(
                "{} in, {} dropped (queue full)",
                cell(&st["records-in"]),
                cell(&st["records-dropped"])
            ),
        ));
        rows.push((
            "emitted",
            format!(
                "{} alerts, {} metrics",
                cell(&st["alerts"]),
                cell(&st["metrics"])
            ),
        ));
    } else {
        rows.push(("state", "not reported by the edge yet".to_owned()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut text: String = rows
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect();
    text.push_str(&allocations(&m["allocations"]));
    text.push_str(&evaluations(&m["evaluations"]));
    text
}

/// `v` without its unset parts (null, false, empty lists and tables), so a
/// placement shows only what the spec asked for.
fn compact(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), compact(v)))
                .filter(|(_, v)| match v {
                    Value::Null | Value::Bool(false) => false,
                    Value::Array(a) => !a.is_empty(),
                    Value::Object(o) => !o.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(compact).collect()),
        other => other.clone(),
    }
}

/// A monitor's allocations: where each instance is, and why there.
fn allocations(list: &Value) -> String {
    let list = list.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        return "\nno allocations\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let parts: Vec<String> = a["score-parts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{} {:.2}", cell(&p[0]), p[1].as_f64().unwrap_or(0.0)))
                .collect();
            let why = match a["stop-reason"].as_str() {
                Some(r) => format!("stopped: {r}"),
                None => format!(
                    "{}; score {:.2} ({}); {} of {} edges feasible",
                    cell(&a["reason"]),
                    a["score"].as_f64().unwrap_or(0.0),
                    parts.join(", "),
                    cell(&a["nodes-feasible"]),
                    cell(&a["nodes-evaluated"]),
                ),
            };
            let id = cell(&a["id"]);
            vec![
                id.chars().take(8).collect(),
                cell(&a["edge"]),
                cell(&a["slot"]),
                format!("{}/{}", cell(&a["desired"]), cell(&a["client"])),
                cell(&a["fencing-token"]),
                time_cell(&a["created-ms"]),
                why,
            ]
        })
        .collect();
    format!(
        "\nallocations\n{}",
        table(
            &[
                "ID",
                "EDGE",
                "SLOT",
                "DESIRED/CLIENT",
                "TOKEN",
                "CREATED",
                "WHY"
            ],
            &rows
        )
    )
}

/// A monitor's recent evaluations, and for what could not be placed, how
/// many edges each rule ruled out.
fn evaluations(list: &Value) -> String {
    let list = list.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        return String::new();
    }
    let mut text = "\nevaluations (newest first)\n".to_owned();
    for e in list {
        text.push_str(&format!(
            "  {}  {:<10} {:<8} placed {}, stopped {}, updated {}\n",
            time_cell(&e["at-ms"]),
            cell(&e["trigger"]),
            cell(&e["status"]),
            cell(&e["placed"]),
            cell(&e["stopped"]),
            cell(&e["updated"]),
        ));
        let f = &e["failure"];
        if f.is_object() {
            let m = &f["metric"];
            text.push_str(&format!(
                "    {} of {} not placed; {} edges in region, {} evaluated\n",
                cell(&f["unplaced"]),
                cell(&f["wanted"]),
                cell(&m["nodes-in-region"]),
                cell(&m["nodes-evaluated"]),
            ));
            for (what, key) in [("filtered", "filtered"), ("no room", "exhausted")] {
                for (rule, n) in m[key].as_object().into_iter().flatten() {
                    text.push_str(&format!("      {what}: {rule}: {} edges\n", cell(n)));
                }
            }
        }
        for r in e["refused"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "    refused on {}: {}\n",
                cell(&r["edge"]),
                cell(&r["reason"])
            ));
        }
    }
    text
}

/// `GET /api/v1/alerts` as a table, newest first, with a truncation note.
pub fn alerts(view: &AlertsView) -> String {
    if view.alerts.is_empty() {
        return "no alerts\n".to_owned();
    }
    let mut out = crate::observe_cli::render_alert_rows(&view.alerts);
    if view.truncated {
        out.push_str(&format!(
            "({} alerts shown; older ones exist: raise --limit or shorten --since)\n",
            view.alerts.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_714_564_800_999), "2024-05-01T12:00:00Z");
        assert_eq!(utc(1_709_164_800_000), "2024-02-29T00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn tables_align_columns_and_leave_no_trailing_blanks() {
        let t = table(
            &["A", "LONG HEADER", "MSG"],
            &[
                vec!["wide cell".into(), "x".into(), "m1".into()],
                vec!["é".into(), "y".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "A          LONG HEADER  MSG\nwide cell  x            m1\né          y            \n"
        );
    }

    fn doc() -> Value {
        json!({
            "region": "west", "tenant": "acme", "name": "hot", "edge": "edge-1",
            "generation": 2, "created-ms": 0, "updated-ms": 1000,
            "spec": {
                "name": "hot", "tenant": "acme", "runtime": "wasm",
                "artifact": {"sha256": "ab", "size-bytes": 10},
                "selector": {"tenant": "acme", "device-globs": ["b-*"], "tags": {"site": "p1"}},
                "params": "{}",
                "resources": {"memory-mib": 16, "cpu-millicores": 50, "min-memory-mib": null,
                              "max-memory-mib": 64, "min-cpu-millicores": null,
                              "max-cpu-millicores": null},
                "priority": 50,
                "restart": {"mode": "on-failure", "initial-backoff-ms": 1000, "max-backoff-ms": 60000},
                "target": {"node": "edge-1"}, "generation": 2
            },
            "status": {"generation": 2, "state": "crash-looping", "reason": "trap: unreachable",
                       "restarts": 5, "memory-mib": 16, "cpu-millicores": 50,
                       "used-memory-bytes": 1024, "used-cpu-millicores": 3, "records-in": 10,
                       "records-dropped": 1, "alerts": 4, "metrics": 0, "last-event": null}
        })
    }

    #[test]
    fn monitor_list_and_detail() {
        let mut pending = doc();
        pending["name"] = json!("cold");
        pending["status"] = Value::Null;
        let body = json!({"monitors": [doc(), pending], "stale": false, "errors": []});
        let t = monitors(&body);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("REGION  TENANT  NAME  EDGE    PLACED  GEN  STATE"),
            "{t}"
        );
        assert!(
            lines[1].contains("crash-looping") && lines[1].contains("1970-01-01T00:00:01Z"),
            "{t}"
        );
        assert!(lines[2].contains("not reported"), "{t}");
        assert_eq!(monitors(&json!({"monitors": []})), "no monitors\n");

        let d = monitor(&doc());
        for needle in [
            "monitor     acme/hot\n",
            "target      node edge-1\n",
            "16 MiB (range 16..64), 50 millicores (range 50..50)",
            "devices b-*; tags site=p1",
            "state       crash-looping (generation 2, 5 restarts)\n",
            "reason      trap: unreachable\n",
            "1 dropped",
        ] {
            assert!(d.contains(needle), "missing {needle:?} in:\n{d}");
        }
        assert!(!d.contains("last event"), "{d}");
        assert!(d.contains("\nno allocations\n"), "{d}");
    }

    /// Allocations and evaluations render from the hub's own types, so a
    /// renamed field shows up here.
    #[test]
    fn allocations_and_evaluations_say_why() {
        use std::collections::BTreeMap;
        use strata_protocol::scheduling::{
            AllocId, AllocMetric, AllocationInfo, ClientState, Desired, EvalId, EvaluationInfo,
            PlaceReason, PlacementFailure, RefusedNode,
        };
        let alloc = AllocationInfo {
            id: AllocId(0xabcdef12 << 96),
            edge: "edge-2".into(),
            slot: 0,
            generation: 2,
            desired: Desired::Run,
            client: ClientState::Running,
            fencing_token: 7,
            cpu_millicores: 50,
            memory_bytes: 16 << 20,
            reason: PlaceReason::ReplaceDisconnected,
            score: 0.5,
            score_parts: vec![("binpack".into(), 0.71)],
            nodes_evaluated: 3,
            nodes_feasible: 2,
            eval: EvalId(1),
            created_ms: 1000,
            modified_ms: 1000,
            created_index: 9,
            modified_index: 9,
            lease_expires_ms: None,
            previous: None,
            replaced_by: None,
            stop_reason: None,
        };
        let eval = EvaluationInfo {
            id: EvalId(1),
            trigger: "node-down".into(),
            at_ms: 1000,
            index: 9,
            status: "partial".into(),
            placed: 1,
            stopped: 1,
            updated: 0,
            refused: vec![RefusedNode {
                edge: "edge-3".into(),
                reason: "edge is down".into(),
            }],
            failure: Some(PlacementFailure {
                unplaced: 1,
                wanted: 2,
                metric: AllocMetric {
                    nodes_in_region: 3,
                    nodes_evaluated: 3,
                    filtered: BTreeMap::from([("constraint zone = a".to_owned(), 2)]),
                    exhausted: BTreeMap::from([("memory".to_owned(), 1)]),
                },
            }),
        };
        let mut m = doc();
        m["placed"] = json!(1);
        m["wanted"] = json!(2);
        m["spec"]["placement"] = json!({"count": 2, "per-node": false, "pools": [],
            "replace-after": null, "spread": [{"label": "zone", "targets": {}, "weight": 50}]});
        m["allocations"] = serde_json::to_value(vec![alloc]).unwrap();
        m["evaluations"] = serde_json::to_value(vec![eval]).unwrap();
        let d = monitor(&m);
        for needle in [
            "placed      1 of 2 wanted\n",
            "placement   {\"count\":2,\"spread\":[{\"label\":\"zone\",\"weight\":50}]}\n",
            "abcdef12",
            "edge-2",
            "run/running",
            "replace-disconnected; score 0.50 (binpack 0.71); 2 of 3 edges feasible",
            "node-down",
            "1 of 2 not placed; 3 edges in region, 3 evaluated",
            "filtered: constraint zone = a: 2 edges",
            "no room: memory: 1 edges",
            "refused on edge-3: edge is down",
        ] {
            assert!(d.contains(needle), "missing {needle:?} in:\n{d}");
        }
        let list = monitors(&json!({"monitors": [m]}));
        assert!(list.lines().nth(1).unwrap().contains("1/2"), "{list}");
    }

    #[test]
    fn alert_table_and_warnings() {
        let body = json!({
            "alerts": [{"ts-ms": 1000, "severity": "critical", "region": "west", "tenant": "acme",
                        "device": "d1", "monitor": "z", "edge": "e", "code": "anomaly",
                        "message": "z=7.1"}],
            "count": 1, "truncated": true, "from-ms": 0, "to-ms": 2000, "stale": true,
            "errors": [{"region": "east", "code": "region-unreachable", "message": "down"}]
        });
        let view: AlertsView = serde_json::from_value(body.clone()).unwrap();
        let t = alerts(&view);
        assert!(t.starts_with("TIME                  SEVERITY"), "{t}");
        assert!(t.contains("1970-01-01T00:00:01Z  critical  west"), "{t}");
        assert!(t.contains("raise --limit"), "{t}");
        let w = warnings(&body);
        assert_eq!(w.len(), 2);
        assert!(
            w[0].contains("region east") && w[0].contains("down"),
            "{w:?}"
        );
        let none = AlertsView {
            alerts: vec![],
            count: 0,
            truncated: false,
            ..view
        };
        assert_eq!(alerts(&none), "no alerts\n");
    }
}
