//! [`RegionClient`]: the QUIC driver behind [`RegionApi`] for one region.
//!
//! It keeps one connection per hub address and reuses it for every request
//! (one bidirectional stream per call, as the protocol prescribes). A broken
//! connection is dropped and redialed on the next call; a hub that failed to
//! dial is not redialed for [`REDIAL_BACKOFF`], so a dead replica costs one
//! connect timeout now and then instead of on every request. Routing
//! decisions come from the sans-IO [`Route`] / [`LeaderTracker`]; this file
//! only executes them, under one deadline per operation.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use strata_protocol::monitoring::{AlertQuery, MonitorInfo};
use strata_protocol::workload::MonitorSpec;
use strata_protocol::{
    AlertRecord, DeviceInfo, DevicePage, DeviceSearch, EdgeInfo, HubRequest, HubResponse,
    NodeIdentity, NodeKind, QueryResult, RaftRole, RegionSummary, ReplicaInfo, TelemetryQuery,
    WorkloadId,
};
use tokio::time::Instant;

use super::tracker::{LeaderTracker, Mode, Route, Step};
use super::{ArtifactStored, RegionApi, RegionError, RegionStatus, ReplicaStatus, Served};
use crate::metrics::HubMetrics;

/// How long a hub that failed to dial is left alone before the next dial.
pub const REDIAL_BACKOFF: Duration = Duration::from_millis(500);

/// Deadlines of a [`RegionClient`].
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Whole operation (all calls, discovery included).
    pub request: Duration,
    /// Dialing one hub (QUIC, TLS, hello).
    pub connect: Duration,
    /// Whole membership change: adding a replica waits for it to catch up
    /// as a learner, which takes longer than any other request.
    pub membership: Duration,
}

/// State of the connection to one hub address.
enum Slot {
    /// Never dialed, or the last connection broke.
    Empty,
    /// Connected.
    Up(quinn::Connection),
    /// The last dial failed at `at`.
    Failed { at: Instant, error: String },
}

/// Why one call to one hub failed.
enum CallError {
    /// Could not dial or handshake.
    Connect(String),
    /// The connection or stream failed mid-call.
    Call(String),
}

impl CallError {
    fn message(self) -> String {
        match self {
            CallError::Connect(m) | CallError::Call(m) => m,
        }
    }
}

/// `e`'s message, prefixed with the configured hub address unless it
/// already names it (strata-net errors name the resolved socket address).
fn naming(addr: &str, e: impl std::fmt::Display) -> String {
    let msg = e.to_string();
    if msg.contains(addr) {
        msg
    } else {
        format!("{addr}: {msg}")
    }
}

fn request_kind(req: &HubRequest) -> &'static str {
    match req {
        HubRequest::Status => "status",
        HubRequest::ListEdges => "edges",
        HubRequest::ListDevices { .. } => "devices",
        HubRequest::SearchDevices(_) => "search-devices",
        HubRequest::Query(_) => "query",
        HubRequest::AddReplica(_) => "add-replica",
        HubRequest::RemoveReplica { .. } => "remove-replica",
        HubRequest::PutArtifact { .. } => "put-artifact",
        HubRequest::SubmitMonitor(_) => "submit-monitor",
        HubRequest::ListMonitors { .. } => "monitors",
        HubRequest::GetMonitor { .. } => "monitor",
        HubRequest::DeleteMonitor { .. } => "delete-monitor",
        HubRequest::QueryAlerts(_) => "alerts",
        HubRequest::Retention { .. } => "retention",
        HubRequest::Events { .. } => "events",
        HubRequest::RegionSummary { .. } => "region-summary",
    }
}

fn response_kind(resp: &HubResponse) -> &'static str {
    match resp {
        HubResponse::Status(_) => "status",
        HubResponse::Edges(_) => "edges",
        HubResponse::Devices(_) => "devices",
        HubResponse::Telemetry(_) => "telemetry",
        HubResponse::ConfChanged { .. } => "conf-changed",
        HubResponse::NotLeader { .. } => "not-leader",
        HubResponse::Error { .. } => "error",
        HubResponse::ArtifactStored { .. } => "artifact-stored",
        HubResponse::Invalid(_) => "invalid",
        HubResponse::Monitor(_) => "monitor",
        HubResponse::Monitors(_) => "monitors",
        HubResponse::MonitorDeleted => "monitor-deleted",
        HubResponse::NotFound { .. } => "not-found",
        HubResponse::Alerts(_) => "alerts",
        HubResponse::MembershipRefused(_) => "membership-refused",
        HubResponse::Retention(_) => "retention",
        HubResponse::Events(_) => "events",
        HubResponse::RegionSummary(_) => "region-summary",
        HubResponse::DevicePage(_) => "device-page",
    }
}

/// Client of one region's hubs over QUIC.
pub struct RegionClient {
    region: String,
    endpoint: quinn::Endpoint,
    me: NodeIdentity,
    timeouts: Timeouts,
    tracker: Mutex<LeaderTracker>,
    conns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    metrics: HubMetrics,
}

impl RegionClient {
    /// A client for region `region` whose hubs listen at `hubs`
    /// (`host:port`), dialing from `endpoint` (a client endpoint carrying
    /// central's certificate). Nothing is dialed until the first request.
    pub fn new(
        region: &str,
        hubs: Vec<String>,
        endpoint: quinn::Endpoint,
        timeouts: Timeouts,
        metrics: HubMetrics,
    ) -> RegionClient {
        RegionClient {
            region: region.to_owned(),
            endpoint,
            me: NodeIdentity {
                kind: NodeKind::Central,
                id: "central".into(),
                region: String::new(),
            },
            timeouts,
            tracker: Mutex::new(LeaderTracker::new(hubs)),
            conns: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The tracker. Its state is consistent after every method, so a lock
    /// poisoned by a panicking holder is still safe to use.
    fn tracker(&self) -> MutexGuard<'_, LeaderTracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, addr: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .entry(addr.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Slot::Empty)))
            .clone()
    }

    /// Dials `addr` and checks that a hub of our region answered.
    async fn dial(&self, addr: &str) -> Result<quinn::Connection, String> {
        let sock = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| format!("cannot resolve {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr} resolves to no address"))?;
        let (conn, server) = strata_net::handshake::connect(&self.endpoint, sock, &self.me)
            .await
            .map_err(|e| naming(addr, e))?;
        if server.kind != NodeKind::Hub || server.region != self.region {
            conn.close(0u32.into(), b"wrong region");
            return Err(format!(
                "{addr} is {:?} {:?} of region {:?}, expected a hub of region {:?}",
                server.kind, server.id, server.region, self.region
            ));
        }
        Ok(conn)
    }

    /// A live connection to `addr` (and whether it was reused), dialing if
    /// needed. Dials to one address are serialized by the slot lock.
    async fn conn(&self, addr: &str) -> Result<(quinn::Connection, bool), String> {
        let slot = self.slot(addr);
        let mut s = slot.lock().await;
        match &*s {
            Slot::Up(c) if c.close_reason().is_none() => return Ok((c.clone(), true)),
            Slot::Failed { at, error } if at.elapsed() < REDIAL_BACKOFF => {
                return Err(error.clone())
            }
            _ => {}
        }
        let dialed = tokio::time::timeout(self.timeouts.connect, self.dial(addr))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "connect to {addr}: no answer within {} ms",
                    self.timeouts.connect.as_millis()
                ))
            });
        match dialed {
            Ok(c) => {
                *s = Slot::Up(c.clone());
                Ok((c, false))
            }
            Err(error) => {
                tracing::debug!(region = %self.region, %addr, %error, "hub dial failed");
                *s = Slot::Failed {
                    at: Instant::now(),
                    error: error.clone(),
                };
                Err(error)
            }
        }
    }

    /// Forgets `conn` for `addr` if the slot still holds it.
    async fn drop_conn(&self, addr: &str, conn: &quinn::Connection) {
        let slot = self.slot(addr);
        let mut s = slot.lock().await;
        if matches!(&*s, Slot::Up(c) if c.stable_id() == conn.stable_id()) {
            *s = Slot::Empty;
        }
    }

    /// One request to one hub. A reused connection that turns out broken
    /// (the hub restarted) is redialed once.
    async fn call_addr(&self, addr: &str, req: &HubRequest) -> Result<HubResponse, CallError> {
        for _ in 0..2 {
            let (conn, reused) = self.conn(addr).await.map_err(CallError::Connect)?;
            match strata_net::rpc::call::<_, HubResponse>(&conn, req).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.drop_conn(addr, &conn).await;
                    if !reused {
                        return Err(CallError::Call(naming(addr, e)));
                    }
                    tracing::debug!(region = %self.region, %addr, error = %e, "redialing hub");
                }
            }
        }
        Err(CallError::Call(format!("{addr}: connection failed twice")))
    }

    /// [`Self::call_addr`] plus metrics and tracker bookkeeping for failures.
    async fn call_tracked(&self, addr: &str, req: &HubRequest) -> Result<HubResponse, String> {
        let start = Instant::now();
        match self.call_addr(addr, req).await {
            Ok(resp) => {
                let secs = start.elapsed().as_secs_f64();
                self.metrics.observe(&self.region, request_kind(req), secs);
                if matches!(resp, HubResponse::Error { .. }) {
                    self.metrics.error(&self.region, "hub-error");
                }
                Ok(resp)
            }
            Err(e) => {
                let reason = match e {
                    CallError::Connect(_) => "connect",
                    CallError::Call(_) => "call",
                };
                self.metrics.error(&self.region, reason);
                self.tracker().handle_failure(addr);
                Err(e.message())
            }
        }
    }

    /// Status of one replica, bounded by `budget` when given; the answer
    /// is fed to the tracker.
    async fn status_of(&self, addr: String, budget: Option<Duration>) -> ReplicaStatus {
        let call = self.call_tracked(&addr, &HubRequest::Status);
        let res = match budget {
            None => call.await,
            Some(b) => tokio::time::timeout(b, call).await.unwrap_or_else(|_| {
                self.metrics.error(&self.region, "timeout");
                Err(format!("{addr}: no answer within {} ms", b.as_millis()))
            }),
        };
        let status = match res {
            Ok(HubResponse::Status(s)) => {
                self.tracker().handle_status(&addr, &s);
                Ok(s)
            }
            Ok(HubResponse::Error { message }) => Err(format!("{addr}: hub error: {message}")),
            Ok(other) => {
                self.metrics.error(&self.region, "protocol");
                Err(format!(
                    "{addr}: unexpected {} response to status",
                    response_kind(&other)
                ))
            }
            Err(e) => Err(e),
        };
        ReplicaStatus { addr, status }
    }

    /// Asks every known replica for its status, in parallel. With
    /// `until_leader`, stops at the first replica that says it leads, so a
    /// slow or dead replica does not delay requests that only need the
    /// leader (unfinished calls are dropped).
    async fn discover(&self, budget: Option<Duration>, until_leader: bool) -> Vec<ReplicaStatus> {
        let targets = self.tracker().targets();
        let mut pending: FuturesUnordered<_> = targets
            .into_iter()
            .map(|addr| self.status_of(addr, budget))
            .collect();
        let mut out = Vec::new();
        while let Some(r) = pending.next().await {
            let leads = matches!(&r.status, Ok(s) if s.role == RaftRole::Leader);
            out.push(r);
            if until_leader && leads {
                break;
            }
        }
        out
    }

    /// Runs `req` along a [`Route`] within the request timeout: the answer,
    /// who gave it, and whether it may be stale.
    async fn routed(
        &self,
        req: HubRequest,
        mode: Mode,
    ) -> Result<Served<HubResponse>, RegionError> {
        self.routed_within(req, mode, self.timeouts.request).await
    }

    /// [`Self::routed`] with its own deadline.
    async fn routed_within(
        &self,
        req: HubRequest,
        mode: Mode,
        timeout: Duration,
    ) -> Result<Served<HubResponse>, RegionError> {
        let deadline = Instant::now() + timeout;
        let walk = async {
            let mut route = Route::new(mode);
            let mut errors: BTreeMap<String, String> = BTreeMap::new();
            let mut answered = false;
            loop {
                let step = route.next(&self.tracker());
                match step {
                    Step::Call { addr, stale } => match self.call_tracked(&addr, &req).await {
                        Ok(HubResponse::NotLeader { leader }) => {
                            answered = true;
                            self.tracker().handle_not_leader(&addr, leader.as_ref());
                        }
                        Ok(HubResponse::Error { message }) => {
                            self.tracker().handle_answer(&addr);
                            return Err(RegionError::Hub {
                                region: self.region.clone(),
                                addr,
                                message,
                            });
                        }
                        Ok(value) => {
                            self.tracker().handle_answer(&addr);
                            return Ok(Served { value, addr, stale });
                        }
                        Err(e) => {
                            errors.insert(addr, e);
                        }
                    },
                    Step::Discover => {
                        for r in self.discover(None, true).await {
                            match r.status {
                                Ok(_) => answered = true,
                                Err(e) => {
                                    errors.entry(r.addr).or_insert(e);
                                }
                            }
                        }
                    }
                    Step::GiveUp => {
                        return Err(if answered {
                            RegionError::NoLeader {
                                region: self.region.clone(),
                            }
                        } else {
                            RegionError::Unreachable {
                                region: self.region.clone(),
                                // Every message already names its hub.
                                errors: errors.into_values().collect(),
                            }
                        });
                    }
                }
            }
        };
        match tokio::time::timeout_at(deadline, walk).await {
            Ok(r) => r,
            Err(_) => {
                self.metrics.error(&self.region, "timeout");
                Err(RegionError::Timeout {
                    region: self.region.clone(),
                    timeout_ms: timeout.as_millis() as u64,
                })
            }
        }
    }

    fn unexpected(&self, addr: String, resp: &HubResponse) -> RegionError {
        self.unexpected_kind(addr, response_kind(resp))
    }

    fn unexpected_kind(&self, addr: String, got: &'static str) -> RegionError {
        self.metrics.error(&self.region, "protocol");
        RegionError::Protocol {
            region: self.region.clone(),
            addr,
            got,
        }
    }

    /// Runs `req` along `mode` and picks the expected answer out of the
    /// response. The hub's refusals (`Invalid`, `NotFound`) become errors
    /// naming the region; anything else `pick` rejects is a protocol error.
    async fn op<T>(
        &self,
        req: HubRequest,
        mode: Mode,
        pick: impl FnOnce(HubResponse) -> Option<T>,
    ) -> Result<Served<T>, RegionError> {
        let served = self.routed(req, mode).await?;
        let region = self.region.clone();
        match served.value {
            HubResponse::Invalid(errors) => Err(RegionError::Invalid { region, errors }),
            HubResponse::NotFound { what } => Err(RegionError::NotFound { region, what }),
            value => {
                let got = response_kind(&value);
                match pick(value) {
                    Some(value) => Ok(Served {
                        value,
                        addr: served.addr,
                        stale: served.stale,
                    }),
                    None => Err(self.unexpected_kind(served.addr, got)),
                }
            }
        }
    }

    async fn read<T>(
        &self,
        req: HubRequest,
        pick: impl FnOnce(HubResponse) -> Option<T>,
    ) -> Result<Served<T>, RegionError> {
        self.op(req, Mode::Read, pick).await
    }

    /// A write: the leader only. Writes are idempotent in effect
    /// (content-addressed artifacts; an identical spec resubmitted is a
    /// no-op; a delete resent after a lost answer finds nothing and says
    /// `NotFound`), so the one redial of a broken reused connection may
    /// resend them.
    async fn write<T>(
        &self,
        req: HubRequest,
        pick: impl FnOnce(HubResponse) -> Option<T>,
    ) -> Result<T, RegionError> {
        Ok(self.op(req, Mode::LeaderOnly, pick).await?.value)
    }

    /// A membership change, under the membership deadline (an add waits
    /// for the new replica to catch up). The leader's refusal becomes
    /// [`RegionError::Refused`].
    async fn conf_change(&self, req: HubRequest) -> Result<Vec<ReplicaInfo>, RegionError> {
        let served = self
            .routed_within(req, Mode::LeaderOnly, self.timeouts.membership)
            .await?;
        match served.value {
            HubResponse::ConfChanged { replicas } => Ok(replicas),
            HubResponse::MembershipRefused(refusal) => Err(RegionError::Refused {
                region: self.region.clone(),
                refusal,
            }),
            other => Err(self.unexpected(served.addr, &other)),
        }
    }

    /// Closes every cached connection (on shutdown).
    pub fn close(&self) {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for slot in conns.values() {
            if let Ok(s) = slot.try_lock() {
                if let Slot::Up(c) = &*s {
                    c.close(0u32.into(), b"central shutting down");
                }
            }
        }
    }
}

impl RegionApi for RegionClient {
    fn name(&self) -> &str {
        &self.region
    }

    fn status(&self) -> BoxFuture<'_, RegionStatus> {
        async move {
            // A status is one small call: a replica that cannot dial and
            // answer it within the dial deadline counts as unreachable now,
            // so one dead hub (whose cached connection only times out
            // later) does not hold the whole region view for the request
            // timeout.
            let budget = self.timeouts.request.min(self.timeouts.connect);
            let replicas = self.discover(Some(budget), false).await;
            RegionStatus::from_replicas(self.region.clone(), replicas)
        }
        .boxed()
    }

    fn edges(&self) -> BoxFuture<'_, Result<Served<Vec<EdgeInfo>>, RegionError>> {
        self.read(HubRequest::ListEdges, |r| match r {
            HubResponse::Edges(v) => Some(v),
            _ => None,
        })
        .boxed()
    }

    fn devices(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'_, Result<Served<Vec<DeviceInfo>>, RegionError>> {
        self.read(HubRequest::ListDevices { tenant }, |r| match r {
            HubResponse::Devices(v) => Some(v),
            _ => None,
        })
        .boxed()
    }

    fn search_devices(
        &self,
        search: DeviceSearch,
    ) -> BoxFuture<'_, Result<Served<DevicePage>, RegionError>> {
        self.read(HubRequest::SearchDevices(search), |r| match r {
            HubResponse::DevicePage(p) => Some(p),
            _ => None,
        })
        .boxed()
    }

    fn query(
        &self,
        query: TelemetryQuery,
    ) -> BoxFuture<'_, Result<Served<QueryResult>, RegionError>> {
        self.read(HubRequest::Query(query), |r| match r {
            HubResponse::Telemetry(v) => Some(v),
            _ => None,
        })
        .boxed()
    }

    fn add_replica(
        &self,
        replica: ReplicaInfo,
    ) -> BoxFuture<'_, Result<Vec<ReplicaInfo>, RegionError>> {
        self.conf_change(HubRequest::AddReplica(replica)).boxed()
    }

    fn remove_replica(&self, id: u64) -> BoxFuture<'_, Result<Vec<ReplicaInfo>, RegionError>> {
        self.conf_change(HubRequest::RemoveReplica { id }).boxed()
    }

    fn put_artifact(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<ArtifactStored, RegionError>> {
        self.write(HubRequest::PutArtifact { bytes }, |r| match r {
            HubResponse::ArtifactStored {
                sha256,
                size_bytes,
                created,
            } => Some(ArtifactStored {
                sha256,
                size_bytes,
                created,
            }),
            _ => None,
        })
        .boxed()
    }

    fn submit_monitor(&self, spec: MonitorSpec) -> BoxFuture<'_, Result<MonitorInfo, RegionError>> {
        self.write(HubRequest::SubmitMonitor(spec), |r| match r {
            HubResponse::Monitor(m) => Some(m),
            _ => None,
        })
        .boxed()
    }

    fn monitors(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'_, Result<Served<Vec<MonitorInfo>>, RegionError>> {
        self.read(HubRequest::ListMonitors { tenant }, |r| match r {
            HubResponse::Monitors(v) => Some(v),
            _ => None,
        })
        .boxed()
    }

    fn monitor(
        &self,
        tenant: String,
        name: String,
    ) -> BoxFuture<'_, Result<Served<MonitorInfo>, RegionError>> {
        self.read(HubRequest::GetMonitor { tenant, name }, |r| match r {
            HubResponse::Monitor(m) => Some(m),
            _ => None,
        })
        .boxed()
    }

    fn delete_monitor(
        &self,
        tenant: String,
        name: String,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        self.write(HubRequest::DeleteMonitor { tenant, name }, |r| match r {
            HubResponse::MonitorDeleted => Some(()),
            _ => None,
        })
        .boxed()
    }

    fn alerts(
        &self,
        query: AlertQuery,
    ) -> BoxFuture<'_, Result<Served<Vec<AlertRecord>>, RegionError>> {
        self.read(HubRequest::QueryAlerts(query), |r| match r {
            HubResponse::Alerts(v) => Some(v),
            _ => None,
        })
        .boxed()
    }

    fn retention(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'_, Result<Served<strata_protocol::RetentionReport>, RegionError>> {
        self.read(HubRequest::Retention { tenant }, |r| match r {
            HubResponse::Retention(v) => Some(v),
            _ => None,
        })
        .boxed()
    }

    fn events(
        &self,
        from_seq: u64,
        limit: u32,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Served<strata_protocol::liveness::EventPage>, RegionError>> {
        async move {
            let req = HubRequest::Events {
                from_seq,
                limit,
                wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
            };
            // The hub may hold the answer for `wait`: the deadline grows by it.
            let served = self
                .routed_within(req, Mode::Read, self.timeouts.request + wait)
                .await?;
            match served.value {
                HubResponse::Events(page) => Ok(Served {
                    value: page,
                    addr: served.addr,
                    stale: served.stale,
                }),
                other => Err(self.unexpected(served.addr, &other)),
            }
        }
        .boxed()
    }

    fn summary(
        &self,
        global: Vec<WorkloadId>,
    ) -> BoxFuture<'_, Result<RegionSummary, RegionError>> {
        // Leader only: a follower answers NotLeader, so falling back to one
        // (as reads do) would only cost a call.
        async move {
            let req = HubRequest::RegionSummary { global };
            let pick = |r| match r {
                HubResponse::RegionSummary(s) => Some(*s),
                _ => None,
            };
            Ok(self.op(req, Mode::LeaderOnly, pick).await?.value)
        }
        .boxed()
    }
}
