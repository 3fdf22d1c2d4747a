//! `GET /api/v1/stream`: the console's one live connection (Server-Sent
//! Events). Every [`TICK`] it sends a `snapshot` event: regions (health,
//! replicas and their Raft roles, leader), edges (liveness, spool backlog,
//! sync lag, ingest rate, machine use, certificate expiry, instances),
//! monitors with their allocations, global workloads, the newest alerts,
//! and device *counts* per region and edge (refreshed every
//! [`DEVICES_EVERY`] ticks). The device list itself is never streamed: at
//! 100,000 devices it is searched and paged through `GET /api/v1/devices`.
//! New region events go out as `events` events as soon as a tick sees them.
//!
//! One [`Feed`] per central server makes the snapshots, however many
//! consoles are open: a single producer task (started by the first
//! subscriber, ended at the first tick without one) reads the regions once
//! per tick, serializes once, and broadcasts the frame; each connection
//! only copies it out. A console joining mid-way gets the latest snapshot
//! and the recent events at once. A console too slow for the broadcast
//! skips to the next frame (snapshots are whole; skipped events stay in
//! the regions' logs and `GET /api/v1/events`).
//!
//! Built from the same handlers the REST routes use, so the console and the
//! API never disagree. A client that reconnects gets a full snapshot and
//! the recent events again (it de-duplicates events by region and
//! sequence number), so the stream needs no resume cursor.
//!
//! The route's guard checks `ReadCluster`; the handler also requires every
//! other read the snapshot holds (edges, devices, monitors, alerts,
//! events), so a narrower token later cannot read through the stream what
//! it may not read through the API. Timeouts as for the region event
//! stream ([`super::events`]): the keep-alive comment keeps an idle stream
//! under `http.idle-timeout`; the stream ends when central stops.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::Serialize;
use strata_protocol::liveness::{Classification, LivenessState, RegionEvent};
use strata_protocol::monitoring::NodeResources;
use tokio::sync::{broadcast, watch};

use super::error::AppError;
use super::handlers::{self, Pairs, RegionsView};
use super::monitor_views::{AlertView, MonitorView};
use super::params;
use super::views::{EdgeView, RegionView};
use super::workloads::{self, WorkloadsView};
use super::{monitors, AppState};
use crate::auth::Action;

/// Time between snapshots.
pub const TICK: Duration = Duration::from_millis(1500);
/// Device counts are read on the first tick and then every this many ticks
/// (each region counts its whole device list).
pub const DEVICES_EVERY: u64 = 6;
/// Frames a slow console may fall behind before it skips ahead.
const FRAMES_BUFFERED: usize = 8;
/// Newest alerts in each snapshot.
const ALERTS: &str = "100";
/// Recent events of each region sent when a stream opens.
const RECENT_EVENTS: usize = 200;
/// Events asked of a region per call.
const EVENT_PAGE: u32 = 1000;

/// One `snapshot` event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    /// Central's clock, ms since the epoch.
    pub now_ms: i64,
    /// Every region with its replicas.
    pub regions: Vec<RegionView>,
    /// Every edge that answered, region by region.
    pub edges: Vec<EdgeBrief>,
    /// Device counts (as of the last count: see the module docs); null
    /// before the first count succeeded.
    pub devices: Option<DeviceCounts>,
    /// Monitors with their allocations and recent evaluations.
    pub monitors: Vec<MonitorView>,
    /// Global workloads; `null` when central's replicated state is not
    /// running on this server.
    pub workloads: Option<WorkloadsView>,
    /// Newest alerts of the last hour, newest first.
    pub alerts: Vec<AlertView>,
    /// What could not be read, one sentence each (the rest is still
    /// current).
    pub errors: Vec<String>,
}

/// One edge in a snapshot: what the topology shows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct EdgeBrief {
    /// Region.
    pub region: String,
    /// Edge name.
    pub name: String,
    /// Ms since the region last heard from it.
    pub age_ms: i64,
    /// The region's failure detector: `up`, `suspect`, `down`, `unknown`;
    /// null before any decision.
    pub state: Option<LivenessState>,
    /// Why it last failed, when it did.
    pub classification: Option<Classification>,
    /// Records waiting in its spool (the sync backlog).
    pub spool_records: u64,
    /// Bytes of its spool.
    pub spool_bytes: u64,
    /// Records accepted per second, recent average.
    pub ingest_rate: f64,
    /// Devices connected over MQTT.
    pub connected_clients: u32,
    /// Records from it stored in the region.
    pub records_stored: u64,
    /// Process uptime, ms.
    pub uptime_ms: u64,
    /// Age of its oldest record the region has not acknowledged, ms.
    pub sync_lag_ms: u64,
    /// When its certificate expires, ms since the epoch.
    pub cert_expires_ms: Option<i64>,
    /// Measured CPU, memory, disk and network use.
    pub node: NodeResources,
    /// Its monitor instances: tenant, name, state.
    pub instances: Vec<InstanceBrief>,
}

/// One monitor instance on an edge.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InstanceBrief {
    /// Tenant.
    pub tenant: String,
    /// Monitor name.
    pub name: String,
    /// `running`, `failed`, …
    pub state: String,
}

impl From<EdgeView> for EdgeBrief {
    fn from(e: EdgeView) -> EdgeBrief {
        EdgeBrief {
            state: e.liveness.as_ref().map(|l| l.state),
            classification: e.liveness.as_ref().map(|l| l.classification),
            region: e.region,
            name: e.name,
            age_ms: e.age_ms,
            spool_records: e.spool_records,
            spool_bytes: e.spool_bytes,
            ingest_rate: e.ingest_rate,
            connected_clients: e.connected_clients,
            records_stored: e.records_stored,
            uptime_ms: e.uptime_ms,
            sync_lag_ms: e.sync_lag_ms,
            cert_expires_ms: e.cert_expires_ms,
            node: e.node,
            instances: e
                .instances
                .into_iter()
                .map(|i| InstanceBrief {
                    tenant: i.tenant,
                    name: i.name,
                    state: i.state,
                })
                .collect(),
        }
    }
}

/// How many devices have data, per region and per edge.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeviceCounts {
    /// Central's clock when counted, ms since the epoch.
    pub at_ms: i64,
    /// Every device that answered.
    pub total: u64,
    /// Region → devices.
    pub regions: BTreeMap<String, u64>,
    /// `region/edge` → devices whose latest reading came through it.
    pub edges: BTreeMap<String, u64>,
}

impl DeviceCounts {
    fn of(regions: Vec<handlers::RegionDeviceCount>, at_ms: i64) -> DeviceCounts {
        let mut c = DeviceCounts {
            at_ms,
            ..DeviceCounts::default()
        };
        for handlers::RegionDeviceCount {
            region,
            total,
            by_edge,
        } in regions
        {
            c.total += total;
            for (edge, n) in by_edge.into_iter().filter(|(e, _)| !e.is_empty()) {
                c.edges.insert(format!("{region}/{edge}"), n);
            }
            c.regions.insert(region, total);
        }
        c
    }
}

/// One `events` event: new events of one region, oldest first.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct EventsBatch {
    /// Region.
    pub region: String,
    /// The events.
    pub events: Vec<RegionEvent>,
    /// Events the region dropped before this stream read them.
    pub missed: u64,
}

/// The reads a snapshot contains, beyond the route's `ReadCluster`.
const ALSO_NEEDS: [Action; 5] = [
    Action::ReadEdges,
    Action::ReadDevices,
    Action::ReadMonitors,
    Action::ReadAlerts,
    Action::ReadEvents,
];

/// `GET /api/v1/stream`: see the module docs. Takes no parameters.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "console",
    responses(
        (status = 200, description = "Server-Sent Events: `snapshot` (regions, edges, monitors, workloads, newest alerts; devices every few snapshots) every 1.5 s, and each region's new events as `event`", content_type = "text/event-stream", body = String),
        super::openapi::ApiErrors
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    query: Pairs,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let Query(pairs) = query?;
    let _no_params = params::check(&pairs, &[])?;
    for action in ALSO_NEEDS {
        state
            .access()
            .check(&headers, action)
            .map_err(|r| AppError::new(r.status(), r.code(), r.message()))?;
    }
    let keep_alive = state.options().stream_keep_alive;
    let (joined, frames) = state.feed().subscribe(&state);
    let mut queued = Vec::new();
    if let Some(snapshot) = &joined.snapshot {
        queued.push(Event::default().event("snapshot").data(&**snapshot));
    }
    queued.extend(
        joined
            .recent
            .iter()
            .map(|(_, b)| Event::default().event("events").data(&**b)),
    );
    queued.reverse();
    let events = futures::stream::unfold((queued, frames), |(mut queued, mut frames)| async move {
        loop {
            if let Some(e) = queued.pop() {
                return Some((Ok(e), (queued, frames)));
            }
            match frames.recv().await {
                Ok(frame) => {
                    queued.push(Event::default().event("snapshot").data(&*frame.snapshot));
                    queued.extend(
                        frame
                            .events
                            .iter()
                            .map(|b| Event::default().event("events").data(&**b)),
                    );
                    queued.reverse();
                }
                // Too slow: the next frame's snapshot is whole again.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                // The producer stopped: central is shutting down.
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(keep_alive)))
}

/// One tick's output, serialized once for every console.
struct Frame {
    snapshot: Arc<str>,
    /// `events` payloads, one per region with news.
    events: Vec<Arc<str>>,
}

/// What a console joining mid-way is sent first.
#[derive(Default)]
struct Joined {
    /// The latest snapshot; `None` before the first tick.
    snapshot: Option<Arc<str>>,
    /// Recent `events` payloads, oldest first, with their event counts.
    recent: VecDeque<(usize, Arc<str>)>,
}

/// The running producer, as subscribers reach it.
struct Running {
    frames: broadcast::Sender<Arc<Frame>>,
    joined: watch::Receiver<Arc<Joined>>,
}

/// The one producer of console frames on this server (see the module
/// docs). Cloning shares it.
#[derive(Clone, Default)]
pub struct Feed {
    /// `Some` exactly while a producer task runs: it is set by the first
    /// subscriber and cleared by the producer itself, both under this lock,
    /// so a subscriber never joins a producer that has decided to stop.
    running: Arc<Mutex<Option<Running>>>,
}

impl Feed {
    /// Joins the producer, starting it if none runs: what to send first,
    /// and the frames after it.
    fn subscribe(&self, state: &AppState) -> (Arc<Joined>, broadcast::Receiver<Arc<Frame>>) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = running.as_ref() {
            return (r.joined.borrow().clone(), r.frames.subscribe());
        }
        let (frames, rx) = broadcast::channel(FRAMES_BUFFERED);
        let (joined_tx, joined) = watch::channel(Arc::new(Joined::default()));
        *running = Some(Running {
            frames: frames.clone(),
            joined,
        });
        tokio::spawn(produce(state.clone(), self.clone(), frames, joined_tx));
        (Arc::new(Joined::default()), rx)
    }

    /// Called by the producer at each tick: whether anyone still listens;
    /// if not, the producer is unregistered (under the lock, see
    /// [`Feed::running`]) and must stop.
    fn still_wanted(&self, frames: &broadcast::Sender<Arc<Frame>>) -> bool {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if frames.receiver_count() > 0 {
            return true;
        }
        *running = None;
        false
    }

    fn stop(&self) {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether a producer runs.
    #[cfg(test)]
    fn is_running(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

/// The producer task: one snapshot (and the regions' new events) per tick
/// while anyone listens.
async fn produce(
    state: AppState,
    feed: Feed,
    frames: broadcast::Sender<Arc<Frame>>,
    joined: watch::Sender<Arc<Joined>>,
) {
    let stop = state.options().streams.clone();
    let mut tick = tokio::time::interval(state.options().console_tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursors = vec![None; state.regions().len()];
    let mut counts: Option<DeviceCounts> = None;
    let mut recent: VecDeque<(usize, Arc<str>)> = VecDeque::new();
    let keep_events = RECENT_EVENTS * state.regions().len().max(1);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                feed.stop();
                return;
            }
            _ = tick.tick() => {}
        }
        if !feed.still_wanted(&frames) {
            return;
        }
        let (mut snapshot, events) = tokio::join!(
            snapshot(&state, n, &mut counts),
            new_events(&state, &mut cursors)
        );
        snapshot.devices = counts.clone();
        let snapshot: Arc<str> = json(&snapshot).into();
        let events: Vec<(usize, Arc<str>)> = events
            .iter()
            .map(|b| (b.events.len(), json(b).into()))
            .collect();
        recent.extend(events.iter().cloned());
        let mut held: usize = recent.iter().map(|(k, _)| k).sum();
        while held > keep_events {
            match recent.pop_front() {
                Some((k, _)) => held -= k,
                None => break,
            }
        }
        joined.send_replace(Arc::new(Joined {
            snapshot: Some(snapshot.clone()),
            recent: recent.clone(),
        }));
        // No receiver left between the check and now: the next tick ends.
        let _ = frames.send(Arc::new(Frame {
            snapshot,
            events: events.into_iter().map(|(_, b)| b).collect(),
        }));
        n += 1;
    }
}

/// The `n`th snapshot of the feed (device counts go into `counts`, read
/// on every [`DEVICES_EVERY`]th).
async fn snapshot(state: &AppState, n: u64, counts: &mut Option<DeviceCounts>) -> Snapshot {
    let none = || Ok(Query(Vec::new()));
    let with_devices = n % DEVICES_EVERY == 0;
    let alert_query = || Ok(Query(vec![("limit".to_owned(), ALERTS.to_owned())]));
    let (Json(RegionsView { regions }), edges, monitors, workloads, alerts, devices) = tokio::join!(
        handlers::regions(State(state.clone())),
        handlers::edges(State(state.clone()), none()),
        monitors::list_monitors(State(state.clone()), none()),
        workloads::list(State(state.clone()), none()),
        monitors::alerts(State(state.clone()), alert_query()),
        async {
            if with_devices {
                Some(handlers::device_counts(state).await)
            } else {
                None
            }
        },
    );
    let mut errors = Vec::new();
    let note = |errors: &mut Vec<String>, what: &str, e: &AppError| {
        errors.push(format!("{what}: {}", e.message));
    };
    let edges = match edges {
        Ok(Json(v)) => {
            for f in v.errors {
                errors.push(format!("edges of region {}: {}", f.region, f.message));
            }
            v.edges.into_iter().map(EdgeBrief::from).collect()
        }
        Err(e) => {
            note(&mut errors, "edges", &e);
            Vec::new()
        }
    };
    let monitors = match monitors {
        Ok(Json(v)) => v.monitors,
        Err(e) => {
            note(&mut errors, "monitors", &e);
            Vec::new()
        }
    };
    let alerts = match alerts {
        Ok(Json(v)) => v.alerts,
        Err(e) => {
            note(&mut errors, "alerts", &e);
            Vec::new()
        }
    };
    if let Some((regions, failed)) = devices {
        // A region that did not answer keeps no count rather than a 0.
        if failed.is_empty() || counts.is_none() {
            *counts = Some(DeviceCounts::of(regions, state.now_ms()));
        } else if let Some(c) = counts.as_mut() {
            let fresh = DeviceCounts::of(regions, state.now_ms());
            c.at_ms = fresh.at_ms;
            c.regions.extend(fresh.regions);
            c.edges.extend(fresh.edges);
            c.total = c.regions.values().sum();
        }
        errors.extend(failed);
    }
    // No replicated state on this server is not an error worth
    // showing on every snapshot; the workloads view says so.
    let workloads = workloads.ok().map(|Json(w)| w);
    Snapshot {
        now_ms: state.now_ms(),
        regions,
        edges,
        devices: None,
        monitors,
        workloads,
        alerts,
        errors,
    }
}

/// New events of every region since `cursors` (the recent ones when a
/// cursor is still `None`); moves the cursors on.
async fn new_events(state: &AppState, cursors: &mut [Option<u64>]) -> Vec<EventsBatch> {
    let regions = state.regions().to_vec();
    let reads = regions.iter().zip(cursors.iter()).map(|(r, c)| async move {
        let mut next = c.unwrap_or(1);
        let mut events: Vec<RegionEvent> = Vec::new();
        let mut missed = 0;
        let mut read = false;
        // A fresh stream reads the whole log (bounded by the region) to
        // find its tail; afterwards one page per tick is the usual case.
        for _ in 0..20 {
            let page = match r.events(next, EVENT_PAGE, Duration::ZERO).await {
                Ok(p) => p.value,
                // Tried again next tick; the region's health shows why.
                Err(_) => break,
            };
            read = true;
            missed += page.missed;
            let full = page.events.len() >= EVENT_PAGE as usize;
            if page.events.is_empty() && page.next_seq < next {
                // The region's log is behind this cursor (rebuilt).
                next = page.next_seq;
            }
            if let Some(last) = page.events.last() {
                next = last.seq + 1;
            }
            events.extend(page.events);
            if !full {
                break;
            }
        }
        if c.is_none() {
            missed = 0;
            let keep = events.len().saturating_sub(RECENT_EVENTS);
            events.drain(..keep);
        }
        // Before the first successful read the tail is still unknown.
        let cursor = if read || c.is_some() {
            Some(next)
        } else {
            None
        };
        (cursor, events, missed)
    });
    let results = futures::future::join_all(reads).await;
    let mut out = Vec::new();
    for ((region, cursor), (next, events, missed)) in
        regions.iter().zip(cursors.iter_mut()).zip(results)
    {
        *cursor = next;
        if !events.is_empty() || missed > 0 {
            out.push(EventsBatch {
                region: region.name().to_owned(),
                events,
                missed,
            });
        }
    }
    out
}

fn json<T: Serialize>(value: &T) -> String {
    // Plain data structs: serializing them cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::Policy;
    use crate::http::app;
    use crate::http::test_support::{bearer, harness2, options, Fake};

    /// Opens a stream as the operator; returns its body.
    async fn open(state: &AppState) -> Body {
        let req = Request::get("/api/v1/stream")
            .header("authorization", bearer())
            .body(Body::empty())
            .unwrap();
        let resp = app(state.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body()
    }

    /// Reads SSE frames until a whole `snapshot` event arrived; returns
    /// the event names seen.
    async fn until_snapshot(body: &mut Body) -> Vec<String> {
        let mut text = String::new();
        loop {
            let frame = body.frame().await.expect("stream open").unwrap();
            if let Some(d) = frame.data_ref() {
                text.push_str(&String::from_utf8_lossy(d));
            }
            let events: Vec<&str> = text.split("\n\n").collect();
            // The last piece is unfinished (or empty).
            let done = &events[..events.len() - 1];
            if done.iter().any(|e| e.contains("event: snapshot")) {
                return done
                    .iter()
                    .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("event: ")))
                    .map(str::to_owned)
                    .collect();
            }
        }
    }

    /// Two consoles share one producer: one round of region reads per
    /// tick whatever the number of consoles, and the producer stops once
    /// nobody listens (and starts again for the next console).
    #[tokio::test]
    async fn consoles_share_one_producer_that_stops_when_the_last_leaves() {
        let tick = Duration::from_millis(100);
        let h = harness2(
            Fake::new("west", &[("acme", "d1")]),
            Fake::new("east", &[("acme", "d2")]),
        );
        let mut opts = options(Policy::new(false, true));
        opts.console_tick = tick;
        let state = AppState::with_options(
            vec![h.west.clone(), h.east.clone()],
            prometheus_client::registry::Registry::default(),
            Arc::new(|| crate::http::test_support::NOW),
            opts,
        );
        let reads = || h.west.event_reads.lock().unwrap().len();
        let mut a = open(&state).await;
        let seen = until_snapshot(&mut a).await;
        assert_eq!(seen.first().map(String::as_str), Some("snapshot"));
        let mut b = open(&state).await;
        until_snapshot(&mut b).await;
        assert!(state.feed().is_running());

        let before = reads();
        for _ in 0..5 {
            until_snapshot(&mut a).await;
            until_snapshot(&mut b).await;
        }
        let during = reads() - before;
        // Five snapshots each: five ticks (one more may be under way).
        // A producer per console would have read at least ten times.
        assert!(
            (5..=6).contains(&during),
            "{during} reads for 2 x 5 snapshots"
        );

        drop(a);
        drop(b);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while state.feed().is_running() {
            assert!(tokio::time::Instant::now() < deadline, "still producing");
            tokio::time::sleep(tick).await;
        }
        let stopped_at = reads();
        tokio::time::sleep(tick * 5).await;
        assert_eq!(reads(), stopped_at, "no reads without a console");

        let mut c = open(&state).await;
        until_snapshot(&mut c).await;
        assert!(state.feed().is_running());
        assert!(reads() > stopped_at);
    }
}
