//! Over real QUIC: a replica added with `AddReplica` after the leader
//! compacted its log catches up through a chunked snapshot stream, then
//! keeps replicating entries too large for one frame (chunked appends).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use strata_protocol::{
    EdgeRequest, EdgeResponse, HubRequest, HubResponse, Metric, NodeIdentity, NodeKind,
    ReplicaInfo, SpoolEntry, TelemetryBatch, TelemetryRecord,
};
use tokio_util::sync::CancellationToken;

use crate::config::{PeerConfig, RaftTuning};
use crate::{HubConfig, Listeners};

const DEADLINE: Duration = Duration::from_secs(8);
/// `raft.peer-frame-bytes` of these hubs.
const FRAME_BYTES: usize = 128 * 1024;

async fn until(what: &str, mut pred: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !pred().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_replica_catches_up_by_chunked_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let pki = strata_net::Pki::ensure(&dir.path().join("pki")).unwrap();
    let bind = || Listeners {
        peer: UdpSocket::bind("127.0.0.1:0").unwrap(),
        client: UdpSocket::bind("127.0.0.1:0").unwrap(),
    };
    let (l1, l2) = (bind(), bind());
    let info = |id: u64, l: &Listeners| ReplicaInfo {
        id,
        peer_addr: l.peer.local_addr().unwrap().to_string(),
        client_addr: l.client.local_addr().unwrap().to_string(),
        voter: true,
    };
    let (i1, i2) = (info(1, &l1), info(2, &l2));
    let cfg = |id: u64, join: bool| HubConfig {
        region: "r1".into(),
        id,
        data_dir: dir.path().join(format!("hub-{id}")),
        peers: vec![PeerConfig {
            id: 1,
            peer_addr: i1.peer_addr.clone(),
            client_addr: i1.client_addr.clone(),
        }],
        join,
        tls: pki.node(&format!("hub-{id}")).unwrap(),
        raft: RaftTuning {
            tick_ms: 20,
            log_retain_entries: 0,
            // Small frames, so the snapshot is reassembled from many chunks
            // and one big entry's append goes on a chunked stream.
            peer_frame_bytes: FRAME_BYTES,
            ..RaftTuning::default()
        },
        checkpoint_interval_ms: 100,
        ..HubConfig::default()
    };
    let stop = CancellationToken::new();
    let leader = crate::start(cfg(1, false), l1, stop.clone()).await.unwrap();
    let connect_to = |addr: std::net::SocketAddr, kind: NodeKind, name: &'static str| {
        let pki = &pki;
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
    let connect = |kind: NodeKind, name: &'static str| connect_to(leader.client_addr, kind, name);
    let edge = connect(NodeKind::Edge, "edge-1").await;
    let now = crate::raft::driver::now_ms();
    let entries: Vec<SpoolEntry> = (0..20_000)
        .map(|i| {
            SpoolEntry::Telemetry(TelemetryRecord {
                tenant: "t".into(),
                device: format!("d{}", i % 50),
                ts_ms: now - 100_000 + i,
                seq: None,
                metrics: vec![Metric {
                    name: "v".into(),
                    value: i as f64,
                }],
                tags: vec![],
            })
        })
        .collect();
    let req = EdgeRequest::Batch(TelemetryBatch {
        edge: "edge-1".into(),
        epoch: 1,
        first_seq: 0,
        entries,
    });
    // A single-replica group elects itself; retry until it has.
    let mut resp = EdgeResponse::HeartbeatAck {
        assignments_version: 0,
        store_retention_ms: 0,
    };
    until("the batch to commit", async || {
        resp = strata_net::rpc::call(&edge, &req).await.unwrap();
        matches!(resp, EdgeResponse::Committed { .. })
    })
    .await;
    assert_eq!(
        resp,
        EdgeResponse::Committed {
            first_seq: 0,
            count: 20_000
        }
    );
    // A checkpoint after the commit compacts the log past the batch.
    let c0 = leader.metrics.checkpoints.get();
    until("a checkpoint", async || {
        leader.metrics.checkpoints.get() > c0
    })
    .await;

    let late = crate::start(cfg(2, true), l2, stop.clone()).await.unwrap();
    let tool = connect(NodeKind::Tool, "cli").await;
    let r: HubResponse = strata_net::rpc::call(&tool, &HubRequest::AddReplica(i2))
        .await
        .unwrap();
    assert!(
        matches!(r, HubResponse::ConfChanged { ref replicas } if replicas.len() == 2),
        "{r:?}"
    );
    until("the new replica to catch up", async || {
        late.node.status().await.unwrap().stored_records == 20_000
    })
    .await;
    assert_eq!(late.metrics.raft.snapshots_received.get(), 1);
    assert_eq!(late.node.status().await.unwrap().replicas.len(), 2);
    // A second big batch: one entry above FRAME_BYTES, so its append goes
    // on a chunked stream; committing it needs the new replica's ack.
    let EdgeRequest::Batch(mut b) = req else {
        unreachable!()
    };
    b.first_seq = 20_000;
    let req = EdgeRequest::Batch(b);
    // On a loaded machine the leader of this 2-voter group can step down
    // (check-quorum) while the new replica is busy installing the snapshot;
    // an edge then retries at whichever replica leads, and so does this.
    let edge2 = connect_to(late.client_addr, NodeKind::Edge, "edge-1").await;
    let mut resp = EdgeResponse::HeartbeatAck {
        assignments_version: 0,
        store_retention_ms: 0,
    };
    until("the second batch to commit", async || {
        let mut r: EdgeResponse = strata_net::rpc::call(&edge, &req).await.unwrap();
        if let EdgeResponse::NotLeader { leader: Some(h) } = &r {
            if h.hub_id == 2 {
                r = strata_net::rpc::call(&edge2, &req).await.unwrap();
            }
        }
        resp = r;
        matches!(resp, EdgeResponse::Committed { .. })
    })
    .await;
    assert_eq!(
        resp,
        EdgeResponse::Committed {
            first_seq: 20_000,
            count: 20_000
        }
    );
    until("the big append to replicate", async || {
        late.node.status().await.unwrap().stored_records == 40_000
    })
    .await;
    stop.cancel();
    late.wait().await.unwrap();
    leader.wait().await.unwrap();
}
