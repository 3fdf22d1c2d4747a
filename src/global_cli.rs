//! The global tier from the command line: `strata regions` (central's
//! region registry with each region's health, capacity and device
//! locality), `strata workloads` (global workloads and their split over
//! regions) and `strata workload submit | inspect | delete`.
//!
//! Tables render from central's JSON answers (what `--json` prints); the
//! table functions are pure and tested.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::cluster_table::{ago, bytes};
use crate::monitor_cli::{finish, print_json, write_out, Api, ApiArgs, CliEnv, EXIT_CODES};
use crate::monitor_spec::CliError;
use crate::monitor_table::table;

/// `strata regions`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct RegionsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `strata workloads`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct WorkloadsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only this tenant's.
    #[arg(long)]
    pub tenant: Option<String>,
}

/// `strata scale-history`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct ScaleHistoryArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Tenant.
    pub tenant: String,
    /// Name of the global workload.
    pub name: String,
}

/// Runs `scale-history`.
pub async fn scale_history(args: ScaleHistoryArgs) -> ExitCode {
    let env = CliEnv::from_process();
    finish(
        async {
            let client = Api::new(&args.api, &env)?;
            let url = client.url(&["api", "v1", "workloads", &args.tenant, &args.name], &[]);
            let (_, w) = client.call(reqwest::Method::GET, url, None).await?;
            let mut out = std::io::stdout();
            if args.api.json {
                print_json(&mut out, &w["scale-history"])
            } else {
                write_out(&mut out, &scale_history_table(&w))
            }
        }
        .await,
    )
}

/// A workload's scale decisions, newest first, with their inputs.
pub fn scale_history_table(w: &Value) -> String {
    if w["scale"].is_null() {
        return format!(
            "{}/{} does not autoscale (no scale block)\n",
            text(&w["tenant"]),
            text(&w["name"])
        );
    }
    let num = |v: &Value| {
        v.as_f64()
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.1}"))
    };
    let rows: Vec<Vec<String>> = w["scale-history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                d["at-ms"]
                    .as_i64()
                    .map_or_else(|| "-".to_owned(), crate::monitor_table::utc),
                format!("{}→{}", text(&d["current"]), text(&d["desired"])),
                text(&d["reason"]),
                num(&d["total"]),
                num(&d["per-instance"]),
                num(&d["target"]),
                text(&d["recommended"]),
                forecast(d),
                text(&d["forecast-recommended"]),
            ]
        })
        .collect();
    let mut out = format!(
        "{}/{}: {} instances now ({}..={} by {}, target {} per instance)\n",
        text(&w["tenant"]),
        text(&w["name"]),
        text(&w["scaled"]),
        text(&w["scale"]["min"]),
        text(&w["scale"]["max"]),
        text(&w["scale"]["metric"]),
        text(&w["scale"]["target"]),
    );
    out.push_str(&table(
        &[
            "AT",
            "COUNT",
            "REASON",
            "TOTAL",
            "PER-INSTANCE",
            "TARGET",
            "RECOMMENDED",
            "FORECAST",
            "FORECAST-REC",
        ],
        &rows,
    ));
    out
}

/// A decision's forecast as `peak in horizon` (`52.5 in 30m`), `-` when
/// it had none.
fn forecast(d: &Value) -> String {
    let Some(v) = d["forecast"].as_f64() else {
        return "-".to_owned();
    };
    match d["forecast-horizon-ms"].as_u64() {
        Some(ms) => format!(
            "{v:.1} in {}",
            humantime::format_duration(std::time::Duration::from_millis(ms))
        ),
        None => format!("{v:.1}"),
    }
}

/// `strata workload …`
#[derive(Debug, Subcommand)]
pub enum WorkloadCmd {
    /// Create or update a global workload from a spec file (a monitor spec
    /// with a `[global]` table, .toml or .json).
    #[command(after_help = EXIT_CODES)]
    Submit {
        #[command(flatten)]
        api: ApiArgs,
        /// WebAssembly module to store in every region first; its sha256
        /// and size fill the spec's `artifact`.
        #[arg(long, value_name = "FILE.wasm")]
        module: Option<PathBuf>,
        /// The workload spec.
        #[arg(value_name = "SPEC")]
        spec: PathBuf,
    },
    /// Show one global workload: its split with the reasons, and its plans.
    #[command(after_help = EXIT_CODES)]
    Inspect {
        #[command(flatten)]
        api: ApiArgs,
        /// Tenant.
        tenant: String,
        /// Name.
        name: String,
    },
    /// Delete a global workload (every region drops its share).
    #[command(after_help = EXIT_CODES)]
    Delete {
        #[command(flatten)]
        api: ApiArgs,
        /// Tenant.
        tenant: String,
        /// Name.
        name: String,
    },
}

/// Runs `regions`.
pub async fn regions(args: RegionsArgs) -> ExitCode {
    let env = CliEnv::from_process();
    finish(
        async {
            let client = Api::new(&args.api, &env)?;
            let url = client.url(&["api", "v1", "central", "regions"], &[]);
            let (_, body) = client.call(reqwest::Method::GET, url, None).await?;
            let mut out = std::io::stdout();
            if args.api.json {
                print_json(&mut out, &body)
            } else {
                write_out(&mut out, &regions_table(&body, now_ms()))
            }
        }
        .await,
    )
}

/// Runs `workloads`.
pub async fn workloads(args: WorkloadsArgs) -> ExitCode {
    let env = CliEnv::from_process();
    finish(
        async {
            let client = Api::new(&args.api, &env)?;
            let query: Vec<(&str, String)> =
                args.tenant.map(|t| ("tenant", t)).into_iter().collect();
            let url = client.url(&["api", "v1", "workloads"], &query);
            let (_, body) = client.call(reqwest::Method::GET, url, None).await?;
            let mut out = std::io::stdout();
            if args.api.json {
                print_json(&mut out, &body)
            } else {
                write_out(&mut out, &workloads_table(&body))
            }
        }
        .await,
    )
}

/// Runs `workload …`.
pub async fn workload(cmd: WorkloadCmd) -> ExitCode {
    let env = CliEnv::from_process();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    finish(run_workload(cmd, &env, &mut out, &mut err).await)
}

async fn run_workload(
    cmd: WorkloadCmd,
    env: &CliEnv,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    match cmd {
        WorkloadCmd::Submit { api, module, spec } => {
            let client = Api::new(&api, env)?;
            let mut doc = read_spec(&spec)?;
            if let Some(m) = module {
                let bytes = std::fs::read(&m)
                    .map_err(|e| CliError::Input(format!("{}: {e}", m.display())))?;
                let url = client.url(&["api", "v1", "artifacts"], &[]);
                let (_, stored) = client
                    .call(
                        reqwest::Method::POST,
                        url,
                        Some(("application/wasm", bytes)),
                    )
                    .await?;
                let (Some(sha), Some(size)) =
                    (stored["sha256"].as_str(), stored["size-bytes"].as_u64())
                else {
                    return Err(CliError::Transport(format!(
                        "central's answer to the module upload has no sha256 / size-bytes: {stored}"
                    )));
                };
                write_out(
                    err,
                    &format!(
                        "stored module {} in regions {}: sha256 {sha}, {size} bytes\n",
                        m.display(),
                        list(&stored["stored"])
                    ),
                )?;
                doc["artifact"] = serde_json::json!({ "sha256": sha, "size-bytes": size });
            }
            let body = serde_json::to_vec(&doc)
                .map_err(|e| CliError::Input(format!("cannot encode the spec: {e}")))?;
            let url = client.url(&["api", "v1", "workloads"], &[]);
            let (status, w) = client
                .call(reqwest::Method::POST, url, Some(("application/json", body)))
                .await?;
            if api.json {
                return print_json(out, &w);
            }
            write_out(
                out,
                &format!(
                    "{} global workload {}/{} (generation {})\n{}",
                    if status == 201 { "created" } else { "updated" },
                    text(&w["tenant"]),
                    text(&w["name"]),
                    text(&w["generation"]),
                    workload_detail(&w)
                ),
            )
        }
        WorkloadCmd::Inspect { api, tenant, name } => {
            let client = Api::new(&api, env)?;
            let url = client.url(&["api", "v1", "workloads", &tenant, &name], &[]);
            let (_, w) = client.call(reqwest::Method::GET, url, None).await?;
            if api.json {
                print_json(out, &w)
            } else {
                write_out(out, &workload_detail(&w))
            }
        }
        WorkloadCmd::Delete { api, tenant, name } => {
            let client = Api::new(&api, env)?;
            let url = client.url(&["api", "v1", "workloads", &tenant, &name], &[]);
            let (_, w) = client.call(reqwest::Method::DELETE, url, None).await?;
            if api.json {
                print_json(out, &w)
            } else {
                write_out(
                    out,
                    &format!(
                        "deleted global workload {tenant}/{name}: every region drops its share\n"
                    ),
                )
            }
        }
    }
}

/// A spec file as JSON (TOML converted), checked only for being a table.
fn read_spec(path: &PathBuf) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
    let doc: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text)
            .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?
    } else {
        let t: toml::Table = toml::from_str(&text).map_err(|e| {
            CliError::Input(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        serde_json::to_value(t).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?
    };
    if !doc.is_object() || doc.get("global").is_none() {
        return Err(CliError::Input(format!(
            "{}: a global workload is a monitor spec with a [global] table (global.count, …)",
            path.display()
        )));
    }
    Ok(doc)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> String {
    let items: Vec<String> = v.as_array().into_iter().flatten().map(text).collect();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

/// A share reason as one short word or phrase.
fn reason(r: &Value) -> String {
    match r {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| match v {
                Value::Object(f) => format!(
                    "{k}({})",
                    f.iter()
                        .map(|(a, b)| format!("{a}={}", text(b)))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                other => format!("{k}({})", text(other)),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => text(other),
    }
}

/// `GET /api/v1/central/regions` as a table.
pub fn regions_table(body: &Value, now_ms: i64) -> String {
    let rows: Vec<Vec<String>> = body["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let s = &r["summary"];
            let all = &s["capacity"]["all"];
            let devices = s["device-locality"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(t, n)| format!("{t}:{}", text(n)))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "-".to_owned());
            let free = &all["free"];
            vec![
                text(&r["name"]),
                text(&r["health"]),
                r["hubs"].as_array().map_or(0, Vec::len).to_string(),
                text(&all["nodes-ready"]),
                match free["cpu-millicores"].as_u64() {
                    Some(m) => format!("{m}m"),
                    None => "-".to_owned(),
                },
                free["memory-bytes"]
                    .as_u64()
                    .map_or_else(|| "-".to_owned(), bytes),
                devices,
                s["reported-at"].as_i64().map_or_else(
                    || "never".to_owned(),
                    |t| format!("{} ago", ago(now_ms - t)),
                ),
            ]
        })
        .collect();
    table(
        &[
            "REGION", "HEALTH", "HUBS", "EDGES", "FREE-CPU", "FREE-MEM", "DEVICES", "REPORTED",
        ],
        &rows,
    )
}

/// `GET /api/v1/workloads` as a table.
pub fn workloads_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let g = &w["global"];
            let wanted = w["scaled"]
                .as_u64()
                .map(|c| {
                    format!(
                        "{c} (auto {}-{})",
                        text(&w["scale"]["min"]),
                        text(&w["scale"]["max"])
                    )
                })
                .or_else(|| g["count"].as_u64().map(|c| c.to_string()))
                .or_else(|| g["per-region"].as_u64().map(|n| format!("{n}/region")))
                .unwrap_or_else(|| "1".to_owned());
            let split = w["split"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| format!("{}:{}", text(&s["region"]), text(&s["instances"])))
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                format!("{}/{}", text(&w["tenant"]), text(&w["name"])),
                text(&w["generation"]),
                wanted,
                text(&w["placed"]),
                if split.is_empty() { "-".into() } else { split },
                text(&w["held-by-unreachable"]),
                w["short"]["unplaced"]
                    .as_u64()
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                if w["deleting"] == Value::Bool(true) {
                    "deleting".to_owned()
                } else {
                    "-".to_owned()
                },
            ]
        })
        .collect();
    table(
        &[
            "WORKLOAD", "GEN", "WANTED", "PLACED", "SPLIT", "HELD", "SHORT", "STATE",
        ],
        &rows,
    )
}

/// One workload in detail: its split with reasons, what is short and why,
/// and its recent plans.
pub fn workload_detail(w: &Value) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<String>> = w["split"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                text(&s["region"]),
                text(&s["instances"]),
                text(&s["health"]),
                s["reasons"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(reason)
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    out.push_str(&table(&["REGION", "INSTANCES", "HEALTH", "WHY"], &rows));
    if let Some(regions) = w["short"]["regions"].as_object() {
        out.push_str(&format!(
            "short: {} of {} instances fit nowhere:\n",
            text(&w["short"]["unplaced"]),
            text(&w["short"]["wanted"])
        ));
        for (r, why) in regions {
            out.push_str(&format!("  {r}: {}\n", text(why)));
        }
    }
    let plans: Vec<Vec<String>> = w["plans"]
        .as_array()
        .into_iter()
        .flatten()
        .take(10)
        .map(|p| {
            let shares = p["shares"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(r, s)| {
                            format!("{r}:{}→{}", text(&s["previous"]), text(&s["instances"]))
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            vec![
                text(&p["index"]),
                text(&p["generation"]),
                shares,
                if p["rejected"].as_object().is_some_and(|r| !r.is_empty()) {
                    "trimmed".to_owned()
                } else {
                    "-".to_owned()
                },
            ]
        })
        .collect();
    if !plans.is_empty() {
        out.push_str("plans (newest first):\n");
        out.push_str(&table(&["INDEX", "GEN", "SHARES", "APPLIER"], &plans));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scale_history_renders_each_decision_with_its_inputs() {
        let w = json!({"tenant": "acme", "name": "w", "scaled": 3,
            "scale": {"min": 1, "max": 4, "metric": "records-per-second", "target": 10.0},
            "scale-history": [{"at-ms": 0, "current": 1, "desired": 3, "reason": "surge",
                "total": 52.5, "per-instance": 52.5, "target": 10.0, "recommended": 6}]});
        let t = scale_history_table(&w);
        assert!(
            t.contains("3 instances now (1..=4 by records-per-second"),
            "{t}"
        );
        assert!(t.contains("1→3"), "{t}");
        assert!(t.contains("surge"), "{t}");
        assert!(t.contains("52.5"), "{t}");
        assert!(t.contains("FORECAST"), "{t}");
        let pre = json!({"tenant": "acme", "name": "w", "scaled": 4,
            "scale": {"min": 1, "max": 4, "metric": "records-per-second", "target": 10.0},
            "scale-history": [{"at-ms": 0, "current": 1, "desired": 4,
                "reason": "pre-scale-forecast", "total": 9.0, "per-instance": 9.0,
                "target": 10.0, "recommended": 1, "metric": "records-per-second",
                "forecast": 38.3, "forecast-horizon-ms": 1_800_000,
                "forecast-recommended": 4}]});
        let t = scale_history_table(&pre);
        assert!(t.contains("38.3 in 30m"), "{t}");
        assert!(t.contains("pre-scale-forecast"), "{t}");
        let plain = json!({"tenant": "acme", "name": "v", "scale": null});
        assert!(scale_history_table(&plain).contains("does not autoscale"));
    }

    #[test]
    fn regions_render_health_capacity_and_locality() {
        let body = json!({"stale": false, "regions": [
            {"name": "north", "hubs": ["a:1", "b:1", "c:1"], "health": "ok",
             "summary": {"capacity": {"all": {"nodes-ready": 2,
                 "free": {"cpu-millicores": 1500, "memory-bytes": 268435456}}},
                 "device-locality": {"acme": 6}, "reported-at": 9_000}},
            {"name": "south", "hubs": ["d:1"], "health": "unknown", "summary": null}
        ]});
        let t = regions_table(&body, 10_000);
        assert!(t.contains("north"), "{t}");
        assert!(t.contains("1500m"), "{t}");
        assert!(t.contains("256.0 MiB"), "{t}");
        assert!(t.contains("acme:6"), "{t}");
        assert!(t.contains("1.0s ago"), "{t}");
        assert!(t.contains("never"), "{t}");
    }

    #[test]
    fn workloads_render_the_split_and_what_is_held_or_short() {
        let body = json!({"stale": false, "workloads": [{
            "tenant": "acme", "name": "w", "generation": 2,
            "global": {"count": 4}, "placed": 4,
            "split": [{"region": "north", "instances": 3, "health": "ok",
                       "reasons": [{"device-locality": {"devices": 6, "of": 8}}]},
                      {"region": "south", "instances": 1, "health": "unknown",
                       "reasons": ["reduced"]}],
            "held-by-unreachable": 1, "short": null, "deleting": false,
            "plans": [{"index": 7, "generation": 2, "rejected": {},
                       "shares": {"north": {"previous": 2, "instances": 3}}}]
        }]});
        let t = workloads_table(&body);
        assert!(t.contains("acme/w"), "{t}");
        assert!(t.contains("north:3 south:1"), "{t}");
        let d = workload_detail(&body["workloads"][0]);
        assert!(d.contains("device-locality(devices=6 of=8)"), "{d}");
        assert!(d.contains("unknown"), "{d}");
        assert!(d.contains("north:2→3"), "{d}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The shipped global workload example is one, and its monitor part
    /// parses as a monitor spec once the CLI fills the artifact.
    #[test]
    fn the_shipped_global_example_parses() {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/monitors/global-threshold.toml");
        let mut doc = read_spec(&path).unwrap();
        assert_eq!(doc["global"]["count"], 3);
        assert_eq!(doc["global"]["locality"], "devices");
        doc.as_object_mut().unwrap().remove("global");
        doc["artifact"] = serde_json::json!({ "sha256": "a".repeat(64), "size-bytes": 8 });
        let spec = strata_protocol::workload::MonitorSpec::from_json_str(&doc.to_string()).unwrap();
        assert_eq!(spec.name, "overheat-global");
    }
}
