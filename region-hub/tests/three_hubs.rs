//! Three real hubs in one process over QUIC with mutual TLS on 127.0.0.1:0:
//! a batch sent to the leader is stored on every replica, a follower
//! redirects, a wrong-region edge is refused, and a restarted replica
//! recovers its applied state from disk and keeps replicating.

#![allow(clippy::unwrap_used)] // test helpers

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use region_hub::config::{PeerConfig, RaftTuning};
use region_hub::{HubConfig, Listeners, RunningHub};
use strata_net::{Pki, TlsFiles};
use strata_protocol::{
    EdgeRequest, EdgeResponse, HubRequest, HubResponse, Metric, NodeIdentity, NodeKind,
    QueryResult, RaftRole, SpoolEntry, TelemetryBatch, TelemetryQuery, TelemetryRecord,
};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(8);

struct Hub {
    cfg: HubConfig,
    running: RunningHub,
    stop: CancellationToken,
}

/// Rebinds a stopped hub's ports; its endpoint tasks release the sockets
/// asynchronously, so retry until the deadline.
async fn listeners_at(peer: SocketAddr, client: SocketAddr) -> Listeners {
    let start = Instant::now();
    loop {
        match (UdpSocket::bind(peer), UdpSocket::bind(client)) {
            (Ok(peer), Ok(client)) => return Listeners { peer, client },
            (p, c) => assert!(start.elapsed() < DEADLINE, "cannot rebind: {p:?} {c:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(cfg: HubConfig, l: Listeners) -> Hub {
    let stop = CancellationToken::new();
    let running = region_hub::start(cfg.clone(), l, stop.clone())
        .await
        .unwrap();
    Hub { cfg, running, stop }
}

fn batch(edge: &str, first_seq: u64, n: u64, now_ms: i64) -> EdgeRequest {
    EdgeRequest::Batch(TelemetryBatch {
        edge: edge.into(),
        epoch: 7,
        first_seq,
        entries: (0..n)
            .map(|i| {
                SpoolEntry::Telemetry(TelemetryRecord {
                    tenant: "t".into(),
                    device: "d".into(),
                    ts_ms: now_ms - 1_000_000 + (first_seq + i) as i64,
                    seq: None,
                    metrics: vec![Metric {
                        name: "v".into(),
                        value: i as f64,
                    }],
                    tags: vec![],
                })
            })
            .collect(),
    })
}

async fn client(
    pki: &Pki,
    kind: NodeKind,
    name: &str,
    region: &str,
    to: SocketAddr,
) -> Result<quinn::Connection, strata_net::NetError> {
    let tls = strata_net::NodeTls::load(&pki.node(name).unwrap()).unwrap();
    let ep = strata_net::client_endpoint(&tls).unwrap();
    let me = NodeIdentity {
        kind,
        id: name.into(),
        region: region.into(),
    };
    strata_net::connect(&ep, to, &me).await.map(|(c, _)| c)
}

/// Polls every hub's status until `pred` holds for all of them.
async fn wait_all(hubs: &[Hub], what: &str, pred: impl Fn(&strata_protocol::HubStatus) -> bool) {
    let start = Instant::now();
    loop {
        let mut ok = true;
        for h in hubs {
            ok &= pred(&h.running.node.status().await.unwrap());
        }
        if ok {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn leader(hubs: &[Hub]) -> usize {
    let start = Instant::now();
    loop {
        for (i, h) in hubs.iter().enumerate() {
            if h.running.node.status().await.unwrap().role == RaftRole::Leader {
                return i;
            }
        }
        assert!(start.elapsed() < DEADLINE, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(dir: &Path, id: u64, tls: TlsFiles, addrs: &[(SocketAddr, SocketAddr)]) -> HubConfig {
    HubConfig {
        region: "r1".into(),
        id,
        data_dir: dir.join(format!("hub-{id}")),
        peer_listen: addrs[id as usize - 1].0,
        client_listen: addrs[id as usize - 1].1,
        peers: addrs
            .iter()
            .enumerate()
            .map(|(i, (p, c))| PeerConfig {
                id: i as u64 + 1,
                peer_addr: p.to_string(),
                client_addr: c.to_string(),
            })
            .collect(),
        tls,
        raft: RaftTuning {
            tick_ms: 20,
            ..RaftTuning::default()
        },
        checkpoint_interval_ms: 200,
        ..HubConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_replicate_redirect_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::ensure(&dir.path().join("pki")).unwrap();
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let l = Listeners {
            peer: UdpSocket::bind("127.0.0.1:0").unwrap(),
            client: UdpSocket::bind("127.0.0.1:0").unwrap(),
        };
        addrs.push((l.peer.local_addr().unwrap(), l.client.local_addr().unwrap()));
        listeners.push(l);
    }
    let mut hubs = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let cfg = config(
            dir.path(),
            id,
            pki.node(&format!("hub-{id}")).unwrap(),
            &addrs,
        );
        hubs.push(start(cfg, l).await);
    }
    let now_ms = region_hub::raft::driver::now_ms();

    let l = leader(&hubs).await;
    let conn = client(
        &pki,
        NodeKind::Edge,
        "edge-1",
        "r1",
        hubs[l].running.client_addr,
    )
    .await
    .unwrap();
    let resp: EdgeResponse = strata_net::rpc::call(&conn, &batch("edge-1", 0, 500, now_ms))
        .await
        .unwrap();
    assert_eq!(
        resp,
        EdgeResponse::Committed {
            first_seq: 0,
            count: 500
        }
    );
    wait_all(&hubs, "500 records everywhere", |s| s.stored_records == 500).await;

    // A follower redirects writes to the leader's client address.
    let f = (l + 1) % 3;
    let fconn = client(
        &pki,
        NodeKind::Edge,
        "edge-1",
        "r1",
        hubs[f].running.client_addr,
    )
    .await
    .unwrap();
    match strata_net::rpc::call::<_, EdgeResponse>(&fconn, &batch("edge-1", 500, 1, now_ms))
        .await
        .unwrap()
    {
        EdgeResponse::NotLeader { leader: Some(h) } => {
            assert_eq!(h.addr, hubs[l].running.client_addr.to_string());
            assert_eq!(h.hub_id, l as u64 + 1);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Followers answer reads from their replica.
    let tool = client(&pki, NodeKind::Tool, "cli", "", hubs[f].running.client_addr)
        .await
        .unwrap();
    let q = HubRequest::Query(TelemetryQuery {
        tenant: "t".into(),
        device: "d".into(),
        from_ms: 0,
        to_ms: i64::MAX,
        step_ms: None,
        limit: 10_000,
    });
    match strata_net::rpc::call::<_, HubResponse>(&tool, &q)
        .await
        .unwrap()
    {
        HubResponse::Telemetry(QueryResult::Raw(r)) => assert_eq!(r.len(), 500),
        other => panic!("unexpected {other:?}"),
    }
    // An edge of another region is refused at the handshake.
    assert!(client(
        &pki,
        NodeKind::Edge,
        "edge-9",
        "r2",
        hubs[l].running.client_addr
    )
    .await
    .is_err());

    // Restart a follower from disk.
    let h = hubs.remove(f);
    let applied = h.running.node.status().await.unwrap().applied_index;
    h.stop.cancel();
    h.running.wait().await.unwrap();
    let restarted = start(h.cfg.clone(), listeners_at(addrs[f].0, addrs[f].1).await).await;
    let st = restarted.running.node.status().await.unwrap();
    assert!(
        st.applied_index >= applied,
        "recovered applied {} < {applied}",
        st.applied_index
    );
    assert_eq!(st.stored_records, 500);
    hubs.insert(f, restarted);

    let l = leader(&hubs).await;
    let conn = client(
        &pki,
        NodeKind::Edge,
        "edge-1",
        "r1",
        hubs[l].running.client_addr,
    )
    .await
    .unwrap();
    let resp: EdgeResponse = strata_net::rpc::call(&conn, &batch("edge-1", 500, 500, now_ms))
        .await
        .unwrap();
    assert_eq!(
        resp,
        EdgeResponse::Committed {
            first_seq: 500,
            count: 500
        }
    );
    wait_all(&hubs, "1000 records everywhere", |s| {
        s.stored_records == 1000
    })
    .await;

    for h in hubs {
        h.stop.cancel();
        h.running.wait().await.unwrap();
    }
}
