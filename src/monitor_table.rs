//! Human-readable output of the monitor CLI: aligned tables and detail
//! blocks rendered from central's view types (decoded from the documents
//! `--json` prints), plus UTC timestamps. Pure: views in, strings out.

use central::http::monitor_views::{AlertsView, MonitorView, MonitorsView};
use serde_json::Value;
use strata_protocol::scheduling::{AllocationInfo, EvaluationInfo};
use strata_protocol::workload::Placement;
use strata_sched::PlacementIntent;

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

/// A serde enum or id as its wire name (`run`, `replace-disconnected`, …).
fn name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "-".to_owned(),
    }
}

/// `GET /api/v1/monitors` as a table.
pub fn monitors(view: &MonitorsView) -> String {
    if view.monitors.is_empty() {
        return "no monitors\n".to_owned();
    }
    let rows: Vec<Vec<String>> = view
        .monitors
        .iter()
        .map(|m| {
            let st = m.status.as_ref();
            vec![
                m.region.clone(),
                m.tenant.clone(),
                m.name.clone(),
                m.edge.clone(),
                format!("{}/{}", m.placed, m.wanted),
                m.generation.to_string(),
                st.map_or_else(|| "not reported".to_owned(), |s| s.state.clone()),
                st.map_or_else(|| "-".to_owned(), |s| s.restarts.to_string()),
                st.map_or_else(|| "-".to_owned(), |s| s.alerts.to_string()),
                utc(m.updated_ms),
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

/// One monitor as a detail block.
pub fn monitor(m: &MonitorView) -> String {
    let spec = &m.spec;
    let res = &spec.resources;
    let sel = &spec.selector;
    let range = |min: Option<u32>, max: Option<u32>, v: u32| {
        format!("{}..{}", min.unwrap_or(v), max.unwrap_or(v))
    };
    let target = match &spec.target {
        Placement::Node(n) => format!("node {n}"),
        Placement::LeastLoaded => "least-loaded".to_owned(),
    };
    let tags: Vec<String> = sel.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut rows: Vec<(&str, String)> = vec![
        ("monitor", format!("{}/{}", m.tenant, m.name)),
        ("region", m.region.clone()),
        ("edge", m.edge.clone()),
        ("generation", m.generation.to_string()),
        ("created", utc(m.created_ms)),
        ("updated", utc(m.updated_ms)),
        ("runtime", spec.runtime.as_str().to_owned()),
        (
            "artifact",
            format!(
                "sha256 {} ({} bytes)",
                spec.artifact.sha256, spec.artifact.size_bytes
            ),
        ),
        (
            "selector",
            format!(
                "tenant {}; devices {}; tags {}",
                sel.tenant,
                if sel.device_globs.is_empty() {
                    "any".to_owned()
                } else {
                    sel.device_globs.join(", ")
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
                res.memory_mib,
                range(res.min_memory_mib, res.max_memory_mib, res.memory_mib),
                res.cpu_millicores,
                range(
                    res.min_cpu_millicores,
                    res.max_cpu_millicores,
                    res.cpu_millicores
                ),
            ),
        ),
        ("priority", spec.priority.to_string()),
        (
            "restart",
            format!(
                "{}, backoff {}..{} ms",
                name(&spec.restart.mode),
                spec.restart.initial_backoff_ms,
                spec.restart.max_backoff_ms
            ),
        ),
        ("target", target),
        (
            "placement",
            if spec.placement == PlacementIntent::default() {
                "one instance, anywhere it fits, kept on disconnect".to_owned()
            } else {
                // Shown as the spec's own JSON, without its unset parts.
                serde_json::to_value(&spec.placement)
                    .map(|v| compact(&v).to_string())
                    .unwrap_or_default()
            },
        ),
        ("placed", format!("{} of {} wanted", m.placed, m.wanted)),
        ("params", spec.params.clone()),
    ];
    match &m.status {
        Some(st) => {
            rows.push((
                "state",
                format!(
                    "{} (generation {}, {} restarts)",
                    st.state, st.generation, st.restarts
                ),
            ));
            if let Some(r) = &st.reason {
                rows.push(("reason", r.clone()));
            }
            if let Some(e) = &st.last_event {
                rows.push(("last event", e.clone()));
            }
            rows.push((
                "budget",
                format!("{} MiB, {} millicores", st.memory_mib, st.cpu_millicores),
            ));
            rows.push((
                "used",
                format!(
                    "{} bytes memory, {} millicores",
                    st.used_memory_bytes, st.used_cpu_millicores
                ),
            ));
            rows.push((
                "records",
                format!(
                    "{} in, {} dropped (queue full)",
                    st.records_in, st.records_dropped
                ),
            ));
            rows.push((
                "emitted",
                format!("{} alerts, {} metrics", st.alerts, st.metrics),
            ));
        }
        None => rows.push(("state", "not reported by the edge yet".to_owned())),
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut text: String = rows
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect();
    text.push_str(&allocations(&m.allocations));
    text.push_str(&evaluations(&m.evaluations));
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
fn allocations(list: &[AllocationInfo]) -> String {
    if list.is_empty() {
        return "\nno allocations\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let parts: Vec<String> = a
                .score_parts
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            let why = match &a.stop_reason {
                Some(r) => format!("stopped: {r}"),
                None => format!(
                    "{}; score {:.2} ({}); {} of {} edges feasible",
                    name(&a.reason),
                    a.score,
                    parts.join(", "),
                    a.nodes_feasible,
                    a.nodes_evaluated,
                ),
            };
            vec![
                name(&a.id).chars().take(8).collect(),
                a.edge.clone(),
                a.slot.to_string(),
                format!("{}/{}", name(&a.desired), name(&a.client)),
                a.fencing_token.to_string(),
                utc(a.created_ms),
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
fn evaluations(list: &[EvaluationInfo]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut text = "\nevaluations (newest first)\n".to_owned();
    for e in list {
        text.push_str(&format!(
            "  {}  {:<10} {:<8} placed {}, stopped {}, updated {}\n",
            utc(e.at_ms),
            e.trigger,
            e.status,
            e.placed,
            e.stopped,
            e.updated,
        ));
        if let Some(f) = &e.failure {
            let m = &f.metric;
            text.push_str(&format!(
                "    {} of {} not placed; {} edges in region, {} evaluated\n",
                f.unplaced, f.wanted, m.nodes_in_region, m.nodes_evaluated,
            ));
            for (what, rules) in [("filtered", &m.filtered), ("no room", &m.exhausted)] {
                for (rule, n) in rules {
                    text.push_str(&format!("      {what}: {rule}: {n} edges\n"));
                }
            }
        }
        for r in &e.refused {
            text.push_str(&format!("    refused on {}: {}\n", r.edge, r.reason));
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
            "wanted": 1, "placed": 1, "allocations": [], "evaluations": [],
            "status": {"tenant": "acme", "name": "hot",
                       "generation": 2, "state": "crash-looping", "reason": "trap: unreachable",
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
        let t = monitors(&serde_json::from_value(body).unwrap());
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
        let none = MonitorsView {
            monitors: vec![],
            stale: false,
            errors: vec![],
        };
        assert_eq!(monitors(&none), "no monitors\n");

        let d = monitor(&serde_json::from_value(doc()).unwrap());
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
        let d = monitor(&serde_json::from_value(m.clone()).unwrap());
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
        let list = monitors(
            &serde_json::from_value(json!({"monitors": [m], "stale": false, "errors": []}))
                .unwrap(),
        );
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
