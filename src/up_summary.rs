//! `strata up`'s one live summary line (unless `--verbose`): ingest rate,
//! spool backlog, edges up, stored devices and alerts of the last hour,
//! read from central's API like any other client would.
//!
//! On a terminal the line is redrawn in place every [`TTY_EVERY`]; piped
//! into a file or another program, a new line is written every
//! [`PIPE_EVERY`] instead, so a log of the run stays readable.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use central::http::monitor_views::AlertsView;
use central::http::views::EdgesView;
use strata_protocol::liveness::LivenessState;
use tokio_util::sync::CancellationToken;

use crate::cluster_table::bytes;
use crate::monitor_cli::{Api, ApiArgs, CliEnv};
use crate::observe_cli::{count, get};

/// Redraw period on a terminal.
const TTY_EVERY: Duration = Duration::from_secs(2);
/// Line period when not a terminal.
const PIPE_EVERY: Duration = Duration::from_secs(15);

/// The summary of `edges` and the last hour's `alerts`.
pub fn line(edges: &EdgesView, alerts: &AlertsView) -> String {
    let rate: f64 = edges.edges.iter().map(|e| e.ingest_rate).sum();
    let backlog: u64 = edges.edges.iter().map(|e| e.spool_records).sum();
    let backlog_bytes: u64 = edges.edges.iter().map(|e| e.spool_bytes).sum();
    let up = edges
        .edges
        .iter()
        .filter(|e| e.liveness.as_ref().map(|l| l.state) == Some(LivenessState::Up))
        .count();
    let mut text = format!(
        "ingest {} rec/s · backlog {} records · spool {} · edges {up}/{} up · alerts {}{} in the last hour",
        count(rate.round() as u64),
        count(backlog),
        bytes(backlog_bytes),
        edges.edges.len(),
        alerts.count,
        if alerts.truncated { "+" } else { "" },
    );
    let missing: Vec<&str> = edges.errors.iter().map(|f| f.region.as_str()).collect();
    if !missing.is_empty() {
        text.push_str(&format!(" · no answer from {}", missing.join(", ")));
    }
    text
}

/// Prints the line until `shutdown`.
pub async fn run(api: SocketAddr, token_file: PathBuf, shutdown: CancellationToken) {
    let token = std::fs::read_to_string(&token_file)
        .map(|t| t.trim().to_owned())
        .ok();
    let args = ApiArgs {
        api: Some(format!("http://{api}")),
        json: false,
        token,
        data_dir: PathBuf::new(),
    };
    let client = match Api::new(&args, &CliEnv::default()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no summary line");
            return;
        }
    };
    let tty = std::io::stdout().is_terminal();
    let every = if tty { TTY_EVERY } else { PIPE_EVERY };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let hour = [("from", (now - 3_600_000).to_string())];
        let (edges, alerts) = tokio::join!(
            get::<EdgesView>(&client, &["api", "v1", "edges"], &[]),
            get::<AlertsView>(&client, &["api", "v1", "alerts"], &hour),
        );
        let text = match (edges, alerts) {
            (Ok((e, _)), Ok((a, _))) => line(&e, &a),
            (Err(e), _) | (_, Err(e)) => format!("central: {e}"),
        };
        let mut out = std::io::stdout().lock();
        let _ = if tty {
            // Clear the line, then draw: a shorter line leaves no tail.
            write!(out, "\r\x1b[2K{text}")
        } else {
            writeln!(out, "{text}")
        };
        let _ = out.flush();
    }
    if tty {
        println!();
    }
}

#[cfg(test)]
mod tests {
    use central::http::views::RegionFailure;

    use super::*;

    #[test]
    fn the_line_sums_edges_and_names_silent_regions() {
        let edges: EdgesView = serde_json::from_value(serde_json::json!({
            "edges": [], "stale": false,
            "errors": [{"region": "south", "code": "unavailable", "message": "x"}]
        }))
        .unwrap();
        assert_eq!(
            edges.errors,
            vec![RegionFailure {
                region: "south".into(),
                code: "unavailable".into(),
                message: "x".into()
            }]
        );
        let alerts: AlertsView = serde_json::from_value(serde_json::json!({
            "alerts": [], "count": 3, "truncated": false, "from-ms": 0, "to-ms": 1,
            "stale": false, "errors": []
        }))
        .unwrap();
        assert_eq!(
            line(&edges, &alerts),
            "ingest 0 rec/s · backlog 0 records · spool 0 B · edges 0/0 up · alerts 3 in the last hour \
             · no answer from south"
        );
    }
}
