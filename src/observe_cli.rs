//! The read-only nouns an operator looks at most: `strata status` (one
//! screen), `strata devices`, `strata telemetry <tenant> <device>`
//! (`--follow`) and `strata alerts --follow`.
//!
//! Every answer is decoded into central's own view types
//! (`central::http::views`), so a renamed or retyped field fails here, in
//! a test, instead of printing `-`; `--json` prints central's answer as it
//! came. Rendering is pure (views in, text out) and lives at the bottom of
//! this file; the `run_*` functions do the HTTP.
//!
//! Followers poll (telemetry and alerts have no stream in the API): every
//! `--interval` they ask for what is newer than the newest row printed and
//! print only rows not seen, so a row is printed once even when its
//! timestamp ties the previous poll's newest.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use central::http::cluster::CentralView;
use central::http::handlers::RegionsView;
use central::http::monitor_views::{AlertView, AlertsView};
use central::http::views::{
    DevicesView, EdgeView, EdgesView, RecordView, RegionFailure, TelemetryData, TelemetryView,
};
use clap::Args;
use serde::de::DeserializeOwned;
use serde_json::Value;
use strata_protocol::liveness::LivenessState;

use crate::cluster_table::{ago, bytes};
use crate::monitor_cli::{
    finish, print_json, write_out, AlertsArgs, Api, ApiArgs, CliEnv, EXIT_CODES,
};
use crate::monitor_spec::{self, CliError};
use crate::monitor_table::{table, utc};

/// `strata status`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `strata devices`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only this tenant's.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this region's.
    #[arg(long)]
    pub region: Option<String>,
    /// Only devices whose id, tenant or edge contains this text (ignoring
    /// case; central searches).
    #[arg(long)]
    pub filter: Option<String>,
}

/// `strata telemetry`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct TelemetryArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Tenant.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// How far back to read, e.g. 30s, 10m, 2h, 1d.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = monitor_spec::parse_duration)]
    pub since: u64,
    /// Downsample into buckets this wide (min/avg/max per metric), e.g. 1m.
    #[arg(long, value_name = "DURATION", value_parser = monitor_spec::parse_duration, conflicts_with = "follow")]
    pub step: Option<u64>,
    /// Most records or buckets (1-10000). Default: central's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: Option<u32>,
    /// Keep printing new readings as they are stored (Ctrl-C to stop);
    /// with --json, one JSON record per line.
    #[arg(long, short)]
    pub follow: bool,
    /// With --follow: time between reads.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

/// Runs `status`.
pub async fn status(args: StatusArgs) -> ExitCode {
    let env = CliEnv::from_process();
    finish(run_status(args, &env, now_ms(), &mut std::io::stdout()).await)
}

/// Runs `devices`.
pub async fn devices(args: DevicesArgs) -> ExitCode {
    let env = CliEnv::from_process();
    finish(run_devices(args, &env, &mut std::io::stdout()).await)
}

/// Runs `telemetry`.
pub async fn telemetry(args: TelemetryArgs) -> ExitCode {
    let env = CliEnv::from_process();
    finish(run_telemetry(args, &env, &mut std::io::stdout()).await)
}

/// Runs `alerts --follow`.
pub async fn follow_alerts(args: AlertsArgs) -> ExitCode {
    let env = CliEnv::from_process();
    finish(run_follow_alerts(args, &env, &mut std::io::stdout()).await)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// GETs `segments` and decodes the answer as `T`; also returns it raw for
/// `--json`.
pub(crate) async fn get<T: DeserializeOwned>(
    client: &Api,
    segments: &[&str],
    query: &[(&str, String)],
) -> Result<(T, Value), CliError> {
    let url = client.url(segments, query);
    let (_, body) = client.call(reqwest::Method::GET, url.clone(), None).await?;
    let typed = serde_json::from_value(body.clone()).map_err(|e| {
        CliError::Transport(format!(
            "GET {url}: central's answer does not match this CLI's version: {e}"
        ))
    })?;
    Ok((typed, body))
}

/// Everything `status` shows; a part central could not give is its error.
pub struct StatusParts {
    pub central: Result<CentralView, CliError>,
    pub regions: Result<RegionsView, CliError>,
    pub edges: Result<EdgesView, CliError>,
    pub devices: Result<DevicesView, CliError>,
    pub alerts: Result<AlertsView, CliError>,
}

/// `status`: every part asked at once; fails only when central answers
/// none of them (unreachable, bad token), with that error.
pub async fn run_status(
    args: StatusArgs,
    env: &CliEnv,
    now: i64,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let client = Api::new(&args.api, env)?;
    let hour = [("from", (now - 3_600_000).to_string())];
    let (central, regions, edges, devices, alerts) = tokio::join!(
        get::<CentralView>(&client, &["api", "v1", "central"], &[]),
        get::<RegionsView>(&client, &["api", "v1", "regions"], &[]),
        get::<EdgesView>(&client, &["api", "v1", "edges"], &[]),
        get::<DevicesView>(&client, &["api", "v1", "devices"], &[]),
        get::<AlertsView>(&client, &["api", "v1", "alerts"], &hour),
    );
    // Every part failed (unreachable, bad token): the first error decides
    // the exit code.
    if let (Err(e), Err(_), Err(_), Err(_), Err(_)) =
        (&central, &regions, &edges, &devices, &alerts)
    {
        return Err(e.clone());
    }
    if args.api.json {
        fn raw<T>(r: &Result<(T, Value), CliError>) -> Value {
            match r {
                Ok((_, v)) => v.clone(),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            }
        }
        let doc = serde_json::json!({
            "central": raw(&central),
            "regions": raw(&regions),
            "edges": raw(&edges),
            "devices": raw(&devices),
            "alerts": raw(&alerts),
        });
        return print_json(out, &doc);
    }
    let parts = StatusParts {
        central: central.map(|t| t.0),
        regions: regions.map(|t| t.0),
        edges: edges.map(|t| t.0),
        devices: devices.map(|t| t.0),
        alerts: alerts.map(|t| t.0),
    };
    write_out(out, &render_status(&parts, now))
}

/// `devices`: the device table.
pub async fn run_devices(
    args: DevicesArgs,
    env: &CliEnv,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let client = Api::new(&args.api, env)?;
    let mut query = Vec::new();
    query.extend(args.tenant.clone().map(|t| ("tenant", t)));
    query.extend(args.region.clone().map(|r| ("region", r)));
    query.extend(args.filter.clone().map(|f| ("search", f)));
    let (view, raw): (DevicesView, Value) = get(&client, &["api", "v1", "devices"], &query).await?;
    if args.api.json {
        return print_json(out, &raw);
    }
    write_out(out, &render_devices(&view))
}

/// `telemetry`: one read, or with `--follow` every new reading.
pub async fn run_telemetry(
    args: TelemetryArgs,
    env: &CliEnv,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let client = Api::new(&args.api, env)?;
    let segments = ["api", "v1", "telemetry", &args.tenant, &args.device];
    let now = now_ms();
    let from = now.saturating_sub(i64::try_from(args.since).unwrap_or(i64::MAX));
    let mut query = vec![("from", from.to_string()), ("to", (now + 1).to_string())];
    query.extend(args.step.map(|s| ("step", s.to_string())));
    query.extend(args.limit.map(|l| ("limit", l.to_string())));
    let (view, raw): (TelemetryView, Value) = get(&client, &segments, &query).await?;
    if !args.follow {
        return if args.api.json {
            print_json(out, &raw)
        } else {
            write_out(out, &render_telemetry(&view))
        };
    }
    // Follow: print what came, then poll for newer readings.
    let TelemetryData::Raw { records } = view.data else {
        return Err(CliError::Input(
            "--follow reads raw readings; drop --step".into(),
        ));
    };
    let mut seen = Seen::default();
    let mut header = !args.api.json;
    emit_records(records, args.api.json, &mut seen, &mut header, out)?;
    let mut failing = false;
    loop {
        tokio::time::sleep(args.interval).await;
        let query = vec![
            ("from", seen.newest.unwrap_or(from).to_string()),
            ("to", (now_ms() + 1).to_string()),
        ];
        match get::<TelemetryView>(&client, &segments, &query).await {
            Ok((v, _)) => {
                if failing {
                    eprintln!("telemetry: central answers again");
                    failing = false;
                }
                if let TelemetryData::Raw { records } = v.data {
                    emit_records(records, args.api.json, &mut seen, &mut header, out)?;
                }
            }
            // Central gone for a while, or a device not stored yet: keep
            // following, say so once.
            Err(e) if e.exit_code() == 1 => {
                if !failing {
                    eprintln!("telemetry: {e}; retrying");
                    failing = true;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Prints the `records` not printed yet; the table header only the first
/// time (later rows line up with their own widths).
fn emit_records(
    records: Vec<RecordView>,
    json: bool,
    seen: &mut Seen,
    header: &mut bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let fresh: Vec<RecordView> = records
        .into_iter()
        .filter(|r| seen.first(r.ts_ms, r))
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let text = if json {
        fresh
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
            .collect()
    } else {
        let t = render_records(&fresh);
        if *header {
            t
        } else {
            t.lines().skip(1).map(|l| format!("{l}\n")).collect()
        }
    };
    *header = false;
    write_out(out, &text)?;
    out.flush().ok();
    Ok(())
}

/// Rows already printed by a follower (their time and content), so a row
/// read twice at the boundary of two polls is printed once. Only rows at
/// the newest timestamp need remembering: older ones are never asked for
/// again.
#[derive(Debug, Default)]
struct Seen {
    newest: Option<i64>,
    at_newest: HashSet<String>,
}

impl Seen {
    /// Whether `row`, stamped `ts` (ms), was not printed yet.
    fn first<T: serde::Serialize>(&mut self, ts: i64, row: &T) -> bool {
        let key = || serde_json::to_string(row).unwrap_or_default();
        match self.newest {
            Some(n) if ts < n => false,
            Some(n) if ts == n => self.at_newest.insert(key()),
            _ => {
                self.newest = Some(ts);
                self.at_newest = HashSet::from([key()]);
                true
            }
        }
    }
}

/// `alerts --follow`: polls the alert API, printing alerts oldest first as
/// they are stored.
pub async fn run_follow_alerts(
    args: AlertsArgs,
    env: &CliEnv,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let client = Api::new(&args.api, env)?;
    let mut filters = Vec::new();
    filters.extend(args.tenant.clone().map(|v| ("tenant", v)));
    filters.extend(args.device.clone().map(|v| ("device", v)));
    filters.extend(args.monitor.clone().map(|v| ("monitor", v)));
    filters.extend(args.region.clone().map(|v| ("region", v)));
    filters.extend(args.severity.map(|s| ("severity", s.as_str().to_owned())));
    let since = i64::try_from(args.since.unwrap_or(60_000)).unwrap_or(i64::MAX);
    let mut from = now_ms().saturating_sub(since);
    let mut seen = Seen::default();
    let mut header = !args.api.json;
    let mut failing = false;
    loop {
        let mut query = filters.clone();
        query.push(("from", from.to_string()));
        query.push(("limit", args.limit.unwrap_or(1000).to_string()));
        match get::<AlertsView>(&client, &["api", "v1", "alerts"], &query).await {
            Ok((view, _)) => {
                if failing {
                    eprintln!("alerts: central answers again");
                    failing = false;
                }
                // Newest first in the answer; printed oldest first.
                let fresh: Vec<AlertView> = view
                    .alerts
                    .into_iter()
                    .rev()
                    .filter(|a| seen.first(a.ts_ms, a))
                    .collect();
                if let Some(n) = seen.newest {
                    from = n;
                }
                if !fresh.is_empty() {
                    let text = if args.api.json {
                        fresh
                            .iter()
                            .map(|a| serde_json::to_string(a).unwrap_or_default() + "\n")
                            .collect()
                    } else {
                        let t = render_alert_rows(&fresh);
                        if header {
                            t
                        } else {
                            t.lines().skip(1).map(|l| format!("{l}\n")).collect()
                        }
                    };
                    header = false;
                    write_out(out, &text)?;
                    out.flush().ok();
                }
            }
            Err(e) if e.exit_code() == 1 => {
                if !failing {
                    eprintln!("alerts: {e}; retrying");
                    failing = true;
                }
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

// ---- rendering (pure) ----

fn failures(errors: &[RegionFailure]) -> String {
    errors
        .iter()
        .map(|f| {
            format!(
                "region {} did not answer ({}): {}\n",
                f.region, f.code, f.message
            )
        })
        .collect()
}

/// A count with thousands separators: `12,345`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn edge_state(e: &EdgeView) -> LivenessState {
    e.liveness
        .as_ref()
        .map_or(LivenessState::Unknown, |l| l.state)
}

/// `status` on one screen.
pub fn render_status(p: &StatusParts, now: i64) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |k: &str, v: String| rows.push(vec![k.to_owned(), v]);
    row(
        "central",
        match &p.central {
            Ok(c) => format!(
                "replica {} ({:?}), leader {}, {} replica(s), term {}, applied {}",
                c.replica,
                c.role,
                c.leader.map_or("none".to_owned(), |l| l.to_string()),
                c.replicas.len(),
                c.term,
                c.applied_index
            )
            .to_lowercase(),
            Err(e) => format!("unavailable: {e}"),
        },
    );
    match &p.regions {
        Ok(r) if r.regions.is_empty() => row("regions", "none configured".into()),
        Ok(r) => {
            for (i, reg) in r.regions.iter().enumerate() {
                let mut line = format!(
                    "{} {}: leader {}, {}/{} replicas reachable",
                    reg.name,
                    serde_json::to_value(reg.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    reg.leader.map_or("none".to_owned(), |l| l.to_string()),
                    reg.reachable_replicas,
                    reg.replicas.len()
                );
                if let Some(first) = reg.problems.first() {
                    line.push_str(&format!(" ({first})"));
                }
                row(if i == 0 { "regions" } else { "" }, line);
            }
        }
        Err(e) => row("regions", format!("unavailable: {e}")),
    }
    match &p.edges {
        Ok(v) => {
            let n = |s: LivenessState| v.edges.iter().filter(|e| edge_state(e) == s).count();
            let rate: f64 = v.edges.iter().map(|e| e.ingest_rate).sum();
            let backlog: u64 = v.edges.iter().map(|e| e.spool_records).sum();
            let backlog_bytes: u64 = v.edges.iter().map(|e| e.spool_bytes).sum();
            let running: usize = v
                .edges
                .iter()
                .flat_map(|e| &e.instances)
                .filter(|i| i.state == "running")
                .count();
            let total: usize = v.edges.iter().map(|e| e.instances.len()).sum();
            let mut line = format!(
                "{} ({} up, {} suspect, {} down) · ingest {} rec/s · backlog {} records (spool {}) · \
                 monitor instances {running}/{total} running",
                v.edges.len(),
                n(LivenessState::Up),
                n(LivenessState::Suspect),
                n(LivenessState::Down),
                count(rate.round() as u64),
                count(backlog),
                bytes(backlog_bytes),
            );
            let down: Vec<&str> = v
                .edges
                .iter()
                .filter(|e| matches!(edge_state(e), LivenessState::Down | LivenessState::Suspect))
                .map(|e| e.name.as_str())
                .collect();
            if !down.is_empty() {
                line.push_str(&format!(" · not up: {}", down.join(", ")));
            }
            row("edges", line);
            if !v.errors.is_empty() {
                row("", failures(&v.errors).trim_end().to_owned());
            }
        }
        Err(e) => row("edges", format!("unavailable: {e}")),
    }
    match &p.devices {
        Ok(v) => {
            let regions: BTreeSet<&str> = v.devices.iter().map(|d| d.region.as_str()).collect();
            let tenants: BTreeSet<&str> = v.devices.iter().map(|d| d.tenant.as_str()).collect();
            let stored: u64 = v.devices.iter().map(|d| d.records).sum();
            let silent = v
                .devices
                .iter()
                .filter(|d| now - d.last_ts_ms > 60_000)
                .count();
            row(
                "devices",
                format!(
                    "{} in {} region(s), {} tenant(s) · {} records stored · {} silent > 1m",
                    count(v.devices.len() as u64),
                    regions.len(),
                    tenants.len(),
                    count(stored),
                    silent
                ),
            );
        }
        Err(e) => row("devices", format!("unavailable: {e}")),
    }
    match &p.alerts {
        Ok(v) => {
            let mut line = format!(
                "{}{} in the last hour",
                v.count,
                if v.truncated { "+" } else { "" }
            );
            if let Some(a) = v.alerts.first() {
                line.push_str(&format!(
                    " · newest {} ago: {} {}/{} {}",
                    ago(now - a.ts_ms),
                    a.severity.as_str(),
                    a.tenant,
                    a.device,
                    a.message
                ));
            }
            row("alerts", line);
        }
        Err(e) => row("alerts", format!("unavailable: {e}")),
    }
    // Key column without a header: a block, not a table.
    table(&["", ""], &rows)
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.trim_end()))
        .collect()
}

/// `devices` as a table.
pub fn render_devices(v: &DevicesView) -> String {
    let mut out = if v.devices.is_empty() {
        "no devices\n".to_owned()
    } else {
        let rows: Vec<Vec<String>> = v
            .devices
            .iter()
            .map(|d| {
                vec![
                    d.region.clone(),
                    d.tenant.clone(),
                    d.device.clone(),
                    d.edge.clone().unwrap_or_else(|| "-".to_owned()),
                    count(d.records),
                    utc(d.first_ts_ms),
                    utc(d.last_ts_ms),
                    count(d.retransmissions_dropped),
                ]
            })
            .collect();
        table(
            &[
                "REGION", "TENANT", "DEVICE", "EDGE", "RECORDS", "FIRST", "LAST", "RESENDS",
            ],
            &rows,
        )
    };
    out.push_str(&failures(&v.errors));
    out
}

/// Raw readings: time, seq, then one column per metric (any record's).
pub fn render_records(records: &[RecordView]) -> String {
    let metrics: BTreeSet<&str> = records
        .iter()
        .flat_map(|r| r.metrics.keys().map(String::as_str))
        .collect();
    let mut headers = vec!["TIME", "SEQ"];
    headers.extend(metrics.iter().copied());
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut row = vec![
                utc_ms(r.ts_ms),
                r.seq.map_or("-".to_owned(), |s| s.to_string()),
            ];
            row.extend(
                metrics
                    .iter()
                    .map(|m| r.metrics.get(*m).map_or("-".to_owned(), |v| v.to_string())),
            );
            row
        })
        .collect();
    table(&headers, &rows)
}

/// `ms` as UTC with milliseconds: readings come faster than one a second.
fn utc_ms(ms: i64) -> String {
    let s = utc(ms);
    format!("{}.{:03}Z", s.trim_end_matches('Z'), ms.rem_euclid(1000))
}

/// A telemetry read as a table (raw or downsampled).
pub fn render_telemetry(v: &TelemetryView) -> String {
    let mut out = match &v.data {
        TelemetryData::Raw { records } if records.is_empty() => format!(
            "no readings of {}/{} between {} and {}\n",
            v.tenant,
            v.device,
            utc(v.from_ms),
            utc(v.to_ms)
        ),
        TelemetryData::Raw { records } => render_records(records),
        TelemetryData::Downsampled { buckets } if buckets.is_empty() => format!(
            "no readings of {}/{} between {} and {}\n",
            v.tenant,
            v.device,
            utc(v.from_ms),
            utc(v.to_ms)
        ),
        TelemetryData::Downsampled { buckets } => {
            let rows: Vec<Vec<String>> = buckets
                .iter()
                .map(|b| {
                    vec![
                        b.metric.clone(),
                        utc(b.start_ms),
                        format!("{:.3}", b.min),
                        format!("{:.3}", b.avg),
                        format!("{:.3}", b.max),
                        count(b.count),
                    ]
                })
                .collect();
            table(&["METRIC", "FROM", "MIN", "AVG", "MAX", "COUNT"], &rows)
        }
    };
    if v.truncated {
        out.push_str(&format!(
            "({} shown; more exist: raise --limit, shorten --since or add --step)\n",
            v.count
        ));
    }
    if v.stale {
        out.push_str("(stale: read from a region replica without a leader)\n");
    }
    out
}

/// Alert rows, in the order given.
pub fn render_alert_rows(alerts: &[AlertView]) -> String {
    let rows: Vec<Vec<String>> = alerts
        .iter()
        .map(|a| {
            vec![
                utc(a.ts_ms),
                a.severity.as_str().to_owned(),
                a.region.clone(),
                a.tenant.clone(),
                a.device.clone(),
                a.monitor.clone(),
                a.code.clone(),
                a.message.clone(),
            ]
        })
        .collect();
    table(
        &[
            "TIME", "SEVERITY", "REGION", "TENANT", "DEVICE", "MONITOR", "CODE", "MESSAGE",
        ],
        &rows,
    )
}

#[cfg(test)]
#[path = "observe_cli_tests.rs"]
mod tests;
