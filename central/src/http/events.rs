//! The region event log: `GET /api/v1/regions/{region}/events` (a page,
//! long-polled with `wait`) and `GET /api/v1/regions/{region}/events/stream`
//! (Server-Sent Events). Both need the operator token like every API route
//! (`Action::ReadEvents` in the route table).
//!
//! `since` is the last sequence number the client has (0, the default, for
//! everything the region still holds): the answer holds the events after
//! it, and `last-seq` is the `since` of the next call. The SSE stream takes
//! the same `since`, or the standard `Last-Event-ID` header when it
//! reconnects; each event's `id` is its sequence number and its `event`
//! its kind (`edge-down`, …). When the region's bounded log dropped events
//! the client had not read, it says how many (`missed`; an SSE `gap` event).
//!
//! # Streams and the server's timeouts
//! `http.request-timeout` bounds how long a route takes to produce its
//! response head, not how long its body streams: the stream answers at
//! once and then sends events as the region's log grows (long-polling the
//! hubs underneath). What bounds a stream is `http.idle-timeout`, which
//! counts every byte written as progress: the stream writes a keep-alive
//! comment every [`AppOptions::stream_keep_alive`] (at most half the idle
//! timeout), so an idle stream stays open. It ends when central shuts down.
//! A long poll (`wait`) is an ordinary request and must end within the
//! request timeout, so `wait` is capped at [`AppOptions::events_max_wait`].
//!
//! [`AppOptions::stream_keep_alive`]: super::AppOptions::stream_keep_alive
//! [`AppOptions::events_max_wait`]: super::AppOptions::events_max_wait

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::Serialize;
use strata_protocol::liveness::{EventPage, RegionEvent};
use tokio_util::sync::CancellationToken;

use super::error::AppError;
use super::handlers::Pairs;
use super::params;
use super::AppState;
use crate::region::{RegionApi, Served};

/// Events returned when `limit` is not given.
pub const DEFAULT_EVENT_LIMIT: u32 = 100;
/// Largest accepted `limit` (the hub's page size).
pub const MAX_EVENT_LIMIT: u32 = 1000;
/// How long the stream's hub calls wait for new events.
const STREAM_POLL: Duration = Duration::from_secs(10);
/// After a failed hub call, the stream tries again this much later.
const STREAM_RETRY: Duration = Duration::from_secs(1);

/// `GET /api/v1/regions/{region}/events`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct EventsView {
    /// Region.
    pub region: String,
    /// Events after `since`, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<RegionEvent>,
    /// The `since` of the next call: the last event's sequence number, or
    /// the newest the region has when none was returned.
    pub last_seq: u64,
    /// Oldest sequence number the region still holds (0: none).
    pub oldest_seq: u64,
    /// Events after `since` the region no longer holds (its log is
    /// bounded).
    pub missed: u64,
    /// Replica that answered.
    pub served_by: String,
    /// True when no leader could be reached and a follower answered.
    pub stale: bool,
}

impl EventsView {
    fn new(region: &str, served: Served<EventPage>) -> EventsView {
        let p = served.value;
        EventsView {
            region: region.to_owned(),
            last_seq: p.next_seq.saturating_sub(1),
            oldest_seq: p.oldest_seq,
            missed: p.missed,
            events: p.events,
            served_by: served.addr,
            stale: served.stale,
        }
    }
}

fn parse_since(v: Option<&str>, param: &str) -> Result<u64, AppError> {
    match v {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| AppError::bad_param(param, format!("{v:?} is not a sequence number"))),
    }
}

fn parse_wait(v: Option<&str>, max: Duration) -> Result<Duration, AppError> {
    let Some(v) = v else {
        return Ok(Duration::ZERO);
    };
    let d = humantime::parse_duration(v)
        .or_else(|_| v.parse::<u64>().map(Duration::from_millis))
        .map_err(|_| {
            AppError::bad_param("wait", format!("{v:?} is not a duration (e.g. 10s, 500ms)"))
        })?;
    Ok(d.min(max))
}

/// `GET /api/v1/regions/{region}/events?since=&limit=&wait=`: the events
/// after `since`; with `wait` (e.g. `20s`, capped), held until one exists.
#[utoipa::path(
    get,
    path = "/api/v1/regions/{region}/events",
    tag = "events",
    params(("region" = String, Path, description = "Region name"), ("since" = Option<u64>, Query, description = "Only events after this sequence number"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most events (default 100)"), ("wait" = Option<String>, Query, pattern = "^[0-9]{1,6}(ms|s)?$", description = "Long-poll: wait up to this long for a new event, e.g. 10s or 500ms (at most central's `events-max-wait`)")),
    responses((status = 200, description = "The region's events", body = EventsView), super::openapi::ApiErrors)
)]
pub async fn events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Pairs,
) -> Result<Json<EventsView>, AppError> {
    let Path(name) = path?;
    let Query(pairs) = query?;
    let get = params::check(&pairs, &["since", "limit", "wait"])?;
    let since = parse_since(get("since"), "since")?;
    let limit = params::parse_limit(get("limit"), DEFAULT_EVENT_LIMIT, MAX_EVENT_LIMIT)?;
    let wait = parse_wait(get("wait"), state.options().events_max_wait)?;
    let region = state.region(&name)?;
    let served = region.events(since + 1, limit, wait).await?;
    Ok(Json(EventsView::new(&name, served)))
}

/// `GET /api/v1/regions/{region}/events/stream?since=`: Server-Sent Events,
/// from `since` or the `Last-Event-ID` header (see the module docs).
#[utoipa::path(
    get,
    path = "/api/v1/regions/{region}/events/stream",
    tag = "events",
    params(("region" = String, Path, description = "Region name"), ("since" = Option<u64>, Query, description = "Only events after this sequence number")),
    responses((status = 200, description = "Server-Sent Events: one `data:` JSON event each, `id:` its sequence number; `gap` when events were missed", content_type = "text/event-stream", body = String), super::openapi::ApiErrors)
)]
pub async fn stream(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Pairs,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let Path(name) = path?;
    let Query(pairs) = query?;
    let get = params::check(&pairs, &["since"])?;
    let last_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?"));
    let since = match last_id {
        Some(id) => parse_since(Some(id), "Last-Event-ID")?,
        None => parse_since(get("since"), "since")?,
    };
    let region = state.region(&name)?.clone();
    let opts = state.options();
    let keep_alive = opts.stream_keep_alive;
    let follow = Follow {
        region,
        next: since + 1,
        queued: VecDeque::new(),
        stop: opts.streams.clone(),
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        let event = f.next_event().await?;
        Some((Ok(event), f))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(keep_alive)))
}

/// One stream's cursor in a region's log.
struct Follow {
    region: Arc<dyn RegionApi>,
    /// First sequence number not sent yet.
    next: u64,
    queued: VecDeque<Event>,
    stop: CancellationToken,
}

impl Follow {
    /// The next SSE event; `None` once central is stopping.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            let started = tokio::time::Instant::now();
            let call = self.region.events(self.next, MAX_EVENT_LIMIT, STREAM_POLL);
            let page = tokio::select! {
                _ = self.stop.cancelled() => return None,
                r = call => r,
            };
            match page {
                Ok(served) => {
                    let empty = served.value.events.is_empty();
                    self.queue(served.value);
                    // A hub that answers an empty page at once (it could
                    // not wait) must not make this loop spin.
                    if empty && started.elapsed() < STREAM_POLL / 10 {
                        tokio::select! {
                            _ = self.stop.cancelled() => return None,
                            _ = tokio::time::sleep(STREAM_RETRY) => {}
                        }
                    }
                }
                Err(e) => {
                    self.queued.push_back(
                        Event::default()
                            .event("error")
                            .data(serde_json::json!({ "message": e.to_string() }).to_string()),
                    );
                    tokio::select! {
                        _ = self.stop.cancelled() => return None,
                        _ = tokio::time::sleep(STREAM_RETRY) => {}
                    }
                }
            }
        }
    }

    fn queue(&mut self, page: EventPage) {
        if page.missed > 0 {
            self.queued.push_back(
                Event::default().event("gap").data(
                    serde_json::json!({ "missed": page.missed, "oldest-seq": page.oldest_seq })
                        .to_string(),
                ),
            );
        }
        if page.events.is_empty() && page.next_seq < self.next {
            // The region's log is behind this cursor (a rebuilt region):
            // follow it from where it is.
            self.next = page.next_seq;
        }
        for e in page.events {
            self.next = e.seq + 1;
            let data = serde_json::to_string(&e).unwrap_or_default();
            self.queued.push_back(
                Event::default()
                    .id(e.seq.to_string())
                    .event(e.kind.as_str())
                    .data(data),
            );
        }
    }
}
