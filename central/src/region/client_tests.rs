//! [`RegionClient`] against real QUIC: minimal in-test hubs built from
//! `strata_net::server_endpoint` + `handshake::accept` answer `HubRequest`s
//! from a shared "who leads" switch, so the tests can move leadership and
//! watch the client follow it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_net::handshake::{accept, HandshakeMetrics};
use strata_net::rpc::{read_frame, write_frame};
use strata_net::{client_endpoint, server_endpoint, NodeTls, Pki};
use strata_protocol::{
    HubRequest, HubResponse, HubStatus, LeaderHint, MembershipRefusal, NodeIdentity, NodeKind,
    QueryResult, RaftRole, RefuseReason, RegionSummary, ReplicaInfo, TelemetryQuery, WorkloadId,
};

use strata_protocol::monitoring::AlertQuery;
use strata_protocol::workload::{FieldError, SpecErrors};

use super::client::{RegionClient, Timeouts};
use super::{RegionApi, RegionError};
use crate::metrics::{HubErrorLabel, HubMetrics};

/// Shared view of the fake Raft group: who leads (0 = nobody) and where
/// each replica listens.
#[derive(Clone, Default)]
struct Group {
    leader: Arc<AtomicU64>,
    addrs: Arc<Mutex<HashMap<u64, String>>>,
}

impl Group {
    fn leader(&self) -> u64 {
        self.leader.load(Ordering::SeqCst)
    }

    fn hint(&self) -> Option<LeaderHint> {
        let l = self.leader();
        let addrs = self.addrs.lock().unwrap();
        addrs.get(&l).map(|a| LeaderHint {
            hub_id: l,
            addr: a.clone(),
        })
    }

    fn members(&self) -> Vec<ReplicaInfo> {
        let addrs = self.addrs.lock().unwrap();
        let mut v: Vec<ReplicaInfo> = addrs
            .iter()
            .map(|(id, a)| ReplicaInfo {
                id: *id,
                peer_addr: format!("peer-{id}:1"),
                client_addr: a.clone(),
                voter: true,
            })
            .collect();
        v.sort_by_key(|r| r.id);
        v
    }
}

/// Adding this replica id takes [`SLOW_ADD`] and is then refused.
const SLOW_REFUSED: u64 = 13;
/// Longer than a request timeout of the membership test, shorter than its
/// membership timeout.
const SLOW_ADD: Duration = Duration::from_millis(800);

/// One in-test hub replica.
struct Hub {
    addr: String,
    /// Kinds of requests received, in order.
    log: Arc<Mutex<Vec<&'static str>>>,
    conns: Arc<Mutex<Vec<quinn::Connection>>>,
    _ep: quinn::Endpoint,
}

impl Hub {
    fn log(&self) -> Vec<&'static str> {
        self.log.lock().unwrap().clone()
    }

    /// Closes every connection, as a hub restart would.
    fn drop_connections(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.close(0u32.into(), b"restart");
        }
    }
}

/// How replica `id` answers `req` given the group state. Followers refuse
/// leader work while a leader exists, but serve reads when there is none
/// (what a hub may do; the client must then mark the answer stale).
fn answer(group: &Group, id: u64, region: &str, req: &HubRequest) -> HubResponse {
    let leader = group.leader();
    let i_lead = leader == id;
    match req {
        HubRequest::Status => HubResponse::Status(HubStatus {
            region: region.into(),
            id,
            role: if i_lead {
                RaftRole::Leader
            } else {
                RaftRole::Follower
            },
            term: 7,
            leader: (leader != 0).then_some(leader),
            commit_index: 10,
            applied_index: 10,
            last_index: 10 + id,
            replicas: group.members(),
            stored_records: 100 * id,
            peers: vec![],
            cert_expires_ms: None,
        }),
        HubRequest::Query(q) if i_lead || leader == 0 => {
            HubResponse::Telemetry(QueryResult::Raw(vec![strata_protocol::TelemetryRecord {
                tenant: q.tenant.clone(),
                device: format!("answered-by-{id}"),
                ts_ms: q.from_ms,
                seq: None,
                metrics: vec![],
                tags: vec![],
            }]))
        }
        // The unlucky id: the leader takes a while, then refuses it.
        HubRequest::AddReplica(r) if i_lead && r.id == SLOW_REFUSED => {
            HubResponse::MembershipRefused(MembershipRefusal::Behind {
                id: r.id,
                peer_addr: r.peer_addr.clone(),
                matched: 3,
                last_index: 900,
                silent_ms: 100,
                waited_ms: 30_000,
            })
        }
        HubRequest::AddReplica(r) if i_lead => {
            let mut m = group.members();
            m.push(r.clone());
            HubResponse::ConfChanged { replicas: m }
        }
        HubRequest::RemoveReplica { id } if i_lead => HubResponse::Error {
            message: format!("replica {id} is not a member"),
        },
        HubRequest::PutArtifact { bytes } if i_lead => HubResponse::ArtifactStored {
            sha256: format!("{id}").repeat(64),
            size_bytes: bytes.len() as u64,
            created: true,
        },
        HubRequest::SubmitMonitor(spec) if i_lead => {
            HubResponse::Invalid(SpecErrors(vec![FieldError {
                field: "tenant".into(),
                message: format!("unknown tenant {:?} (checked by {id})", spec.tenant),
            }]))
        }
        HubRequest::GetMonitor { tenant, name } if i_lead || leader == 0 => HubResponse::NotFound {
            what: format!("monitor {tenant}/{name}"),
        },
        HubRequest::DeleteMonitor { .. } if i_lead => HubResponse::MonitorDeleted,
        HubRequest::QueryAlerts(q) if i_lead || leader == 0 => {
            HubResponse::Alerts(vec![strata_protocol::AlertRecord {
                tenant: q.tenant.clone().unwrap_or_default(),
                device: "d1".into(),
                monitor: "z".into(),
                edge: format!("answered-by-{id}"),
                severity: strata_protocol::Severity::Critical,
                code: "anomaly".into(),
                message: "spike".into(),
                ts_ms: q.from_ms,
            }])
        }
        HubRequest::RegionSummary { global } if i_lead => {
            HubResponse::RegionSummary(Box::new(summary(region, id, global)))
        }
        // A read answered with the wrong kind: a protocol error.
        HubRequest::ListMonitors { .. } => HubResponse::MonitorDeleted,
        _ => HubResponse::NotLeader {
            leader: group.hint(),
        },
    }
}

/// A summary as hub `id` reports it: one edge (pool `gpu`) with room for
/// three of the smallest size, `id` devices of `acme`, and two instances
/// of each workload asked about. Built from its JSON form, since central
/// names the scheduler's types only through the protocol.
fn summary(region: &str, id: u64, global: &[WorkloadId]) -> RegionSummary {
    let r =
        |cpu: u64, mib: u64| serde_json::json!({"cpu-millicores": cpu, "memory-bytes": mib << 20});
    let pool = serde_json::json!({
        "nodes-ready": 1,
        "total": r(1000, 256),
        "free": r(150, 96),
        "largest-free": r(150, 96),
        "ladder": [{"size": r(50, 32), "fits": 3}],
        "free-nodes": {
            "precision-bits": 64,
            "merged": false,
            "buckets": [{"free": r(150, 96), "nodes": 1}],
        },
    });
    let placed: Vec<_> = global
        .iter()
        .map(|w| serde_json::json!({"workload": w, "instances": 2}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "region": region,
        "health": {"state": "ok", "as-of": 5},
        "capacity": {"max-per-node": 1, "all": pool, "pools": {"gpu": pool}},
        "device-locality": {"acme": id},
        "placed": placed,
        "reported-at": 5,
    }))
    .unwrap()
}

fn kind(req: &HubRequest) -> &'static str {
    match req {
        HubRequest::Status => "status",
        HubRequest::ListEdges => "edges",
        HubRequest::ListDevices { .. } => "devices",
        HubRequest::SearchDevices(_) => "search-devices",
        HubRequest::Query(_) => "query",
        HubRequest::AddReplica(_) => "add",
        HubRequest::RemoveReplica { .. } => "remove",
        HubRequest::PutArtifact { .. } => "put-artifact",
        HubRequest::SubmitMonitor(_) => "submit",
        HubRequest::ListMonitors { .. } => "monitors",
        HubRequest::GetMonitor { .. } => "monitor",
        HubRequest::DeleteMonitor { .. } => "delete",
        HubRequest::QueryAlerts(_) => "alerts",
        HubRequest::Retention { .. } => "retention",
        HubRequest::Events { .. } => "events",
        HubRequest::RegionSummary { .. } => "summary",
    }
}

async fn spawn_hub(pki: &Pki, group: &Group, region: &str, id: u64) -> Hub {
    let tls = NodeTls::load(&pki.node(&format!("hub-{id}")).unwrap()).unwrap();
    let ep = server_endpoint("127.0.0.1:0".parse().unwrap(), &tls).unwrap();
    let addr = ep.local_addr().unwrap().to_string();
    group.addrs.lock().unwrap().insert(id, addr.clone());
    let log = Arc::new(Mutex::new(Vec::new()));
    let conns = Arc::new(Mutex::new(Vec::new()));
    let (ep2, log2, conns2, group, region) = (
        ep.clone(),
        log.clone(),
        conns.clone(),
        group.clone(),
        region.to_owned(),
    );
    tokio::spawn(async move {
        let me = NodeIdentity {
            kind: NodeKind::Hub,
            id: id.to_string(),
            region: region.clone(),
        };
        let metrics = HandshakeMetrics::default();
        while let Some(inc) = ep2.accept().await {
            let Ok((conn, _)) = accept(inc, &me, &metrics, |n| match n.kind {
                NodeKind::Central => Ok(()),
                kind => Err(RefuseReason::KindNotAllowed { kind }),
            })
            .await
            else {
                continue;
            };
            conns2.lock().unwrap().push(conn.clone());
            let (log, group, region) = (log2.clone(), group.clone(), region.clone());
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let Ok(Some(req)) = read_frame::<HubRequest>(&mut recv, "central").await else {
                        break;
                    };
                    log.lock().unwrap().push(kind(&req));
                    if matches!(&req, HubRequest::AddReplica(r) if r.id == SLOW_REFUSED) {
                        tokio::time::sleep(SLOW_ADD).await;
                    }
                    let resp = answer(&group, id, &region, &req);
                    let _ = write_frame(&mut send, &resp, "central").await;
                    let _ = send.finish();
                }
            });
        }
    });
    Hub {
        addr,
        log,
        conns,
        _ep: ep,
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    _dead: std::net::UdpSocket,
    dead: String,
    group: Group,
    hubs: Vec<Hub>,
    client: RegionClient,
    metrics: HubMetrics,
}

/// `n` hubs of region `west` (ids 1..=n) plus one address that swallows
/// packets and never answers; the client knows all of them.
async fn setup(n: u64, leader: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::ensure(dir.path()).unwrap();
    let group = Group::default();
    group.leader.store(leader, Ordering::SeqCst);
    let mut hubs = Vec::new();
    for id in 1..=n {
        hubs.push(spawn_hub(&pki, &group, "west", id).await);
    }
    // Bound and never read: datagrams vanish, so a dial can only time out.
    let dead_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = dead_sock.local_addr().unwrap().to_string();
    let tls = NodeTls::load(&pki.node("central").unwrap()).unwrap();
    let ep = client_endpoint(&tls).unwrap();
    let metrics = HubMetrics::default();
    let mut seeds: Vec<String> = hubs.iter().map(|h| h.addr.clone()).collect();
    seeds.push(dead.clone());
    let client = RegionClient::new(
        "west",
        seeds,
        ep,
        Timeouts {
            request: Duration::from_secs(5),
            connect: Duration::from_millis(300),
            membership: Duration::from_secs(5),
        },
        metrics.clone(),
    );
    Setup {
        _dir: dir,
        _dead: dead_sock,
        dead,
        group,
        hubs,
        client,
        metrics,
    }
}

fn query() -> TelemetryQuery {
    TelemetryQuery {
        tenant: "acme".into(),
        device: "d1".into(),
        from_ms: 0,
        to_ms: 1000,
        step_ms: None,
        limit: 10,
    }
}

fn answered_by(r: &QueryResult) -> String {
    match r {
        QueryResult::Raw(recs) => recs[0].device.clone(),
        QueryResult::Downsampled(_) => panic!("expected raw"),
    }
}

#[tokio::test]
async fn follows_not_leader_hint_to_the_new_leader() {
    let s = setup(2, 1).await;
    let first = s.client.query(query()).await.unwrap();
    assert_eq!(answered_by(&first.value), "answered-by-1");
    assert_eq!(
        (first.addr.as_str(), first.stale),
        (s.hubs[0].addr.as_str(), false)
    );

    // Leadership moves to 2. The client still believes 1 leads: 1 answers
    // NotLeader{hint → 2} and the client retries at 2 without rediscovery.
    s.group.leader.store(2, Ordering::SeqCst);
    let second = s.client.query(query()).await.unwrap();
    assert_eq!(answered_by(&second.value), "answered-by-2");
    assert_eq!(
        (second.addr.as_str(), second.stale),
        (s.hubs[1].addr.as_str(), false)
    );
    assert_eq!(s.hubs[0].log(), vec!["status", "query", "query"]);
    // Discovery stopped at the leader's answer, so 2 may or may not have
    // seen a status request; it saw exactly one query, the last request.
    let log2 = s.hubs[1].log();
    assert_eq!(
        log2.iter().filter(|k| **k == "query").count(),
        1,
        "{log2:?}"
    );
    assert_eq!(log2.last(), Some(&"query"));

    // Writes go to the leader too, and its membership comes back.
    let members = s
        .client
        .add_replica(ReplicaInfo {
            id: 9,
            peer_addr: "p9:1".into(),
            client_addr: "c9:1".into(),
            voter: true,
        })
        .await
        .unwrap();
    assert_eq!(members.last().unwrap().id, 9);
    assert_eq!(s.hubs[1].log().last(), Some(&"add"));
    // A hub error comes back with the hub's message.
    let err = s.client.remove_replica(5).await.unwrap_err();
    assert!(
        matches!(&err, RegionError::Hub { message, .. } if message.contains("replica 5")),
        "{err}"
    );
}

#[tokio::test]
async fn status_lists_an_unreachable_replica_without_failing() {
    let s = setup(2, 2).await;
    let status = s.client.status().await;
    assert_eq!(status.region, "west");
    assert_eq!(status.leader, Some(2));
    assert_eq!(status.replicas.len(), 3, "{status:?}");
    let ok: Vec<(u64, RaftRole)> = status
        .replicas
        .iter()
        .filter_map(|r| r.status.as_ref().ok().map(|s| (s.id, s.role)))
        .collect();
    assert_eq!(ok, vec![(1, RaftRole::Follower), (2, RaftRole::Leader)]);
    let dead = &status.replicas[2];
    assert_eq!(dead.addr, s.dead);
    let err = dead.status.as_ref().unwrap_err();
    assert!(err.contains(&s.dead) && err.contains("300 ms"), "{err}");
    let connect_errors = s
        .metrics
        .errors
        .get_or_create(&HubErrorLabel {
            region: "west".into(),
            reason: "connect".into(),
        })
        .get();
    assert_eq!(connect_errors, 1);
    // Reads still reach the leader.
    let read = s.client.query(query()).await.unwrap();
    assert_eq!(answered_by(&read.value), "answered-by-2");
}

#[tokio::test]
async fn without_a_leader_reads_are_stale_and_writes_fail() {
    let s = setup(2, 0).await;
    let read = s.client.query(query()).await.unwrap();
    assert!(read.stale, "{read:?}");
    let err = s.client.remove_replica(2).await.unwrap_err();
    assert_eq!(
        err,
        RegionError::NoLeader {
            region: "west".into()
        }
    );
    // Only status calls reached the hubs for the write: it was never sent
    // to a follower.
    assert!(s.hubs.iter().all(|h| !h.log().contains(&"remove")));
}

#[tokio::test]
async fn reconnects_after_the_hub_drops_the_connection() {
    let s = setup(1, 1).await;
    s.client.query(query()).await.unwrap();
    s.hubs[0].drop_connections();
    let again = s.client.query(query()).await.unwrap();
    assert_eq!(answered_by(&again.value), "answered-by-1");
    assert_eq!(
        s.hubs[0].conns.lock().unwrap().len(),
        1,
        "one new connection"
    );
}

#[tokio::test]
async fn nothing_reachable_is_an_error_naming_each_hub() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::ensure(dir.path()).unwrap();
    let group = Group::default();
    // A hub of another region: the client must not use it.
    let east = spawn_hub(&pki, &group, "east", 1).await;
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    let tls = NodeTls::load(&pki.node("central").unwrap()).unwrap();
    let client = RegionClient::new(
        "west",
        vec![east.addr.clone(), dead_addr.clone()],
        client_endpoint(&tls).unwrap(),
        Timeouts {
            request: Duration::from_secs(5),
            connect: Duration::from_millis(200),
            membership: Duration::from_secs(5),
        },
        HubMetrics::default(),
    );
    let err = client.edges().await.unwrap_err();
    let RegionError::Unreachable { errors, .. } = &err else {
        panic!("expected Unreachable, got {err}");
    };
    let all = errors.join("\n");
    assert!(all.contains(&dead_addr), "{all}");
    assert!(all.contains("expected a hub of region \"west\""), "{all}");
    assert!(east.log().is_empty());
}

#[tokio::test]
async fn whole_operation_times_out() {
    let s = setup(1, 1).await;
    let client = RegionClient::new(
        "west",
        vec![s.dead.clone()],
        client_endpoint(
            &NodeTls::load(&Pki::ensure(s._dir.path()).unwrap().node("central").unwrap()).unwrap(),
        )
        .unwrap(),
        Timeouts {
            request: Duration::from_millis(150),
            connect: Duration::from_secs(5),
            membership: Duration::from_secs(5),
        },
        HubMetrics::default(),
    );
    let err = client.devices(None).await.unwrap_err();
    assert_eq!(
        err,
        RegionError::Timeout {
            region: "west".into(),
            timeout_ms: 150
        }
    );
    let addr: SocketAddr = s.hubs[0].addr.parse().unwrap();
    assert!(addr.port() > 0);
}

#[tokio::test]
async fn monitor_writes_follow_the_leader_and_refusals_become_errors() {
    let s = setup(2, 1).await;
    s.client.status().await;
    s.group.leader.store(2, Ordering::SeqCst);
    // The client still believes 1 leads; 1 redirects the write to 2.
    let stored = s.client.put_artifact(b"\0asm".to_vec()).await.unwrap();
    assert_eq!((stored.sha256, stored.size_bytes), ("2".repeat(64), 4));
    assert_eq!(s.hubs[1].log().last(), Some(&"put-artifact"));
    // 1 saw it too and answered NotLeader with the hint.
    assert!(s.hubs[0].log().contains(&"put-artifact"));

    let spec = strata_protocol::workload::MonitorSpec::from_json_str(&format!(
        r#"{{"name":"m","tenant":"ghost","artifact":{{"sha256":"{}","size-bytes":4}},
            "selector":{{"tenant":"ghost","device-globs":["*"]}},
            "resources":{{"memory-mib":1,"cpu-millicores":1}}}}"#,
        "a".repeat(64)
    ))
    .unwrap();
    let err = s.client.submit_monitor(spec).await.unwrap_err();
    let RegionError::Invalid { region, errors } = &err else {
        panic!("expected Invalid, got {err}");
    };
    assert_eq!(region, "west");
    assert_eq!(errors.fields(), vec!["tenant"]);
    assert!(err.to_string().contains("checked by 2"), "{err}");

    let err = s
        .client
        .monitor("acme".into(), "nope".into())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RegionError::NotFound {
            region: "west".into(),
            what: "monitor acme/nope".into()
        }
    );
    s.client
        .delete_monitor("acme".into(), "m".into())
        .await
        .unwrap();
    assert_eq!(s.hubs[1].log().last(), Some(&"delete"));

    let alerts = s
        .client
        .alerts(AlertQuery {
            tenant: Some("acme".into()),
            device: None,
            monitor: None,
            min_severity: None,
            from_ms: 5,
            to_ms: 10,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(alerts.value[0].edge, "answered-by-2");
    assert_eq!((alerts.value[0].ts_ms, alerts.stale), (5, false));

    // A response of the wrong kind is a protocol error naming it.
    let err = s.client.monitors(None).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RegionError::Protocol {
                got: "monitor-deleted",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn monitor_writes_without_a_leader_fail() {
    let s = setup(2, 0).await;
    let err = s.client.put_artifact(vec![1]).await.unwrap_err();
    assert_eq!(
        err,
        RegionError::NoLeader {
            region: "west".into()
        }
    );
    assert!(s.hubs.iter().all(|h| !h.log().contains(&"put-artifact")));
    // Reads still work, marked stale.
    let err = s.client.monitor("a".into(), "b".into()).await.unwrap_err();
    assert!(matches!(err, RegionError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn membership_changes_have_their_own_deadline_and_refusals_name_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::ensure(dir.path()).unwrap();
    let group = Group::default();
    group.leader.store(1, Ordering::SeqCst);
    let hub = spawn_hub(&pki, &group, "west", 1).await;
    let tls = NodeTls::load(&pki.node("central").unwrap()).unwrap();
    // The add takes longer than a request may, but within the membership
    // deadline: it is answered with the leader's refusal, not a timeout.
    let client = RegionClient::new(
        "west",
        vec![hub.addr.clone()],
        client_endpoint(&tls).unwrap(),
        Timeouts {
            request: Duration::from_millis(300),
            connect: Duration::from_millis(300),
            membership: Duration::from_secs(5),
        },
        HubMetrics::default(),
    );
    let replica = ReplicaInfo {
        id: SLOW_REFUSED,
        peer_addr: "10.9.9.9:1".into(),
        client_addr: "10.9.9.9:2".into(),
        voter: true,
    };
    let err = client.add_replica(replica.clone()).await.unwrap_err();
    let RegionError::Refused { region, refusal } = &err else {
        panic!("expected Refused, got {err}");
    };
    assert_eq!(region, "west");
    assert!(
        matches!(refusal, MembershipRefusal::Behind { id: 13, .. }),
        "{refusal:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("replica 13 (10.9.9.9:1)") && msg.contains("matched 3 of 900"),
        "{msg}"
    );
    // With a membership deadline shorter than the add, the deadline is
    // reported as the membership one.
    let short = RegionClient::new(
        "west",
        vec![hub.addr.clone()],
        client_endpoint(&tls).unwrap(),
        Timeouts {
            request: Duration::from_secs(5),
            connect: Duration::from_millis(300),
            membership: Duration::from_millis(200),
        },
        HubMetrics::default(),
    );
    let err = short.add_replica(replica).await.unwrap_err();
    assert_eq!(
        err,
        RegionError::Timeout {
            region: "west".into(),
            timeout_ms: 200
        }
    );
}

#[tokio::test]
async fn the_summary_comes_from_the_leader_and_follows_it() {
    let s = setup(2, 1).await;
    s.client.status().await;
    s.group.leader.store(2, Ordering::SeqCst);
    // The client still believes 1 leads; 1 redirects to 2, which answers.
    let watch = WorkloadId::new("acme", "watch");
    let sum = s.client.summary(vec![watch.clone()]).await.unwrap();
    assert_eq!(sum.region, "west");
    assert_eq!(sum.devices_of("acme"), 2, "answered by replica 2");
    assert_eq!(sum.placed_of(&watch), 2, "the workloads asked about");
    let gpu = &sum.capacity.pools["gpu"];
    assert_eq!((gpu.nodes_ready, gpu.ladder[0].fits), (1, 3));
    assert!(s.hubs[0].log().contains(&"summary"));
    assert_eq!(s.hubs[1].log().last(), Some(&"summary"));
}

#[tokio::test]
async fn without_a_leader_the_summary_fails_and_no_follower_is_asked() {
    let s = setup(2, 0).await;
    let err = s.client.summary(vec![]).await.unwrap_err();
    assert_eq!(
        err,
        RegionError::NoLeader {
            region: "west".into()
        }
    );
    // A follower could only redirect: the request is never sent to one.
    assert!(s.hubs.iter().all(|h| !h.log().contains(&"summary")));
}
