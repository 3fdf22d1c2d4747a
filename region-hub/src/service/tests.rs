//! Service tests: the connection policy, and monitors, artifacts, alerts
//! and assignments end to end through a real single-replica hub over QUIC.

use super::*;

fn ident(kind: NodeKind, region: &str) -> NodeIdentity {
    NodeIdentity {
        kind,
        id: "x".into(),
        region: region.into(),
    }
}

#[test]
fn client_policy_checks_kind_and_region() {
    assert!(client_policy(&ident(NodeKind::Edge, "r1"), "r1").is_ok());
    assert!(matches!(
        client_policy(&ident(NodeKind::Edge, "r2"), "r1"),
        Err(RefuseReason::WrongRegion { .. })
    ));
    assert!(client_policy(&ident(NodeKind::Central, ""), "r1").is_ok());
    assert!(matches!(
        client_policy(&ident(NodeKind::Hub, "r1"), "r1"),
        Err(RefuseReason::KindNotAllowed { .. })
    ));
}

mod workloads {
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    use strata_protocol::liveness::EdgeHeartbeat;
    use strata_protocol::monitoring::{
        AlertQuery, DerivedMetricRecord, InstanceStatus, MonitorCapacity,
    };
    use strata_protocol::scheduling::NodeFacts;
    use strata_protocol::workload::{MonitorSpec, Placement};
    use strata_protocol::{
        AlertRecord, EdgeRequest, EdgeResponse, EdgeStatus, HubRequest, HubResponse, Metric,
        NodeIdentity, NodeKind, Severity, SpoolEntry, Tag, TelemetryBatch, TelemetryRecord,
    };
    use tokio_util::sync::CancellationToken;

    use crate::artifact::sha256_hex;
    use crate::config::RaftTuning;
    use crate::raft::driver::now_ms;
    use crate::store::StoreConfig;
    use crate::{HubConfig, Listeners};

    const DEADLINE: Duration = Duration::from_secs(8);

    const MODULE: &str = r#"(module
      (import "strata" "emit_alert" (func (param i32 i32 i32 i32 i32 i32 i32)))
      (memory (export "memory") 1)
      (func (export "strata_abi_version") (result i32) (i32.const 1))
      (func (export "strata_alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "strata_init") (param i32 i32) (result i32) (i32.const 0))
      (func (export "strata_on_batch") (param i32 i32) (result i32) (i32.const 0)))"#;

    fn spec(sha256: &str, size: usize) -> MonitorSpec {
        MonitorSpec::from_json_str(&format!(
            r#"{{"name":"z","tenant":"acme","artifact":{{"sha256":"{sha256}","size-bytes":{size}}},
            "selector":{{"tenant":"acme","device-globs":["boiler-*"],"tags":{{"site":"plant-1"}}}},
            "resources":{{"memory-mib":16,"cpu-millicores":50}},"params":{{"k":1}}}}"#
        ))
        .unwrap()
    }

    fn batch(first_seq: u64, now: i64) -> EdgeRequest {
        let telemetry = TelemetryRecord {
            tenant: "acme".into(),
            device: "boiler-1".into(),
            ts_ms: now,
            seq: Some(1),
            metrics: vec![Metric {
                name: "temp".into(),
                value: 80.0,
            }],
            tags: vec![Tag {
                key: "site".into(),
                value: "plant-1".into(),
            }],
        };
        let alert = AlertRecord {
            tenant: "acme".into(),
            device: "boiler-1".into(),
            monitor: "z".into(),
            edge: "edge-1".into(),
            severity: Severity::Critical,
            code: "anomaly".into(),
            message: "too hot".into(),
            ts_ms: now,
        };
        let metric = DerivedMetricRecord {
            tenant: "acme".into(),
            device: "boiler-1".into(),
            monitor: "z".into(),
            name: "score".into(),
            value: 3.5,
            ts_ms: now,
        };
        EdgeRequest::Batch(TelemetryBatch {
            edge: "edge-1".into(),
            epoch: 1,
            first_seq,
            entries: vec![
                SpoolEntry::Telemetry(telemetry),
                SpoolEntry::Alert(alert),
                SpoolEntry::Metric(metric),
            ],
        })
    }

    fn heartbeat(instances: Vec<InstanceStatus>) -> EdgeRequest {
        EdgeRequest::Pulse(EdgeHeartbeat {
            status: EdgeStatus {
                edge: "edge-1".into(),
                capacity: MonitorCapacity {
                    memory_mib: 256,
                    cpu_millicores: 1000,
                },
                instances,
                ..EdgeStatus::default()
            },
            boot_id: 7,
            facts: NodeFacts {
                labels: [("zone".to_owned(), "a".to_owned())].into(),
                pools: Default::default(),
            },
        })
    }

    /// The ack's (version, lease renewed).
    fn ack(r: &EdgeResponse) -> Option<(u64, bool)> {
        match r {
            EdgeResponse::PulseAck {
                assignments_version,
                lease_renewed,
                store_retention_ms,
            } => {
                assert_eq!(*store_retention_ms, StoreConfig::default().retention_ms);
                Some((*assignments_version, *lease_renewed))
            }
            _ => None,
        }
    }

    fn alerts_query() -> HubRequest {
        HubRequest::QueryAlerts(AlertQuery {
            tenant: Some("acme".into()),
            device: None,
            monitor: None,
            min_severity: Some(Severity::Warning),
            from_ms: 0,
            to_ms: i64::MAX,
            limit: 10,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn monitors_artifacts_alerts_and_assignments() {
        let dir = tempfile::tempdir().unwrap();
        let pki = strata_net::Pki::ensure(&dir.path().join("pki")).unwrap();
        let l = Listeners {
            peer: UdpSocket::bind("127.0.0.1:0").unwrap(),
            client: UdpSocket::bind("127.0.0.1:0").unwrap(),
        };
        let cfg = HubConfig {
            region: "r1".into(),
            id: 1,
            data_dir: dir.path().join("hub-1"),
            peers: vec![crate::config::PeerConfig {
                id: 1,
                peer_addr: l.peer.local_addr().unwrap().to_string(),
                client_addr: l.client.local_addr().unwrap().to_string(),
            }],
            tls: pki.node("hub-1").unwrap(),
            raft: RaftTuning {
                tick_ms: 20,
                ..RaftTuning::default()
            },
            ..HubConfig::default()
        };
        let stop = CancellationToken::new();
        let hub = crate::start(cfg, l, stop.clone()).await.unwrap();
        let connect = |kind: NodeKind, name: &'static str| {
            let pki = &pki;
            let addr = hub.client_addr;
            async move {
                let tls = strata_net::NodeTls::load(&pki.node(name).unwrap()).unwrap();
                let ep = strata_net::client_endpoint(&tls).unwrap();
                let me = NodeIdentity {
                    kind,
                    id: name.into(),
                    region: "r1".into(),
                };
                strata_net::connect(&ep, addr, &me).await.unwrap().0
            }
        };
        let edge = connect(NodeKind::Edge, "edge-1").await;
        let tool = connect(NodeKind::Tool, "cli").await;
        let call_edge = |req: EdgeRequest| {
            let edge = edge.clone();
            async move {
                let r: EdgeResponse = strata_net::rpc::call(&edge, &req).await.unwrap();
                r
            }
        };
        let call = |req: HubRequest| {
            let tool = tool.clone();
            async move {
                let r: HubResponse = strata_net::rpc::call(&tool, &req).await.unwrap();
                r
            }
        };

        // A single replica elects itself; heartbeat until it has, and until
        // the edge's "up" is in the log: only then are leases renewed.
        let start = Instant::now();
        loop {
            let r = call_edge(heartbeat(vec![])).await;
            if ack(&r) == Some((0, true)) {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "no leader or no renewal: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Telemetry, an alert and a derived metric; the resend stores nothing.
        let now = now_ms();
        for _ in 0..2 {
            assert_eq!(
                call_edge(batch(0, now)).await,
                EdgeResponse::Committed {
                    first_seq: 0,
                    count: 3
                }
            );
        }
        let HubResponse::Alerts(alerts) = call(alerts_query()).await else {
            panic!("alerts")
        };
        assert_eq!(alerts.len(), 1, "the resent alert is stored once");
        assert_eq!(alerts[0].message, "too hot");
        assert_eq!(hub.metrics.alerts_stored.get(), 1);
        assert_eq!(hub.metrics.derived_metrics_stored.get(), 1);

        // Artifacts: refused when invalid, stored once.
        let r = call(HubRequest::PutArtifact {
            bytes: b"nope".to_vec(),
        })
        .await;
        assert!(
            matches!(&r, HubResponse::Invalid(e) if e.fields() == vec!["artifact"]),
            "{r:?}"
        );
        let module = wat::parse_str(MODULE).unwrap();
        let sha = sha256_hex(&module);
        for created in [true, false] {
            assert_eq!(
                call(HubRequest::PutArtifact {
                    bytes: module.clone()
                })
                .await,
                HubResponse::ArtifactStored {
                    sha256: sha.clone(),
                    size_bytes: module.len() as u64,
                    created
                }
            );
        }

        // Submit: the scheduler places it on the only edge (the answer waits
        // for that); identical resubmit keeps the generation; a change bumps
        // it.
        let s = spec(&sha, module.len());
        let HubResponse::Monitor(info) = call(HubRequest::SubmitMonitor(s.clone())).await else {
            panic!("submit")
        };
        assert_eq!((info.edge.as_str(), info.region.as_str()), ("edge-1", "r1"));
        assert_eq!((info.wanted, info.placed), (1, 1));
        assert_eq!(info.allocations[0].fencing_token, 1);
        assert_eq!(info.evaluations[0].trigger, "submit");
        let g1 = info.spec.generation;
        assert!(g1 >= 1);
        let HubResponse::Monitor(again) = call(HubRequest::SubmitMonitor(s.clone())).await else {
            panic!("resubmit")
        };
        assert_eq!(again.spec.generation, g1);
        assert_eq!(again.updated_ms, info.updated_ms);
        let mut changed = s.clone();
        changed.params = r#"{"k":2}"#.into();
        let HubResponse::Monitor(upd) = call(HubRequest::SubmitMonitor(changed)).await else {
            panic!("update")
        };
        assert_eq!(upd.spec.generation, g1 + 1);
        assert_eq!(upd.created_ms, info.created_ms);

        // Field-level errors from region facts.
        let mut bad = s.clone();
        bad.tenant = "globex".into();
        bad.selector.tenant = "globex".into();
        bad.resources.memory_mib = 512;
        bad.target = Placement::Node("edge-9".into());
        let r = call(HubRequest::SubmitMonitor(bad)).await;
        let HubResponse::Invalid(errs) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            errs.fields(),
            vec!["tenant", "selector", "target.node"],
            "{errs}"
        );
        let mut big = s.clone();
        big.name = "big".into();
        big.resources.memory_mib = 300;
        let HubResponse::Invalid(errs) = call(HubRequest::SubmitMonitor(big)).await else {
            panic!("big")
        };
        assert_eq!(errs.fields(), vec!["resources.memory-mib"], "{errs}");

        // The edge's view: its allocations with their version (a grant:
        // the edge is up), the module; another edge's allocations are not
        // its business.
        let r = call_edge(EdgeRequest::FetchAllocations {
            edge: "edge-1".into(),
        })
        .await;
        let EdgeResponse::Allocations {
            version,
            lease_granted,
            allocations,
        } = r
        else {
            panic!("{r:?}")
        };
        assert!(lease_granted);
        assert_eq!(allocations.len(), 1);
        assert_eq!(allocations[0].spec.generation, g1 + 1, "updated in place");
        assert_eq!(
            (
                allocations[0].fencing_token,
                allocations[0].replace_after_ms
            ),
            (1, None)
        );
        let r = call_edge(EdgeRequest::FetchAllocations {
            edge: "edge-2".into(),
        })
        .await;
        assert!(matches!(r, EdgeResponse::Rejected { .. }), "{r:?}");
        let r = call_edge(EdgeRequest::FetchAssignments {
            edge: "edge-1".into(),
        })
        .await;
        let EdgeResponse::Assignments { monitors, .. } = r else {
            panic!("{r:?}")
        };
        assert_eq!(monitors.len(), 1);
        assert_eq!(
            call_edge(EdgeRequest::FetchArtifact {
                sha256: sha.clone()
            })
            .await,
            EdgeResponse::Artifact {
                sha256: sha.clone(),
                bytes: module.clone()
            }
        );
        assert!(matches!(
            call_edge(EdgeRequest::FetchArtifact {
                sha256: "0".repeat(64)
            })
            .await,
            EdgeResponse::Rejected { .. }
        ));
        // The heartbeat reports the instance; the ack carries the version.
        let running = InstanceStatus {
            tenant: "acme".into(),
            name: "z".into(),
            generation: g1 + 1,
            state: "running".into(),
            ..InstanceStatus::default()
        };
        assert_eq!(
            ack(&call_edge(heartbeat(vec![running.clone()])).await),
            Some((version, true))
        );
        let r = call(HubRequest::GetMonitor {
            tenant: "acme".into(),
            name: "z".into(),
        })
        .await;
        let HubResponse::Monitor(got) = r else {
            panic!("{r:?}")
        };
        assert_eq!(got.status, Some(running));
        let r = call(HubRequest::ListMonitors {
            tenant: Some("acme".into()),
        })
        .await;
        assert!(
            matches!(&r, HubResponse::Monitors(m) if m.len() == 1),
            "{r:?}"
        );

        // Delete, then it is gone everywhere.
        let del = HubRequest::DeleteMonitor {
            tenant: "acme".into(),
            name: "z".into(),
        };
        assert_eq!(call(del.clone()).await, HubResponse::MonitorDeleted);
        assert!(matches!(call(del).await, HubResponse::NotFound { .. }));
        // The scheduler stops its allocation.
        let start = Instant::now();
        loop {
            let r = call_edge(EdgeRequest::FetchAllocations {
                edge: "edge-1".into(),
            })
            .await;
            match r {
                EdgeResponse::Allocations {
                    version: v,
                    allocations,
                    ..
                } if allocations.is_empty() => {
                    assert!(v > version);
                    break;
                }
                other => assert!(start.elapsed() < DEADLINE, "still placed: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let errors = |kind: &'static str| {
            hub.metrics
                .request_errors
                .get_or_create(&crate::metrics::KindLabel { kind })
                .get()
        };
        assert_eq!(errors("submit_monitor"), 2);
        assert_eq!(errors("put_artifact"), 1);
        stop.cancel();
        hub.wait().await.unwrap();
    }
}

/// The region summary through three real replicas over QUIC: followers
/// redirect, the leader answers from its applied state, and reports the
/// region degraded once it loses a member.
mod summary {
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    use strata_protocol::liveness::EdgeHeartbeat;
    use strata_protocol::monitoring::MonitorCapacity;
    use strata_protocol::scheduling::NodeFacts;
    use strata_protocol::{
        EdgeRequest, EdgeResponse, EdgeStatus, HubRequest, HubResponse, Metric, NodeIdentity,
        NodeKind, RaftRole, SpoolEntry, TelemetryBatch, TelemetryRecord,
    };
    use strata_sched::global::{RegionHealth, RegionSummary};
    use strata_sched::WorkloadId;
    use tokio_util::sync::CancellationToken;

    use crate::config::{PeerConfig, RaftTuning};
    use crate::raft::driver::now_ms;
    use crate::{HubConfig, Listeners, RunningHub};

    const DEADLINE: Duration = Duration::from_secs(10);

    async fn connect(
        pki: &strata_net::Pki,
        kind: NodeKind,
        name: &str,
        to: std::net::SocketAddr,
    ) -> quinn::Connection {
        let tls = strata_net::NodeTls::load(&pki.node(name).unwrap()).unwrap();
        let ep = strata_net::client_endpoint(&tls).unwrap();
        let me = NodeIdentity {
            kind,
            id: name.into(),
            region: "r1".into(),
        };
        strata_net::connect(&ep, to, &me).await.unwrap().0
    }

    async fn call(c: &quinn::Connection, req: HubRequest) -> HubResponse {
        strata_net::rpc::call(c, &req).await.unwrap()
    }

    /// A pulse of edge-1: 1000 millicores and 256 MiB for monitors, in
    /// pool `gpu`.
    fn pulse() -> EdgeRequest {
        EdgeRequest::Pulse(EdgeHeartbeat {
            status: EdgeStatus {
                edge: "edge-1".into(),
                capacity: MonitorCapacity {
                    memory_mib: 256,
                    cpu_millicores: 1000,
                },
                ..EdgeStatus::default()
            },
            boot_id: 7,
            facts: NodeFacts {
                labels: Default::default(),
                pools: ["gpu".to_owned()].into(),
            },
        })
    }

    fn readings(now: i64) -> EdgeRequest {
        let rec = |tenant: &str, device: &str| {
            SpoolEntry::Telemetry(TelemetryRecord {
                tenant: tenant.into(),
                device: device.into(),
                ts_ms: now,
                seq: None,
                metrics: vec![Metric {
                    name: "t".into(),
                    value: 1.0,
                }],
                tags: vec![],
            })
        };
        EdgeRequest::Batch(TelemetryBatch {
            edge: "edge-1".into(),
            epoch: 1,
            first_seq: 0,
            entries: vec![rec("acme", "d1"), rec("acme", "d2"), rec("globex", "g1")],
        })
    }

    /// Asks `hub` for the summary, pulsing the edge first so it stays up,
    /// until `done` holds.
    async fn summary_until(
        edge: &quinn::Connection,
        hub: &quinn::Connection,
        what: &str,
        done: impl Fn(&RegionSummary) -> bool,
    ) -> RegionSummary {
        let start = Instant::now();
        loop {
            let _: EdgeResponse = strata_net::rpc::call(edge, &pulse()).await.unwrap();
            let r = call(
                hub,
                HubRequest::RegionSummary {
                    global: vec![WorkloadId::new("acme", "none-yet")],
                },
            )
            .await;
            match r {
                HubResponse::RegionSummary(s) if done(&s) => return *s,
                other => assert!(
                    start.elapsed() < DEADLINE,
                    "timed out waiting for {what}: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leader_answers_and_followers_redirect() {
        let dir = tempfile::tempdir().unwrap();
        let pki = strata_net::Pki::ensure(&dir.path().join("pki")).unwrap();
        let listeners: Vec<Listeners> = (0..3)
            .map(|_| Listeners {
                peer: UdpSocket::bind("127.0.0.1:0").unwrap(),
                client: UdpSocket::bind("127.0.0.1:0").unwrap(),
            })
            .collect();
        let peers: Vec<PeerConfig> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| PeerConfig {
                id: i as u64 + 1,
                peer_addr: l.peer.local_addr().unwrap().to_string(),
                client_addr: l.client.local_addr().unwrap().to_string(),
            })
            .collect();
        let mut hubs: Vec<(RunningHub, CancellationToken)> = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            let cfg = HubConfig {
                region: "r1".into(),
                id,
                data_dir: dir.path().join(format!("hub-{id}")),
                peers: peers.clone(),
                tls: pki.node(&format!("hub-{id}")).unwrap(),
                raft: RaftTuning {
                    tick_ms: 20,
                    ..RaftTuning::default()
                },
                ..HubConfig::default()
            };
            let stop = CancellationToken::new();
            hubs.push((crate::start(cfg, l, stop.clone()).await.unwrap(), stop));
        }
        let start = Instant::now();
        let leader = loop {
            let mut found = None;
            for (i, (h, _)) in hubs.iter().enumerate() {
                if h.node.status().await.unwrap().role == RaftRole::Leader {
                    found = Some(i);
                }
            }
            if let Some(i) = found {
                break i;
            }
            assert!(start.elapsed() < DEADLINE, "no leader elected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let follower = (leader + 1) % 3;
        let edge = connect(&pki, NodeKind::Edge, "edge-1", hubs[leader].0.client_addr).await;
        let central = connect(
            &pki,
            NodeKind::Central,
            "central",
            hubs[leader].0.client_addr,
        )
        .await;
        let at_follower = connect(
            &pki,
            NodeKind::Central,
            "central",
            hubs[follower].0.client_addr,
        )
        .await;

        let committed = strata_net::rpc::call::<_, EdgeResponse>(&edge, &readings(now_ms()))
            .await
            .unwrap();
        assert!(
            matches!(committed, EdgeResponse::Committed { count: 3, .. }),
            "{committed:?}"
        );
        // The edge's report reaches the applied state shortly after its
        // first pulse (the leader replicates a material change).
        let s = summary_until(&edge, &central, "edge-1 in the summary", |s| {
            s.capacity.pools.contains_key("gpu")
        })
        .await;
        assert_eq!(s.region, "r1");
        let gpu = &s.capacity.pools["gpu"];
        assert_eq!(gpu.nodes_ready, 1);
        let fits: Vec<u64> = gpu.ladder.iter().map(|l| l.fits).collect();
        // 1000m / 256 MiB, one instance per edge: every standard size but
        // the 1000m / 512 MiB one.
        assert_eq!(fits, vec![1, 1, 1, 1, 0]);
        assert_eq!(s.capacity.all, *gpu);
        assert_eq!(s.devices_of("acme"), 2);
        assert_eq!(s.devices_of("globex"), 1);
        assert!(s.placed.is_empty());
        assert_eq!(s.health.state, RegionHealth::Ok);

        // A follower redirects to the leader's client address.
        let r = call(&at_follower, HubRequest::RegionSummary { global: vec![] }).await;
        let HubResponse::NotLeader { leader: Some(hint) } = r else {
            panic!("expected a redirect, got {r:?}")
        };
        assert_eq!(hint.addr, hubs[leader].0.client_addr.to_string());
        let counted = |i: usize, errors: bool| {
            let m = &hubs[i].0.metrics;
            let family = if errors {
                &m.request_errors
            } else {
                &m.requests
            };
            family
                .get_or_create(&crate::metrics::KindLabel {
                    kind: "region_summary",
                })
                .get()
        };
        assert!(counted(leader, false) >= 1);
        assert_eq!(counted(leader, true), 0);
        assert_eq!((counted(follower, false), counted(follower, true)), (1, 1));

        // Losing a member: the leader says degraded once it stops hearing
        // from it (`unreachable-after`).
        let (gone, stop) = hubs.remove(follower);
        stop.cancel();
        gone.wait().await.unwrap();
        let s = summary_until(&edge, &central, "degraded", |s| {
            s.health.state == RegionHealth::Degraded
        })
        .await;
        assert_eq!(s.capacity.pools["gpu"].nodes_ready, 1);
        for (h, stop) in hubs {
            stop.cancel();
            h.wait().await.unwrap();
        }
    }
}
