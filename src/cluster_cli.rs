//! `strata edges` and `strata events`: edge liveness and the region event
//! log, from central's API (the token as for `strata monitor`).
//!
//! `strata events --follow` reads the Server-Sent Events stream
//! (`GET /api/v1/regions/{region}/events/stream`) and, like a browser's
//! EventSource, reconnects after a lost connection from the last event it
//! printed. Output rendering lives in `cluster_table.rs`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use central::http::events::EventsView;
use central::http::views::EdgesView;
use clap::Args;
use strata_protocol::liveness::RegionEvent;

use crate::cluster_table;
use crate::monitor_cli::{
    finish, print_json, print_warnings, with_causes, write_out, Api, ApiArgs, CliEnv, EXIT_CODES,
};
use crate::monitor_spec::{CliError, API_ENV};
use crate::observe_cli::get;

/// Pause before a lost event stream is opened again.
const RECONNECT: Duration = Duration::from_secs(1);

/// `strata edges`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct EdgesArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only this region's.
    #[arg(long)]
    pub region: Option<String>,
}

/// `strata events`
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct EventsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The region. Default: the only one, when central federates one
    /// (`strata up --single-region`); with several (`strata up` runs north
    /// and south) it must be given.
    #[arg(long)]
    pub region: Option<String>,
    /// Only events after this sequence number (0: all the region holds).
    #[arg(long, default_value_t = 0)]
    pub since: u64,
    /// Most events to show (1-1000). Default: central's (100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Keep printing events as they happen (Ctrl-C to stop); with --json,
    /// one JSON document per line.
    #[arg(long, short)]
    pub follow: bool,
}

/// Runs `edges`; prints the error and picks the exit code.
pub async fn edges(args: EdgesArgs) -> ExitCode {
    let env = CliEnv::from_process();
    finish(run_edges(args, &env, &mut std::io::stdout(), &mut std::io::stderr()).await)
}

/// Runs `events`; prints the error and picks the exit code.
pub async fn events(args: EventsArgs) -> ExitCode {
    let env = CliEnv::from_process();
    finish(run_events(args, &env, &mut std::io::stdout(), &mut std::io::stderr()).await)
}

/// `edges`: central's edge list as a table.
pub async fn run_edges(
    args: EdgesArgs,
    env: &CliEnv,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let client = Api::new(&args.api, env)?;
    let query: Vec<(&str, String)> = args.region.map(|r| ("region", r)).into_iter().collect();
    let (view, body): (EdgesView, _) = get(&client, &["api", "v1", "edges"], &query).await?;
    print_warnings(err, &body)?;
    if args.api.json {
        print_json(out, &body)
    } else {
        write_out(out, &cluster_table::edges(&view))
    }
}

/// The region `events` reads (resolved before any call).
fn region_of(args: &EventsArgs) -> &str {
    args.region.as_deref().unwrap_or_default()
}

/// The only region central federates, or a usage error naming them all.
async fn only_region(client: &Api) -> Result<String, CliError> {
    let url = client.url(&["api", "v1", "regions"], &[]);
    let (_, body) = client.call(reqwest::Method::GET, url, None).await?;
    let names: Vec<String> = body["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(CliError::Input(format!(
            "give --region: central federates {}",
            if names.is_empty() {
                "no region".to_owned()
            } else {
                names.join(", ")
            }
        ))),
    }
}

/// `events`: one page, or with `--follow` the stream.
pub async fn run_events(
    args: EventsArgs,
    env: &CliEnv,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let client = Api::new(&args.api, env)?;
    let region = match &args.region {
        Some(r) => r.clone(),
        None => only_region(&client).await?,
    };
    let args = EventsArgs {
        region: Some(region),
        ..args
    };
    if args.follow {
        return follow(&client, &args, out, err).await;
    }
    let mut query = vec![("since", args.since.to_string())];
    query.extend(args.limit.map(|l| ("limit", l.to_string())));
    let (view, body): (EventsView, _) = get(
        &client,
        &["api", "v1", "regions", region_of(&args), "events"],
        &query,
    )
    .await?;
    if args.api.json {
        print_json(out, &body)
    } else {
        write_out(out, &cluster_table::events(&view))
    }
}

/// Prints the region's events as they come, reconnecting from the last one
/// printed whenever the stream is lost. Returns only on an error central
/// answers (4xx/5xx) or when central cannot be reached at all at first.
async fn follow(
    client: &Api,
    args: &EventsArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let mut last = args.since;
    let mut connected_once = false;
    loop {
        let url = client.url(
            &["api", "v1", "regions", region_of(args), "events", "stream"],
            &[("since", last.to_string())],
        );
        let sent = client
            .streaming()
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) if !connected_once => {
                return Err(CliError::Transport(format!(
                "cannot reach central at {}: {} (is it running? point --api or {API_ENV} at it)",
                client.base,
                with_causes(&e)
            )))
            }
            Err(e) => {
                write_out(err, &format!("event stream: {e}; reconnecting\n"))?;
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
        };
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = resp.text().await.unwrap_or_default();
            return Err(client.api_error(&reqwest::Method::GET, &url, status, &text));
        }
        connected_once = true;
        let mut parser = SseParser::default();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    write_out(err, &format!("event stream lost: {e}; reconnecting\n"))?;
                    break;
                }
            };
            for ev in parser.feed(&String::from_utf8_lossy(&chunk)) {
                match ev.event.as_str() {
                    "gap" => write_out(
                        err,
                        &format!(
                            "(events missed: the region no longer holds them: {})\n",
                            ev.data
                        ),
                    )?,
                    "error" => write_out(err, &format!("region: {}\n", ev.data))?,
                    _ => {
                        if let Some(id) = ev.id.as_deref().and_then(|i| i.parse().ok()) {
                            last = id;
                        }
                        let line = if args.api.json {
                            ev.data.clone()
                        } else {
                            match serde_json::from_str::<RegionEvent>(&ev.data) {
                                Ok(e) => cluster_table::event_line(&e),
                                Err(e) => {
                                    format!("(an event this CLI cannot read: {e}) {}", ev.data)
                                }
                            }
                        };
                        write_out(out, &format!("{line}\n"))?;
                        out.flush().ok();
                    }
                }
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `id:`, when given.
    pub id: Option<String>,
    /// `event:` (`message` when not given).
    pub event: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// An incremental `text/event-stream` parser: feed it chunks as they come,
/// get the complete events (comments, the keep-alives, are skipped).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: String,
}

impl SseParser {
    /// Adds `chunk`; returns the events it completed.
    pub fn feed(&mut self, chunk: &str) -> Vec<SseEvent> {
        self.buf.push_str(&chunk.replace("\r\n", "\n"));
        let mut out = Vec::new();
        while let Some(end) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..end + 2).collect();
            let mut ev = SseEvent::default();
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "" => {} // a comment
                    "id" => ev.id = Some(value.to_owned()),
                    "event" => ev.event = value.to_owned(),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if data.is_empty() {
                continue;
            }
            ev.data = data.join("\n");
            if ev.event.is_empty() {
                ev.event = "message".into();
            }
            out.push(ev);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_parsed_across_chunks_and_comments_are_skipped() {
        let mut p = SseParser::default();
        assert!(p.feed(": keep-alive\n\n").is_empty());
        assert!(p.feed("id: 7\nevent: edge-do").is_empty());
        let got = p.feed("wn\ndata: {\"a\":1}\n\nid: 8\r\ndata: x\r\ndata: y\r\n\r\n");
        assert_eq!(
            got,
            vec![
                SseEvent {
                    id: Some("7".into()),
                    event: "edge-down".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    id: Some("8".into()),
                    event: "message".into(),
                    data: "x\ny".into()
                }
            ]
        );
    }
}
