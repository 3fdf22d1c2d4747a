//! Edge liveness as central serves it: an edge's state in
//! `GET /api/v1/edges`, the region's event log, and its Server-Sent Events
//! stream read event by event.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::cluster::Api;

/// One edge's `liveness` in `GET /api/v1/edges` (null fields as defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeState {
    /// `up`, `suspect`, `down` or `unknown`.
    pub state: String,
    /// `none`, `undetermined`, `shutdown`, `crash`, `edge-failure`, `partition`.
    pub classification: String,
    /// What the classification rests on.
    pub evidence: Vec<String>,
    /// The edge process's boot id.
    pub boot_id: u64,
    /// Last heartbeat to down decision, for a down edge.
    pub detection_ms: Option<u64>,
}

impl EdgeState {
    fn of(l: &Value) -> Option<EdgeState> {
        Some(EdgeState {
            state: l["state"].as_str()?.to_owned(),
            classification: l["classification"].as_str().unwrap_or("").to_owned(),
            evidence: l["evidence"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect(),
            boot_id: l["boot-id"].as_u64().unwrap_or(0),
            detection_ms: l["detection-ms"].as_u64(),
        })
    }
}

/// `edge`'s liveness, when central answers and the region decided one.
pub async fn edge_state(api: &Api, edge: &str) -> Option<EdgeState> {
    let (status, body) = api.get("/api/v1/edges").await.ok()?;
    if status != 200 {
        return None;
    }
    body["edges"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == edge)
        .and_then(|e| EdgeState::of(&e["liveness"]))
}

/// Polls (every 20 ms, so the time it returns is close to the change)
/// until `edge` is in `state`; returns it and when it was first seen.
pub async fn wait_edge_state(
    api: &Api,
    edge: &str,
    state: &str,
    timeout: Duration,
) -> anyhow::Result<(EdgeState, Instant)> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(s) = edge_state(api, edge).await {
            if s.state == state {
                return Ok((s, Instant::now()));
            }
            last = Some(s);
        }
        if Instant::now() >= deadline {
            bail!("{edge} not {state} after {timeout:?}; last seen: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The newest event's sequence number in `region`'s log (0: none).
pub async fn last_event_seq(api: &Api, region: &str) -> anyhow::Result<u64> {
    let (status, body) = api
        .get(&format!("/api/v1/regions/{region}/events?since=0&limit=1"))
        .await?;
    anyhow::ensure!(status == 200, "events: {status} {body}");
    // One event from the oldest: ask again from the newest end.
    let mut since = body["last-seq"].as_u64().unwrap_or(0);
    loop {
        let (_, body) = api
            .get(&format!(
                "/api/v1/regions/{region}/events?since={since}&limit=1000"
            ))
            .await?;
        let next = body["last-seq"].as_u64().unwrap_or(since);
        if next == since {
            return Ok(since);
        }
        since = next;
    }
}

/// Every event of `region` after `since`.
pub async fn events_since(api: &Api, region: &str, since: u64) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut since = since;
    loop {
        let (status, body) = api
            .get(&format!(
                "/api/v1/regions/{region}/events?since={since}&limit=1000"
            ))
            .await?;
        anyhow::ensure!(status == 200, "events: {status} {body}");
        let page = body["events"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return Ok(out);
        }
        since = body["last-seq"].as_u64().unwrap_or(since);
        out.extend(page);
    }
}

/// A region's event stream (`…/events/stream`), read event by event.
pub struct EventStream {
    resp: reqwest::Response,
    buf: String,
    ready: VecDeque<(String, Value)>,
}

impl EventStream {
    /// Opens the stream of `region` from after `since`.
    pub async fn open(api: &Api, region: &str, since: u64) -> anyhow::Result<EventStream> {
        let resp = api
            .get_stream(&format!(
                "/api/v1/regions/{region}/events/stream?since={since}"
            ))
            .await?;
        anyhow::ensure!(
            resp.status() == 200,
            "event stream: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
        Ok(EventStream {
            resp,
            buf: String::new(),
            ready: VecDeque::new(),
        })
    }

    /// The next event (SSE `event` name and JSON data), within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<(String, Value)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(e);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .with_context(|| format!("no event within {timeout:?}"))??
                .context("the event stream ended")?;
            self.buf
                .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = "message".to_owned();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if !data.is_empty() {
                    self.ready
                        .push_back((name, serde_json::from_str(&data).unwrap_or(Value::Null)));
                }
            }
        }
    }

    /// The next event of `kind` about `subject`, skipping others.
    pub async fn next_of(
        &mut self,
        kind: &str,
        subject: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (name, data) = self
                .next(left)
                .await
                .with_context(|| format!("waiting for {kind} of {subject}"))?;
            if name == kind && data["subject"] == subject {
                return Ok(data);
            }
        }
    }
}
