//! The in-memory region ([`Fake`]) and request helpers shared by the
//! handler tests ([`super::tests`], [`super::monitor_tests`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::future::BoxFuture;
use futures::FutureExt;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::Value;
use strata_protocol::monitoring::{
    AlertQuery, InstanceStatus, MonitorCapacity, MonitorInfo, NodeResources,
};
use strata_protocol::workload::{FieldError, MonitorSpec, SpecErrors};
use strata_protocol::{
    AlertRecord, Bucket, DeviceInfo, EdgeInfo, EdgeStatus, HubStatus, Metric, PeerProgress,
    QueryResult, RaftRole, RegionSummary, ReplicaInfo, Tag, TelemetryQuery, TelemetryRecord,
    WorkloadId,
};
use tower::ServiceExt;

use super::{app, AppOptions, AppState};
use crate::auth::{Access, Policy, Token};
use crate::region::{ArtifactStored, RegionApi, RegionError, RegionStatus, ReplicaStatus, Served};

pub const NOW: i64 = 1_700_000_000_000;

/// The operator token of every test harness.
pub const TOKEN: &str = "test-operator-token-0123456789abcdef";

/// The `Authorization` value that carries [`TOKEN`].
pub fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// Options with [`TOKEN`] as the operator token and `policy`.
pub fn options(policy: Policy) -> AppOptions {
    let token = Token::parse(TOKEN).expect("TOKEN is a valid token");
    AppOptions {
        access: Access::new(Some(&token), policy),
        ..AppOptions::default()
    }
}

/// An in-memory region. `fail` makes every read and write fail with it.
pub struct Fake {
    pub name: String,
    pub devices: Vec<DeviceInfo>,
    pub fail: Option<RegionError>,
    pub stale: bool,
    pub queries: Mutex<Vec<TelemetryQuery>>,
    pub changes: Mutex<Vec<String>>,
    /// The membership: changed by add/remove, reported by the leader's
    /// status (unless `fail`, so that requests reach the failing call).
    pub members: Mutex<Vec<ReplicaInfo>>,
    /// The leader's view of the members, reported in its status.
    pub peers: Mutex<Vec<PeerProgress>>,
    /// Stored modules by hash.
    pub artifacts: Mutex<BTreeMap<String, usize>>,
    /// Monitors by (tenant, name).
    pub monitors: Mutex<BTreeMap<(String, String), MonitorInfo>>,
    /// Alerts the region answers every alert query with (newest first).
    pub alerts: Vec<AlertRecord>,
    /// Alert queries received.
    pub alert_queries: Mutex<Vec<AlertQuery>>,
    /// Write requests received, in order (`put-artifact`, `submit a/b`, …).
    pub writes: Mutex<Vec<String>>,
    /// The region's event log (held events, oldest first).
    pub events: Mutex<Vec<strata_protocol::liveness::RegionEvent>>,
    /// Device searches received.
    pub device_searches: Mutex<Vec<strata_protocol::DeviceSearch>>,
    /// Event reads received: (from_seq, limit, wait).
    pub event_reads: Mutex<Vec<(u64, u32, std::time::Duration)>>,
    /// The capacity summary the region reports (its `placed` cut down to
    /// the workloads asked about, as a hub does); `None`: it answers with
    /// a hub error.
    pub summary: Mutex<Option<RegionSummary>>,
    /// Summary requests received: the global workloads of each.
    pub summary_reads: Mutex<Vec<Vec<WorkloadId>>>,
}

impl Fake {
    pub fn new(name: &str, devices: &[(&str, &str)]) -> Fake {
        Fake {
            name: name.into(),
            devices: devices
                .iter()
                .map(|(t, d)| DeviceInfo {
                    tenant: (*t).into(),
                    device: (*d).into(),
                    records: 42,
                    first_ts_ms: NOW - 10_000,
                    last_ts_ms: NOW - 1000,
                    retransmissions_dropped: 3,
                    seq_reuses: 1,
                    edge: Some("edge-1".into()),
                })
                .collect(),
            fail: None,
            stale: false,
            queries: Mutex::new(Vec::new()),
            changes: Mutex::new(Vec::new()),
            members: Mutex::new(vec![ReplicaInfo {
                id: 1,
                peer_addr: "p1:7001".into(),
                client_addr: "c1:7000".into(),
                voter: true,
            }]),
            peers: Mutex::new(Vec::new()),
            artifacts: Mutex::new(BTreeMap::new()),
            monitors: Mutex::new(BTreeMap::new()),
            alerts: Vec::new(),
            alert_queries: Mutex::new(Vec::new()),
            writes: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            event_reads: Mutex::new(Vec::new()),
            device_searches: Mutex::new(Vec::new()),
            summary: Mutex::new(None),
            summary_reads: Mutex::new(Vec::new()),
        }
    }

    /// A stand-in content hash: 64 hex digits determined by the bytes.
    pub fn fake_sha256(bytes: &[u8]) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        format!("{h:016x}").repeat(4)
    }

    /// The hub's checks, simplified: the tenant must own a device here and
    /// the artifact must be stored.
    fn hub_validate(&self, spec: &MonitorSpec) -> Result<(), SpecErrors> {
        // Like the real hub: every offline check, then the region's facts.
        let mut errs = spec
            .validate(&Default::default())
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        if !self.devices.iter().any(|d| d.tenant == spec.tenant) {
            errs.push(FieldError {
                field: "tenant".into(),
                message: format!("unknown tenant {:?}", spec.tenant),
            });
        }
        if !self
            .artifacts
            .lock()
            .unwrap()
            .contains_key(&spec.artifact.sha256)
        {
            errs.push(FieldError {
                field: "artifact.sha256".into(),
                message: format!("no artifact {} has been uploaded", spec.artifact.sha256),
            });
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(SpecErrors(errs))
        }
    }

    fn not_found(&self, tenant: &str, name: &str) -> RegionError {
        RegionError::NotFound {
            region: self.name.clone(),
            what: format!("monitor {tenant}/{name}"),
        }
    }

    pub fn failing(mut self, e: RegionError) -> Fake {
        self.fail = Some(e);
        self
    }

    fn served<T>(&self, value: T) -> Result<Served<T>, RegionError> {
        match &self.fail {
            Some(e) => Err(e.clone()),
            None => Ok(Served {
                value,
                addr: format!("{}-hub-1:7000", self.name),
                stale: self.stale,
            }),
        }
    }

    fn members(&self) -> Vec<ReplicaInfo> {
        self.members.lock().unwrap().clone()
    }
}

fn hub_status(region: &str, id: u64, role: RaftRole) -> HubStatus {
    HubStatus {
        region: region.into(),
        id,
        role,
        term: 3,
        leader: Some(1),
        commit_index: 100,
        applied_index: 99,
        last_index: 101,
        replicas: vec![],
        stored_records: 5000,
        peers: vec![],
        cert_expires_ms: Some(NOW + 365 * 86_400_000),
    }
}

impl RegionApi for Fake {
    fn name(&self) -> &str {
        &self.name
    }

    fn status(&self) -> BoxFuture<'_, RegionStatus> {
        let replicas = vec![
            ReplicaStatus {
                addr: "h1:7000".into(),
                status: Ok(HubStatus {
                    replicas: if self.fail.is_none() {
                        self.members()
                    } else {
                        vec![]
                    },
                    peers: self.peers.lock().unwrap().clone(),
                    ..hub_status(&self.name, 1, RaftRole::Leader)
                }),
            },
            ReplicaStatus {
                addr: "h2:7000".into(),
                status: Ok(hub_status(&self.name, 2, RaftRole::Follower)),
            },
            ReplicaStatus {
                addr: "h3:7000".into(),
                status: Err("connect to h3:7000: no answer within 2000 ms".into()),
            },
        ];
        futures::future::ready(RegionStatus::from_replicas(self.name.clone(), replicas)).boxed()
    }

    fn edges(&self) -> BoxFuture<'_, Result<Served<Vec<EdgeInfo>>, RegionError>> {
        let edges = vec![EdgeInfo {
            edge: format!("{}-edge-1", self.name),
            last_seen_ms: NOW - 1500,
            status: EdgeStatus {
                edge: format!("{}-edge-1", self.name),
                spool_records: 7,
                spool_bytes: 700,
                ingest_rate: 12.5,
                connected_clients: 3,
                uptime_ms: 60_000,
                sync_lag_ms: 250,
                cert_expires_ms: Some(NOW + 90 * 86_400_000),
                capacity: MonitorCapacity {
                    memory_mib: 256,
                    cpu_millicores: 1000,
                },
                reserved: MonitorCapacity {
                    memory_mib: 16,
                    cpu_millicores: 100,
                },
                node: NodeResources {
                    cpu_used_millicores: 400,
                    cpu_total_millicores: 2000,
                    memory_used_bytes: 1 << 30,
                    memory_total_bytes: 4 << 30,
                    disk_used_bytes: 5 << 30,
                    disk_total_bytes: 20 << 30,
                    net_rx_bytes_per_s: 1000,
                    net_tx_bytes_per_s: 2000,
                    process_rss_bytes: 12 << 20,
                },
                instances: vec![InstanceStatus {
                    tenant: "acme".into(),
                    name: "boiler".into(),
                    generation: 2,
                    state: "running".into(),
                    used_cpu_millicores: 30,
                    records_dropped: 4,
                    ..InstanceStatus::default()
                }],
                ..EdgeStatus::default()
            },
            records_stored: 900,
            resends_dropped: 12,
            liveness: Some(strata_protocol::liveness::EdgeLiveness {
                state: strata_protocol::liveness::LivenessState::Up,
                classification: strata_protocol::liveness::Classification::Partition,
                evidence: vec![strata_protocol::liveness::Evidence::SameBootId],
                boot_id: 0xfeed,
                since_ms: NOW - 30_000,
                last_heartbeat_ms: NOW - 1500,
                detection_ms: None,
                event_seq: 4,
            }),
            leases: vec![strata_protocol::scheduling::EdgeLease {
                tenant: "acme".into(),
                workload: "boiler".into(),
                slot: 0,
                allocation: strata_protocol::scheduling::AllocId(0xb01e),
                fencing_token: 3,
                expires_ms: Some(NOW + 2_000),
            }],
            renewing_leases: Some(true),
        }];
        futures::future::ready(self.served(edges)).boxed()
    }

    fn devices(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'_, Result<Served<Vec<DeviceInfo>>, RegionError>> {
        let list = self
            .devices
            .iter()
            .filter(|d| tenant.as_ref().is_none_or(|t| *t == d.tenant))
            .cloned()
            .collect();
        futures::future::ready(self.served(list)).boxed()
    }

    fn search_devices(
        &self,
        search: strata_protocol::DeviceSearch,
    ) -> BoxFuture<'_, Result<Served<strata_protocol::DevicePage>, RegionError>> {
        self.device_searches.lock().unwrap().push(search.clone());
        let mut list: Vec<DeviceInfo> = self
            .devices
            .iter()
            .filter(|d| search.tenant.as_ref().is_none_or(|t| *t == d.tenant))
            .cloned()
            .collect();
        list.sort_by(|a, b| (&a.tenant, &a.device).cmp(&(&b.tenant, &b.device)));
        futures::future::ready(self.served(search.page(list))).boxed()
    }

    fn query(
        &self,
        query: TelemetryQuery,
    ) -> BoxFuture<'_, Result<Served<QueryResult>, RegionError>> {
        let result = if let Some(step) = query.step_ms {
            QueryResult::Downsampled(vec![Bucket {
                metric: "temp".into(),
                start_ms: query.from_ms,
                min: 1.0,
                max: 3.0,
                avg: 2.0,
                count: step.min(4),
            }])
        } else {
            QueryResult::Raw(vec![TelemetryRecord {
                tenant: query.tenant.clone(),
                device: query.device.clone(),
                ts_ms: query.from_ms + 1,
                seq: Some(9),
                metrics: vec![Metric {
                    name: "temp".into(),
                    value: 21.5,
                }],
                tags: vec![Tag {
                    key: "site".into(),
                    value: "a".into(),
                }],
            }])
        };
        self.queries.lock().unwrap().push(query);
        futures::future::ready(self.served(result)).boxed()
    }

    fn add_replica(
        &self,
        replica: ReplicaInfo,
    ) -> BoxFuture<'_, Result<Vec<ReplicaInfo>, RegionError>> {
        self.changes
            .lock()
            .unwrap()
            .push(format!("add {}", replica.id));
        let mut m = self.members.lock().unwrap();
        m.retain(|r| r.id != replica.id);
        m.push(replica);
        futures::future::ready(self.served(m.clone()).map(|s| s.value)).boxed()
    }

    fn remove_replica(&self, id: u64) -> BoxFuture<'_, Result<Vec<ReplicaInfo>, RegionError>> {
        self.changes.lock().unwrap().push(format!("remove {id}"));
        self.members.lock().unwrap().retain(|r| r.id != id);
        futures::future::ready(self.served(self.members()).map(|s| s.value)).boxed()
    }

    fn put_artifact(&self, bytes: Vec<u8>) -> BoxFuture<'_, Result<ArtifactStored, RegionError>> {
        self.writes.lock().unwrap().push("put-artifact".into());
        let res = self.served(()).and_then(|_| {
            if !bytes.starts_with(b"\0asm") {
                return Err(RegionError::Invalid {
                    region: self.name.clone(),
                    errors: SpecErrors(vec![FieldError {
                        field: "artifact".into(),
                        message: "not a WebAssembly module (bad magic)".into(),
                    }]),
                });
            }
            let sha256 = Fake::fake_sha256(&bytes);
            let created = self
                .artifacts
                .lock()
                .unwrap()
                .insert(sha256.clone(), bytes.len())
                .is_none();
            Ok(ArtifactStored {
                sha256,
                size_bytes: bytes.len() as u64,
                created,
            })
        });
        futures::future::ready(res).boxed()
    }

    fn submit_monitor(
        &self,
        mut spec: MonitorSpec,
    ) -> BoxFuture<'_, Result<MonitorInfo, RegionError>> {
        self.writes
            .lock()
            .unwrap()
            .push(format!("submit {}/{}", spec.tenant, spec.name));
        let res = self.served(()).and_then(|_| {
            self.hub_validate(&spec)
                .map_err(|errors| RegionError::Invalid {
                    region: self.name.clone(),
                    errors,
                })?;
            let mut all = self.monitors.lock().unwrap();
            let key = (spec.tenant.clone(), spec.name.clone());
            let info = match all.get(&key) {
                Some(old) => {
                    spec.generation = old.spec.generation;
                    let changed = old.spec != spec;
                    if changed {
                        spec.generation += 1;
                    }
                    MonitorInfo {
                        spec,
                        updated_ms: if changed { NOW + 1 } else { old.updated_ms },
                        ..old.clone()
                    }
                }
                None => {
                    spec.generation = 1;
                    MonitorInfo {
                        spec,
                        region: self.name.clone(),
                        edge: format!("{}-edge-1", self.name),
                        created_ms: NOW,
                        updated_ms: NOW,
                        status: None,
                        wanted: 1,
                        placed: 1,
                        allocations: Vec::new(),
                        evaluations: Vec::new(),
                    }
                }
            };
            all.insert(key, info.clone());
            Ok(info)
        });
        futures::future::ready(res).boxed()
    }

    fn monitors(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'_, Result<Served<Vec<MonitorInfo>>, RegionError>> {
        // Reverse order: the handler must sort.
        let list = self
            .monitors
            .lock()
            .unwrap()
            .values()
            .rev()
            .filter(|m| tenant.as_ref().is_none_or(|t| *t == m.spec.tenant))
            .cloned()
            .collect();
        futures::future::ready(self.served(list)).boxed()
    }

    fn monitor(
        &self,
        tenant: String,
        name: String,
    ) -> BoxFuture<'_, Result<Served<MonitorInfo>, RegionError>> {
        let found = self
            .monitors
            .lock()
            .unwrap()
            .get(&(tenant.clone(), name.clone()))
            .cloned();
        let res = self.served(()).and_then(|_| match found {
            Some(m) => self.served(m),
            None => Err(self.not_found(&tenant, &name)),
        });
        futures::future::ready(res).boxed()
    }

    fn delete_monitor(
        &self,
        tenant: String,
        name: String,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        self.writes
            .lock()
            .unwrap()
            .push(format!("delete {tenant}/{name}"));
        let res = self.served(()).and_then(|_| {
            match self
                .monitors
                .lock()
                .unwrap()
                .remove(&(tenant.clone(), name.clone()))
            {
                Some(_) => Ok(()),
                None => Err(self.not_found(&tenant, &name)),
            }
        });
        futures::future::ready(res).boxed()
    }

    fn alerts(
        &self,
        query: AlertQuery,
    ) -> BoxFuture<'_, Result<Served<Vec<AlertRecord>>, RegionError>> {
        let list = self
            .alerts
            .iter()
            .filter(|a| query.tenant.as_ref().is_none_or(|t| *t == a.tenant))
            .take(query.limit as usize)
            .cloned()
            .collect();
        self.alert_queries.lock().unwrap().push(query);
        futures::future::ready(self.served(list)).boxed()
    }

    fn retention(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'_, Result<Served<strata_protocol::RetentionReport>, RegionError>> {
        let tenants = [("acme", 2, 40), ("globex", 0, 7)]
            .into_iter()
            .filter(|(t, _, _)| tenant.as_deref().is_none_or(|want| want == *t))
            .map(
                |(t, on_arrival, expired)| strata_protocol::TenantRetention {
                    tenant: t.into(),
                    expired_on_arrival: on_arrival,
                    expired,
                },
            )
            .collect();
        let report = strata_protocol::RetentionReport {
            retention_ms: 604_800_000,
            retained_from_ms: Some(NOW - 604_800_000),
            tenants,
        };
        futures::future::ready(self.served(report)).boxed()
    }

    /// Like a hub: the held events from `from_seq`; when there is none,
    /// it waits `wait` (for events pushed meanwhile) before answering.
    fn events(
        &self,
        from_seq: u64,
        limit: u32,
        wait: std::time::Duration,
    ) -> BoxFuture<'_, Result<Served<strata_protocol::liveness::EventPage>, RegionError>> {
        self.event_reads
            .lock()
            .unwrap()
            .push((from_seq, limit, wait));
        async move {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let page = {
                    let held = self.events.lock().unwrap();
                    let oldest = held.first().map_or(0, |e| e.seq);
                    let end = held.last().map_or(1, |e| e.seq + 1);
                    let events: Vec<_> = held
                        .iter()
                        .filter(|e| e.seq >= from_seq)
                        .take(limit as usize)
                        .cloned()
                        .collect();
                    let missed = events
                        .first()
                        .map_or(0, |e| e.seq.saturating_sub(from_seq.max(1)));
                    strata_protocol::liveness::EventPage {
                        next_seq: events.last().map_or(end, |e| e.seq + 1),
                        oldest_seq: oldest,
                        missed,
                        events,
                    }
                };
                if !page.events.is_empty() || tokio::time::Instant::now() >= deadline {
                    return self.served(page);
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        .boxed()
    }

    fn summary(
        &self,
        global: Vec<WorkloadId>,
    ) -> BoxFuture<'_, Result<RegionSummary, RegionError>> {
        let set = self.summary.lock().unwrap().clone();
        let res = self.served(()).and_then(|_| match set {
            Some(mut s) => {
                s.placed.retain(|p| global.contains(&p.workload));
                Ok(s)
            }
            None => Err(RegionError::Hub {
                region: self.name.clone(),
                addr: format!("{}-hub-1:7000", self.name),
                message: "no summary set in this fake".into(),
            }),
        });
        self.summary_reads.lock().unwrap().push(global);
        futures::future::ready(res).boxed()
    }
}

/// Sends `body` with an optional Content-Type, as the operator; returns
/// status and JSON (or the text as a JSON string).
pub async fn send_raw(
    state: &AppState,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let auth = bearer();
    let (status, _, json) = send_as(state, method, uri, Some(&auth), content_type, body).await;
    (status, json)
}

/// Sends a request with an optional `Authorization` value and
/// Content-Type; returns status, headers and JSON (or the text as a JSON
/// string).
pub async fn send_as(
    state: &AppState,
    method: &str,
    uri: &str,
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if !body.is_empty() {
        // As a real client sends it (oneshot does not add it).
        req = req.header("content-length", body.len());
    }
    let resp = app(state.clone())
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, json)
}

pub struct Harness {
    pub state: AppState,
    pub west: Arc<Fake>,
    pub east: Arc<Fake>,
}

pub fn harness(east: Fake) -> Harness {
    harness2(Fake::new("west", &[("acme", "d1"), ("other", "x")]), east)
}

/// Regions `west` and `east` as given.
pub fn harness2(west: Fake, east: Fake) -> Harness {
    let (west, east) = (Arc::new(west), Arc::new(east));
    let regions: Vec<Arc<dyn RegionApi>> = vec![west.clone(), east.clone()];
    let state = AppState::with_options(
        regions,
        Registry::default(),
        Arc::new(|| NOW),
        options(Policy::new(false, true)),
    );
    Harness { state, west, east }
}

pub fn healthy() -> Harness {
    harness(Fake::new("east", &[("acme", "d2")]))
}

pub fn down(region: &str) -> RegionError {
    RegionError::Unreachable {
        region: region.into(),
        errors: vec!["h1:7000: connection refused".into()],
    }
}

/// Sends a request as the operator, with a JSON body if any.
pub async fn send(
    state: &AppState,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let ct = body.map(|_| "application/json");
    let bytes = body.map(|b| b.as_bytes().to_vec()).unwrap_or_default();
    send_raw(state, method, uri, ct, bytes).await
}

pub async fn get(state: &AppState, uri: &str) -> (StatusCode, Value) {
    send(state, "GET", uri, None).await
}

/// Asserts the JSON error shape and returns the message.
pub fn error(status: StatusCode, body: &Value, want: StatusCode, code: &str) -> String {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let obj = body["error"].as_object().unwrap();
    assert_eq!(obj.len(), 2, "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_fake_reports_its_summary_for_the_workloads_asked() {
    let fake = Fake::new("west", &[]);
    let watch = WorkloadId::new("acme", "watch");
    let err = fake.summary(vec![watch.clone()]).await.unwrap_err();
    assert!(matches!(err, RegionError::Hub { .. }), "{err}");
    let pool = serde_json::json!({
        "nodes-ready": 0, "total": {}, "free": {}, "largest-free": {}, "ladder": [],
        "free-nodes": {"precision-bits": 64, "merged": false, "buckets": []},
    });
    let set: RegionSummary = serde_json::from_value(serde_json::json!({
        "region": "west",
        "health": {"state": "unknown", "as-of": NOW},
        "capacity": {"max-per-node": 1, "all": pool, "pools": {}},
        "device-locality": {"acme": 4},
        "placed": [
            {"workload": {"tenant": "acme", "name": "other"}, "instances": 1},
            {"workload": watch, "instances": 3},
        ],
        "reported-at": NOW,
    }))
    .unwrap();
    *fake.summary.lock().unwrap() = Some(set);
    let got = fake.summary(vec![watch.clone()]).await.unwrap();
    assert_eq!(got.devices_of("acme"), 4);
    assert_eq!(got.placed_of(&watch), 3);
    assert_eq!(got.placed.len(), 1, "only what was asked about");
    assert_eq!(
        fake.summary_reads.lock().unwrap().as_slice(),
        &[vec![watch.clone()], vec![watch]]
    );
}
