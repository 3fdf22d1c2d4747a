//! The global tier from the command line: `strata regions` (central's
//! region registry with each region's health, capacity and device
//! locality), `strata workloads` (global workloads and their split over
//! regions) and `strata workload submit | inspect | delete`.
//!
//! Tables render from central's typed views (`--json` prints the answer
//! as central sent it); the table functions are pure and tested.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use central::http::cluster::{RegionRecordView, RegistryView};
use central::http::workloads::{WorkloadView, WorkloadsView};
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;
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
                write_out(&mut out, &scale_history_table(&typed(w)?))
            }
        }
        .await,
    )
}

/// A workload's scale decisions, newest first, with their inputs.
pub fn scale_history_table(w: &WorkloadView) -> String {
    let Some(scale) = &w.scale else {
        return format!(
            "{}/{} does not autoscale (no scale block)\n",
            w.tenant, w.name
        );
    };
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |x| format!("{x:.1}"));
    let rows: Vec<Vec<String>> = w
        .scale_history
        .iter()
        .map(|d| {
            vec![
                crate::monitor_table::utc(d.at_ms),
                format!("{}→{}", d.current, d.desired),
                d.reason.clone(),
                num(d.total),
                num(d.per_instance),
                num(Some(d.target)),
                d.recommended.to_string(),
                forecast(d.forecast, d.forecast_horizon_ms),
                opt(d.forecast_recommended),
            ]
        })
        .collect();
    let mut out = format!(
        "{}/{}: {} instances now ({}..={} by {}, target {} per instance)\n",
        w.tenant,
        w.name,
        opt(w.scaled),
        scale.min,
        scale.max,
        wire(&scale.metric),
        scale.target,
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
fn forecast(v: Option<f64>, horizon_ms: Option<u64>) -> String {
    let Some(v) = v else {
        return "-".to_owned();
    };
    match horizon_ms {
        Some(ms) => format!(
            "{v:.1} in {}",
            humantime::format_duration(std::time::Duration::from_millis(ms))
        ),
        None => format!("{v:.1}"),
    }
}

/// An answer as its typed view; a shape central should not send is a
/// transport error naming what did not fit.
fn typed<T: DeserializeOwned>(v: Value) -> Result<T, CliError> {
    serde_json::from_value(v)
        .map_err(|e| CliError::Transport(format!("central's answer has an unexpected shape: {e}")))
}

/// A value in its wire form (an enum's kebab-case name), for a cell.
fn wire<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).map_or_else(|_| "-".to_owned(), |v| text(&v))
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| x.to_string())
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
                write_out(&mut out, &regions_table(&typed(body)?, now_ms()))
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
                write_out(&mut out, &workloads_table(&typed(body)?))
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
            let w: WorkloadView = typed(w)?;
            write_out(
                out,
                &format!(
                    "{} global workload {}/{} (generation {})\n{}",
                    if status == 201 { "created" } else { "updated" },
                    w.tenant,
                    w.name,
                    w.generation,
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
                write_out(out, &workload_detail(&typed(w)?))
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

/// A share reason as one short word or phrase: its name, with its fields
/// in parentheses (`affinity(weight=50)`).
fn reason<T: Serialize>(r: &T) -> String {
    match serde_json::to_value(r) {
        Ok(Value::Object(o)) => o
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
        Ok(other) => text(&other),
        Err(_) => "-".to_owned(),
    }
}

/// `GET /api/v1/central/regions` as a table.
pub fn regions_table(body: &RegistryView, now_ms: i64) -> String {
    let rows: Vec<Vec<String>> = body.regions.iter().map(|r| region_row(r, now_ms)).collect();
    table(
        &[
            "REGION", "HEALTH", "HUBS", "EDGES", "FREE-CPU", "FREE-MEM", "DEVICES", "REPORTED",
        ],
        &rows,
    )
}

fn region_row(r: &RegionRecordView, now_ms: i64) -> Vec<String> {
    let s = r.summary.as_ref();
    let all = s.map(|s| &s.capacity.all);
    let devices = s
        .map(|s| {
            s.device_locality
                .iter()
                .map(|(t, n)| format!("{t}:{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "-".to_owned());
    vec![
        r.name.clone(),
        wire(&r.health),
        r.hubs.len().to_string(),
        opt(all.map(|a| a.nodes_ready)),
        all.map_or_else(|| "-".to_owned(), |a| format!("{}m", a.free.cpu_millicores)),
        all.map_or_else(|| "-".to_owned(), |a| bytes(a.free.memory_bytes)),
        devices,
        s.map_or_else(
            || "never".to_owned(),
            |s| format!("{} ago", ago(now_ms - s.reported_at.0)),
        ),
    ]
}

/// `GET /api/v1/workloads` as a table.
pub fn workloads_table(body: &WorkloadsView) -> String {
    let rows: Vec<Vec<String>> = body
        .workloads
        .iter()
        .map(|w| {
            let g = &w.global;
            let wanted = match (w.scaled, &w.scale) {
                (Some(c), Some(s)) => format!("{c} (auto {}-{})", s.min, s.max),
                (Some(c), None) => c.to_string(),
                _ => g
                    .count
                    .map(|c| c.to_string())
                    .or_else(|| g.per_region.map(|n| format!("{n}/region")))
                    .unwrap_or_else(|| "1".to_owned()),
            };
            let split = w
                .split
                .iter()
                .map(|s| format!("{}:{}", s.region, s.instances))
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                format!("{}/{}", w.tenant, w.name),
                w.generation.to_string(),
                wanted,
                w.placed.to_string(),
                if split.is_empty() { "-".into() } else { split },
                w.held_by_unreachable.to_string(),
                opt(w.short.as_ref().map(|s| s.unplaced)),
                if w.deleting { "deleting" } else { "-" }.to_owned(),
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
pub fn workload_detail(w: &WorkloadView) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<String>> = w
        .split
        .iter()
        .map(|s| {
            vec![
                s.region.clone(),
                s.instances.to_string(),
                wire(&s.health),
                s.reasons.iter().map(reason).collect::<Vec<_>>().join(", "),
            ]
        })
        .collect();
    out.push_str(&table(&["REGION", "INSTANCES", "HEALTH", "WHY"], &rows));
    if let Some(short) = &w.short {
        out.push_str(&format!(
            "short: {} of {} instances fit nowhere:\n",
            short.unplaced, short.wanted
        ));
        for (r, why) in &short.regions {
            out.push_str(&format!("  {r}: {why}\n"));
        }
    }
    let plans: Vec<Vec<String>> = w
        .plans
        .iter()
        .take(10)
        .map(|p| {
            let shares = p
                .shares
                .iter()
                .map(|(r, s)| format!("{r}:{}→{}", s.previous, s.instances))
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                p.index.to_string(),
                p.generation.to_string(),
                shares,
                if p.rejected.is_empty() {
                    "-"
                } else {
                    "trimmed"
                }
                .to_owned(),
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

    /// A workload view from the JSON central sends, with the fields these
    /// tests do not look at filled in.
    fn workload(mut v: Value) -> WorkloadView {
        let base = json!({"tenant": "acme", "name": "w", "generation": 1,
            "global": {"count": 1}, "placed": 0, "split": [], "held-by-unreachable": 0,
            "short": null, "deleting": false, "scale": null, "scaled": null,
            "created-ms": 0, "updated-ms": 0});
        for (k, x) in base.as_object().unwrap() {
            v.as_object_mut()
                .unwrap()
                .entry(k.clone())
                .or_insert(x.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn decision(v: Value) -> Value {
        let mut d = json!({"index": 1, "generation": 1, "metric": "records-per-second"});
        for (k, x) in v.as_object().unwrap() {
            d[k] = x.clone();
        }
        d
    }

    #[test]
    fn scale_history_renders_each_decision_with_its_inputs() {
        let w = json!({"tenant": "acme", "name": "w", "scaled": 3,
            "scale": {"min": 1, "max": 4, "metric": "records-per-second", "target": 10.0},
            "scale-history": [decision(json!({"at-ms": 0, "current": 1, "desired": 3, "reason": "surge",
                "total": 52.5, "per-instance": 52.5, "target": 10.0, "recommended": 6}))]});
        let t = scale_history_table(&workload(w));
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
            "scale-history": [decision(json!({"at-ms": 0, "current": 1, "desired": 4,
                "reason": "pre-scale-forecast", "total": 9.0, "per-instance": 9.0,
                "target": 10.0, "recommended": 1, "metric": "records-per-second",
                "forecast": 38.3, "forecast-horizon-ms": 1_800_000,
                "forecast-recommended": 4}))]});
        let t = scale_history_table(&workload(pre));
        assert!(t.contains("38.3 in 30m"), "{t}");
        assert!(t.contains("pre-scale-forecast"), "{t}");
        let plain = json!({"tenant": "acme", "name": "v", "scale": null});
        assert!(scale_history_table(&workload(plain)).contains("does not autoscale"));
    }

    #[test]
    fn regions_render_health_capacity_and_locality() {
        use strata_sched::global::{HealthAsOf, RegionCapacity, RegionHealth, RegionSummary};
        use strata_sched::{Resources, Timestamp};
        let mut capacity = RegionCapacity::default();
        capacity.all.nodes_ready = 2;
        capacity.all.free = Resources {
            cpu_millicores: 1500,
            memory_bytes: 268_435_456,
        };
        let record = |name: &str, hubs: usize, health, summary| RegionRecordView {
            name: name.into(),
            hubs: (0..hubs).map(|i| format!("h{i}:1")).collect(),
            registered_ms: 0,
            updated_ms: 0,
            health,
            summary,
        };
        let body = RegistryView {
            stale: false,
            regions: vec![
                record(
                    "north",
                    3,
                    RegionHealth::Ok,
                    Some(RegionSummary {
                        region: "north".into(),
                        health: HealthAsOf {
                            state: RegionHealth::Ok,
                            as_of: Timestamp(9_000),
                        },
                        capacity,
                        device_locality: [("acme".to_owned(), 6)].into(),
                        placed: Vec::new(),
                        reported_at: Timestamp(9_000),
                    }),
                ),
                record("south", 1, RegionHealth::Unknown, None),
            ],
        };
        let t = regions_table(&body, 10_000);
        assert!(t.contains("north   ok"), "{t}");
        assert!(t.contains("1500m"), "{t}");
        assert!(t.contains("256.0 MiB"), "{t}");
        assert!(t.contains("acme:6"), "{t}");
        assert!(t.contains("1.0s ago"), "{t}");
        assert!(t.contains("south   unknown"), "{t}");
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
                       "reasons": [{"region-unreachable": {"health": "unknown"}}]}],
            "held-by-unreachable": 1, "short": null, "deleting": false,
            "plans": [{"index": 7, "at-ms": 0, "generation": 2, "rejected": {}, "short": null,
                       "shares": {"north": {"previous": 2, "instances": 3, "reasons": ["kept"]}}}]
        }]});
        let w = workload(body["workloads"][0].clone());
        let t = workloads_table(&WorkloadsView {
            stale: false,
            workloads: vec![w],
        });
        assert!(t.contains("acme/w"), "{t}");
        assert!(t.contains("north:3 south:1"), "{t}");
        let d = workload_detail(&workload(body["workloads"][0].clone()));
        assert!(d.contains("device-locality(devices=6 of=8)"), "{d}");
        assert!(d.contains("region-unreachable(health=unknown)"), "{d}");
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
