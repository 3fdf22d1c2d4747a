//! `strata monitor submit|list|inspect|delete` and `strata alerts`: the
//! device-monitor commands, talking to central's HTTP API.
//!
//! Input handling lives in `monitor_spec.rs` and output rendering in
//! `monitor_table.rs`; this file holds the arguments, the HTTP calls and
//! the exit codes (2: fix the input or request; 1: central unreachable or
//! failing, retry later).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use central::http::monitor_views::{AlertsView, MonitorView, MonitorsView};
use clap::{Args, Subcommand};
use serde_json::Value;
use strata_protocol::workload::MAX_ARTIFACT_BYTES;
use strata_protocol::Severity;

use crate::api_token::{self, TokenSource, TOKEN_ENV};
use crate::monitor_spec::{self, CliError, API_ENV};
use crate::monitor_table;

/// Whole-request deadline: generous enough for an 8 MiB upload on a slow
/// link, short enough that a hung central does not hang a script.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where central is and how to print its answer.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Central's HTTP API, `http://host:port` or `host:port`. Default:
    /// $STRATA_API, else http://127.0.0.1:8080 (where `strata up` serves it).
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// Print central's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Central's operator token. Default: $STRATA_TOKEN, else the token
    /// file of `strata up`, <data-dir>/central/operator.token.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The `strata up` data dir whose token file is used when neither
    /// --token nor $STRATA_TOKEN is given.
    #[arg(long, value_name = "DIR", default_value = "strata-data")]
    pub data_dir: PathBuf,
}

/// What the commands read from the environment: read once in `main`,
/// passed in elsewhere, so tests never touch the process environment.
#[derive(Debug, Clone, Default)]
pub struct CliEnv {
    /// `$STRATA_API`.
    pub api: Option<String>,
    /// `$STRATA_TOKEN`.
    pub token: Option<String>,
}

impl CliEnv {
    /// The process environment.
    pub fn from_process() -> CliEnv {
        CliEnv {
            api: std::env::var(API_ENV).ok(),
            token: std::env::var(TOKEN_ENV).ok(),
        }
    }
}

/// Exit status of every command that talks to central, shown in `--help`
/// (see `CliError::exit_code`).
pub(crate) const EXIT_CODES: &str = "Exit status: 0 done; 2 bad input or refused by central \
                                     (4xx: fix the spec, arguments or names); 1 central \
                                     unreachable or failing (retry later).";

/// `strata monitor …`
#[derive(Debug, Subcommand)]
pub enum MonitorCmd {
    /// Create or update a monitor from a spec file (.toml or .json).
    #[command(after_help = EXIT_CODES)]
    Submit {
        #[command(flatten)]
        api: ApiArgs,
        /// Region to run the monitor in.
        #[arg(long)]
        region: String,
        /// WebAssembly module to upload first; its sha256 and size fill the
        /// spec's `artifact` (which may then be omitted).
        #[arg(long, value_name = "FILE.wasm")]
        module: Option<PathBuf>,
        /// The monitor spec.
        #[arg(value_name = "SPEC")]
        spec: PathBuf,
    },
    /// List monitors of every region.
    #[command(after_help = EXIT_CODES)]
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this region's.
        #[arg(long)]
        region: Option<String>,
    },
    /// Show one monitor: spec, placement and the instance's reported state.
    #[command(after_help = EXIT_CODES)]
    Inspect {
        #[command(flatten)]
        api: ApiArgs,
        /// Region.
        region: String,
        /// Tenant.
        tenant: String,
        /// Monitor name.
        name: String,
    },
    /// Delete a monitor; its edge stops the instance.
    #[command(after_help = EXIT_CODES)]
    Delete {
        #[command(flatten)]
        api: ApiArgs,
        /// Region.
        region: String,
        /// Tenant.
        tenant: String,
        /// Monitor name.
        name: String,
    },
}

/// `strata alerts …`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only this tenant's alerts.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only alerts about this device.
    #[arg(long)]
    pub device: Option<String>,
    /// Only alerts raised by this monitor.
    #[arg(long)]
    pub monitor: Option<String>,
    /// Only this severity or worse: info, warning or critical.
    #[arg(long)]
    pub severity: Option<Severity>,
    /// How far back to look, e.g. 30s, 10m, 2h, 1d. Default: central's
    /// (the last hour).
    #[arg(long, value_name = "DURATION", value_parser = monitor_spec::parse_duration)]
    pub since: Option<u64>,
    /// Most alerts to show (1-10000). Default: central's (1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: Option<u32>,
    /// Only this region's.
    #[arg(long)]
    pub region: Option<String>,
    /// Keep printing alerts as they are stored, oldest first (Ctrl-C to
    /// stop), starting --since ago (default 1m); with --json, one JSON
    /// alert per line.
    #[arg(long, short)]
    pub follow: bool,
}

/// Runs a `monitor` command; prints the error and picks the exit code.
pub async fn monitor(cmd: MonitorCmd) -> ExitCode {
    let env = CliEnv::from_process();
    finish(run_monitor(cmd, &env, &mut std::io::stdout(), &mut std::io::stderr()).await)
}

/// Runs `alerts`; prints the error and picks the exit code.
pub async fn alerts(args: AlertsArgs) -> ExitCode {
    let env = CliEnv::from_process();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    finish(
        run_alerts(
            args,
            &env,
            now,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )
        .await,
    )
}

pub(crate) fn finish(r: Result<(), CliError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// A central API client.
pub(crate) struct Api {
    pub(crate) base: reqwest::Url,
    http: reqwest::Client,
    /// The same headers without a whole-request deadline, for streams.
    stream_http: reqwest::Client,
    /// Where the token it sends came from, for the 401 message.
    pub(crate) token_source: TokenSource,
}

/// The client and URL of one monitor.
fn monitor_url(
    api: &ApiArgs,
    env: &CliEnv,
    region: &str,
    tenant: &str,
    name: &str,
) -> Result<(Api, reqwest::Url), CliError> {
    let client = Api::new(api, env)?;
    let url = client.url(
        &["api", "v1", "regions", region, "monitors", tenant, name],
        &[],
    );
    Ok((client, url))
}

impl Api {
    pub(crate) fn new(args: &ApiArgs, env: &CliEnv) -> Result<Api, CliError> {
        let base = monitor_spec::resolve_api(args.api.as_deref(), env.api.as_deref())?;
        let token =
            api_token::resolve(args.token.as_deref(), env.token.as_deref(), &args.data_dir)?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &token.token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                    .map_err(|_| CliError::Input(format!("{} is not a token", token.source)))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = |timeout: Option<Duration>| {
            let mut b = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .default_headers(headers.clone());
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            b.build()
                .map_err(|e| CliError::Transport(format!("cannot create an HTTP client: {e}")))
        };
        Ok(Api {
            base,
            http: client(Some(REQUEST_TIMEOUT))?,
            stream_http: client(None)?,
            token_source: token.source,
        })
    }

    /// `base` plus path segments (each percent-encoded) and query pairs.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// The HTTP client for a long-lived response (an event stream): no
    /// whole-request deadline.
    pub(crate) fn streaming(&self) -> &reqwest::Client {
        &self.stream_http
    }

    /// Sends a request; a 2xx answer's JSON, or the API error.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(u16, Value), CliError> {
        let mut req = self.http.request(method.clone(), url.clone());
        if let Some((content_type, bytes)) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let resp = req.send().await.map_err(|e| {
            CliError::Transport(format!(
                "cannot reach central at {}: {} (is it running? point --api or {API_ENV} at it)",
                self.base,
                with_causes(&e)
            ))
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::Transport(format!("{method} {url}: reading the answer: {e}")))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return json.map(|j| (status, j)).ok_or_else(|| {
                CliError::Transport(format!("{method} {url}: answer is not JSON: {text:.200}"))
            });
        }
        Err(self.api_error(&method, &url, status, &text))
    }

    /// The error of a non-2xx answer: its JSON error body (with the bad
    /// fields), or its text; a 401 says where the token came from.
    pub(crate) fn api_error(
        &self,
        method: &reqwest::Method,
        url: &reqwest::Url,
        status: u16,
        text: &str,
    ) -> CliError {
        let json: Option<Value> = serde_json::from_str(text).ok();
        let err = json.as_ref().map(|j| &j["error"]);
        let field = |k: &str| err.and_then(|e| e[k].as_str()).map(str::to_owned);
        let mut message =
            field("message").unwrap_or_else(|| format!("{method} {url} failed: {}", text.trim()));
        if status == 401 {
            message = format!(
                "{message}\n{}",
                api_token::unauthorized_hint(&self.token_source)
            );
        }
        CliError::Api {
            status,
            code: field("code").unwrap_or_else(|| "http-error".into()),
            message,
            fields: err
                .and_then(|e| e["fields"].as_array())
                .into_iter()
                .flatten()
                .map(|f| {
                    (
                        f["field"].as_str().unwrap_or("?").to_owned(),
                        f["message"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect(),
        }
    }
}

/// `e` and its sources (reqwest's own message hides the OS error).
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::Input(format!("cannot read {what} {}: {e}", path.display())))
}

/// Writes `text`, ending it with a newline if it has none (tables are
/// built without one; a shell prompt must not land on their last line).
pub(crate) fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    let nl: &[u8] = if text.is_empty() || text.ends_with('\n') {
        b""
    } else {
        b"\n"
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.write_all(nl))
        .map_err(|e| CliError::Transport(format!("cannot write output: {e}")))
}

pub(crate) fn print_json(out: &mut dyn Write, v: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    write_out(out, &format!("{text}\n"))
}

pub(crate) fn print_warnings(err: &mut dyn Write, body: &Value) -> Result<(), CliError> {
    for w in monitor_table::warnings(body) {
        write_out(err, &format!("{w}\n"))?;
    }
    Ok(())
}

/// Runs one `monitor` command; output to `out`, notes to `err`.
pub async fn run_monitor(
    cmd: MonitorCmd,
    env: &CliEnv,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    match cmd {
        MonitorCmd::Submit {
            api,
            region,
            module,
            spec,
        } => submit(&api, env, &region, module.as_deref(), &spec, out, err).await,
        MonitorCmd::List {
            api,
            tenant,
            region,
        } => {
            let client = Api::new(&api, env)?;
            let mut query = Vec::new();
            query.extend(tenant.map(|t| ("tenant", t)));
            query.extend(region.map(|r| ("region", r)));
            let (view, body): (MonitorsView, _) =
                crate::observe_cli::get(&client, &["api", "v1", "monitors"], &query).await?;
            print_warnings(err, &body)?;
            if api.json {
                print_json(out, &body)
            } else {
                write_out(out, &monitor_table::monitors(&view))
            }
        }
        MonitorCmd::Inspect {
            api,
            region,
            tenant,
            name,
        } => {
            let client = Api::new(&api, env)?;
            let (view, body): (MonitorView, _) = crate::observe_cli::get(
                &client,
                &["api", "v1", "regions", &region, "monitors", &tenant, &name],
                &[],
            )
            .await?;
            if api.json {
                print_json(out, &body)
            } else {
                write_out(out, &monitor_table::monitor(&view))
            }
        }
        MonitorCmd::Delete {
            api,
            region,
            tenant,
            name,
        } => {
            let (client, url) = monitor_url(&api, env, &region, &tenant, &name)?;
            let (_, body) = client.call(reqwest::Method::DELETE, url, None).await?;
            if api.json {
                print_json(out, &body)
            } else {
                write_out(
                    out,
                    &format!("deleted monitor {tenant}/{name} from region {region}\n"),
                )
            }
        }
    }
}

/// `monitor submit`: check the spec offline, upload the module (if any),
/// fill the artifact, submit.
async fn submit(
    api: &ApiArgs,
    env: &CliEnv,
    region: &str,
    module: Option<&Path>,
    spec_path: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let client = Api::new(api, env)?;
    let text = read_file(spec_path, "monitor spec")?;
    let text = String::from_utf8(text).map_err(|_| {
        CliError::Input(format!(
            "{}: the spec is not UTF-8 text",
            spec_path.display()
        ))
    })?;
    let bytes = match module {
        None => None,
        Some(m) => {
            let bytes = read_file(m, "module")?;
            if bytes.is_empty() {
                return Err(CliError::Input(format!(
                    "{}: the module is empty",
                    m.display()
                )));
            }
            if bytes.len() as u64 > MAX_ARTIFACT_BYTES {
                return Err(CliError::Input(format!(
                    "{}: the module is {} bytes, above the {MAX_ARTIFACT_BYTES}-byte ({} MiB) limit",
                    m.display(),
                    bytes.len(),
                    MAX_ARTIFACT_BYTES >> 20
                )));
            }
            Some((m, bytes))
        }
    };
    // Everything checkable offline is checked before anything is uploaded.
    let loaded = monitor_spec::parse_spec(
        spec_path,
        &text,
        bytes.as_ref().map(|(_, b)| b.len() as u64),
    )?;
    let mut spec = loaded.spec;
    if let Some((path, bytes)) = bytes {
        let url = client.url(&["api", "v1", "regions", region, "artifacts"], &[]);
        let (_, stored) = client
            .call(
                reqwest::Method::POST,
                url,
                Some(("application/wasm", bytes)),
            )
            .await
            .map_err(|e| match e {
                CliError::Api {
                    status,
                    code,
                    message,
                    fields,
                } => CliError::Api {
                    status,
                    code,
                    message: format!("uploading module {}: {message}", path.display()),
                    fields,
                },
                other => other,
            })?;
        let (Some(sha256), Some(size)) = (stored["sha256"].as_str(), stored["size-bytes"].as_u64())
        else {
            return Err(CliError::Transport(format!(
                "central's answer to the module upload has no sha256 / size-bytes: {stored}"
            )));
        };
        write_out(
            err,
            &format!(
                "{} module {} to region {region}: sha256 {sha256}, {size} bytes\n",
                if stored["created"] == Value::Bool(true) {
                    "uploaded"
                } else {
                    "region already had"
                },
                path.display()
            ),
        )?;
        if let Some(note) = monitor_spec::fill_artifact(
            &mut spec,
            loaded.file_artifact.as_ref(),
            sha256.to_owned(),
            size,
        ) {
            write_out(err, &format!("note: {note}\n"))?;
        }
    }
    let body = serde_json::to_vec(&spec)
        .map_err(|e| CliError::Input(format!("cannot encode the spec: {e}")))?;
    let url = client.url(&["api", "v1", "regions", region, "monitors"], &[]);
    let (status, doc) = client
        .call(reqwest::Method::POST, url, Some(("application/json", body)))
        .await?;
    if api.json {
        return print_json(out, &doc);
    }
    write_out(
        out,
        &format!(
            "{} monitor {}/{} in region {region}: generation {}, {}\n",
            if status == 201 { "created" } else { "updated" },
            spec.tenant,
            spec.name,
            doc["generation"],
            placed_on(&doc),
        ),
    )
}

/// Where a submitted monitor runs, as its answer says (the hub waits a
/// moment for the first evaluation before answering).
fn placed_on(doc: &Value) -> String {
    let edges: Vec<&str> = doc["allocations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["desired"] == "run")
        .filter_map(|a| a["edge"].as_str())
        .collect();
    match (edges.as_slice(), doc["edge"].as_str()) {
        ([], Some(e)) if !e.is_empty() => format!("assigned to edge {e}"),
        ([], _) => format!(
            "not placed yet ({} wanted; `strata monitor inspect` says why)",
            doc["wanted"].as_u64().unwrap_or(1)
        ),
        ([e], _) => format!("assigned to edge {e}"),
        (many, _) => format!("assigned to edges {}", many.join(", ")),
    }
}

/// `alerts`: query central, print newest first.
pub async fn run_alerts(
    args: AlertsArgs,
    env: &CliEnv,
    now_ms: i64,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let client = Api::new(&args.api, env)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    query.extend(args.tenant.map(|v| ("tenant", v)));
    query.extend(args.device.map(|v| ("device", v)));
    query.extend(args.monitor.map(|v| ("monitor", v)));
    query.extend(args.severity.map(|v| ("severity", v.to_string())));
    query.extend(
        args.since
            .map(|ms| ("from", now_ms.saturating_sub(ms as i64).to_string())),
    );
    query.extend(args.limit.map(|v| ("limit", v.to_string())));
    query.extend(args.region.map(|v| ("region", v)));
    let (view, body): (AlertsView, _) =
        crate::observe_cli::get(&client, &["api", "v1", "alerts"], &query).await?;
    print_warnings(err, &body)?;
    if args.api.json {
        print_json(out, &body)
    } else {
        write_out(out, &monitor_table::alerts(&view))
    }
}

#[cfg(test)]
#[path = "monitor_cli_tests.rs"]
mod tests;
