//! `GET /api/v1/stream`: the console's one live connection (Server-Sent
//! Events). Every [`TICK`] it sends a `snapshot` event: regions (health,
//! replicas and their Raft roles, leader), edges (liveness, spool backlog,
//! ingest rate, machine use, instances), monitors with their allocations,
//! global workloads, the newest alerts, and — on the first snapshot and
//! every [`DEVICES_EVERY`] ticks, as the list can be long — the devices. New
//! region events go out as `events` events as soon as a tick sees them.
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

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::Serialize;
use strata_protocol::liveness::{Classification, LivenessState, RegionEvent};
use strata_protocol::monitoring::NodeResources;
use tokio_util::sync::CancellationToken;

use super::error::AppError;
use super::handlers::{self, Pairs, RegionsView};
use super::monitor_views::{AlertView, MonitorView};
use super::params;
use super::views::{DeviceView, EdgeView, RegionView};
use super::workloads::{self, WorkloadsView};
use super::{monitors, AppState};
use crate::auth::Action;

/// Time between snapshots.
pub const TICK: Duration = Duration::from_millis(1500);
/// The device list goes out on the first snapshot and then every this many
/// ticks (it is the longest part: up to one entry per device).
pub const DEVICES_EVERY: u64 = 6;
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
    /// Devices (only in some snapshots: see the module docs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceBrief>>,
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

/// One device in a snapshot.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeviceBrief {
    /// Region holding its data.
    pub region: String,
    /// Tenant.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// Records stored.
    pub records: u64,
    /// Latest reading, ms since the epoch.
    pub last_ts_ms: i64,
    /// The edge it reports through, when known.
    pub edge: Option<String>,
}

impl From<DeviceView> for DeviceBrief {
    fn from(d: DeviceView) -> DeviceBrief {
        DeviceBrief {
            region: d.region,
            tenant: d.tenant,
            device: d.device,
            records: d.records,
            last_ts_ms: d.last_ts_ms,
            edge: d.edge,
        }
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
    let stop = state.options().streams.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = Live {
        cursors: vec![None; state.regions().len()],
        state,
        tick,
        n: 0,
        queued: Vec::new(),
        stop,
    };
    let events = futures::stream::unfold(live, |mut l| async move {
        let event = l.next_event().await?;
        Some((Ok(event), l))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(keep_alive)))
}

/// One stream's state.
struct Live {
    state: AppState,
    tick: tokio::time::Interval,
    /// Snapshots sent.
    n: u64,
    /// Per region: the first event sequence number not sent yet (`None`
    /// before the first read).
    cursors: Vec<Option<u64>>,
    /// Events ready to send, in reverse order (popped from the end).
    queued: Vec<Event>,
    stop: CancellationToken,
}

impl Live {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queued.pop() {
                return Some(e);
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = self.tick.tick() => {}
            }
            let (snapshot, events) = tokio::join!(
                snapshot(&self.state, self.n),
                new_events(&self.state, &mut self.cursors)
            );
            let mut out = vec![json_event("snapshot", &snapshot)];
            out.extend(events.iter().map(|b| json_event("events", b)));
            out.reverse();
            self.queued = out;
            self.n += 1;
        }
    }
}

/// The `n`th snapshot of a stream.
async fn snapshot(state: &AppState, n: u64) -> Snapshot {
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
                Some(handlers::devices(State(state.clone()), none()).await)
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
    let devices = match devices {
        Some(Ok(Json(v))) => Some(v.devices.into_iter().map(DeviceBrief::from).collect()),
        Some(Err(e)) => {
            note(&mut errors, "devices", &e);
            None
        }
        None => None,
    };
    // No replicated state on this server is not an error worth
    // showing on every snapshot; the workloads view says so.
    let workloads = workloads.ok().map(|Json(w)| w);
    Snapshot {
        now_ms: state.now_ms(),
        regions,
        edges,
        devices,
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

fn json_event<T: Serialize>(kind: &str, value: &T) -> Event {
    // Plain data structs: serializing them cannot fail.
    let data = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    Event::default().event(kind).data(data)
}
