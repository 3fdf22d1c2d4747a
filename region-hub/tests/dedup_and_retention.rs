//! A real single-replica hub over QUIC: issue 7's attack (spoofed future
//! readings with a device's upcoming seqs) erases nothing, what dedup drops
//! is counted per reason in metrics and per device and edge in the API, and
//! what retention drops is counted per tenant in metrics and the API.

#![allow(clippy::unwrap_used)] // test helpers

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use region_hub::config::{PeerConfig, RaftTuning};
use region_hub::metrics::{DuplicateLabel, RetentionLabel};
use region_hub::store::StoreConfig;
use region_hub::{HubConfig, Listeners};
use strata_protocol::{
    DeviceInfo, DeviceSearch, EdgeRequest, EdgeResponse, HubRequest, HubResponse, Metric,
    NodeIdentity, NodeKind, RaftRole, RetentionReport, SpoolEntry, TelemetryBatch, TelemetryRecord,
};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);
const YEAR_MS: i64 = 365 * 24 * 3_600_000;

fn reading(tenant: &str, device: &str, seq: u64, ts_ms: i64, value: f64) -> TelemetryRecord {
    TelemetryRecord {
        tenant: tenant.into(),
        device: device.into(),
        ts_ms,
        seq: Some(seq),
        metrics: vec![Metric {
            name: "temperature".into(),
            value,
        }],
        tags: vec![],
    }
}

fn batch(edge: &str, first_seq: u64, records: Vec<TelemetryRecord>) -> EdgeRequest {
    EdgeRequest::Batch(TelemetryBatch {
        edge: edge.into(),
        epoch: 1,
        first_seq,
        entries: records.into_iter().map(SpoolEntry::Telemetry).collect(),
    })
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_erases_nothing_and_every_drop_is_counted() {
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
        peers: vec![PeerConfig {
            id: 1,
            peer_addr: l.peer.local_addr().unwrap().to_string(),
            client_addr: l.client.local_addr().unwrap().to_string(),
        }],
        tls: pki.node("hub-1").unwrap(),
        raft: RaftTuning {
            tick_ms: 20,
            ..RaftTuning::default()
        },
        checkpoint_interval_ms: 100,
        store: StoreConfig {
            partition_ms: 1000,
            retention_ms: 5000,
            ..StoreConfig::default()
        },
        ..HubConfig::default()
    };
    let stop = CancellationToken::new();
    let hub = region_hub::start(cfg, l, stop.clone()).await.unwrap();
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
    let edge1 = connect(NodeKind::Edge, "edge-1").await;
    let edge2 = connect(NodeKind::Edge, "edge-2").await;
    let tool = connect(NodeKind::Tool, "cli").await;
    let send = |edge: &quinn::Connection, req: EdgeRequest| {
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
    wait_for("a leader", async || {
        (hub.node.status().await.ok()?.role == RaftRole::Leader).then_some(())
    })
    .await;

    // Device readings a day ahead (retention never reaches them here).
    let now = region_hub::raft::driver::now_ms();
    let base = now + 24 * 3_600_000;
    let real = |seq: u64| {
        reading(
            "demo",
            "dev-7",
            seq,
            base + seq as i64 * 1000,
            20.0 + seq as f64,
        )
    };
    let committed = |count| EdgeResponse::Committed {
        first_seq: 0,
        count,
    };
    // The device has published seqs 0..10; the spoofer seqs 10..40 ten
    // years ahead; then the device publishes 10..40.
    assert_eq!(
        send(&edge1, batch("edge-1", 0, (0..10).map(real).collect())).await,
        committed(10)
    );
    let spoofed = (10..40)
        .map(|s| reading("demo", "dev-7", s, now + 10 * YEAR_MS, 99.0))
        .collect();
    send(&edge1, batch("edge-1", 10, spoofed)).await;
    send(&edge1, batch("edge-1", 40, (10..40).map(real).collect())).await;
    // An edge resend (the first batch again) and device retransmissions of
    // the last five readings through another edge.
    assert_eq!(
        send(&edge1, batch("edge-1", 0, (0..10).map(real).collect())).await,
        committed(10)
    );
    assert_eq!(
        send(&edge2, batch("edge-2", 0, (35..40).map(real).collect())).await,
        committed(5)
    );

    let HubResponse::Devices(devices) = call(HubRequest::ListDevices {
        tenant: Some("demo".into()),
    })
    .await
    else {
        panic!("devices")
    };
    let d: &DeviceInfo = &devices[0];
    assert_eq!(d.records, 70, "10 + 30 spoofed + 30 real: nothing erased");
    assert_eq!((d.retransmissions_dropped, d.seq_reuses), (5, 30));
    // A search answers the same device with its counters, the edge its
    // latest reading came through, and the counts per edge.
    let HubResponse::DevicePage(page) = call(HubRequest::SearchDevices(DeviceSearch {
        tenant: Some("demo".into()),
        contains: Some(d.device.to_uppercase()),
        limit: 5,
    }))
    .await
    else {
        panic!("device page")
    };
    assert_eq!(page.matched, 1);
    assert_eq!(&page.devices[0], d);
    assert!(d.edge.is_some(), "{d:?}");
    assert_eq!(page.by_edge, vec![(d.edge.clone().unwrap(), 1)]);
    let HubResponse::Edges(edges) = call(HubRequest::ListEdges).await else {
        panic!("edges")
    };
    let e1 = edges.iter().find(|e| e.edge == "edge-1").unwrap();
    assert_eq!((e1.records_stored, e1.resends_dropped), (70, 10));
    let dup = |reason| {
        hub.metrics
            .duplicates
            .get_or_create(&DuplicateLabel { reason })
            .get()
    };
    assert_eq!((dup("edge_resend"), dup("device_retransmission")), (10, 5));
    assert_eq!(hub.metrics.seq_reuses.get(), 30);

    // Retention: once it has run, a reading older than 5 s is acknowledged
    // by the edge upstream but never stored; the hub counts it.
    let retention = || async {
        match call(HubRequest::Retention { tenant: None }).await {
            HubResponse::Retention(r) => r,
            other => panic!("{other:?}"),
        }
    };
    wait_for("a retention pass", async || {
        retention().await.retained_from_ms.map(|_| ())
    })
    .await;
    let old = (0..3)
        .map(|s| reading("old", "d", s, now - 2 * 24 * 3_600_000, 1.0))
        .collect();
    send(&edge1, batch("edge-1", 70, old)).await;
    // A fresh reading is stored, then expires with its partition.
    let fresh = reading("aging", "d", 0, region_hub::raft::driver::now_ms(), 1.0);
    send(&edge1, batch("edge-1", 73, vec![fresh])).await;
    let report: RetentionReport = wait_for("the fresh reading to expire", async || {
        let r = retention().await;
        r.tenants
            .iter()
            .any(|t| t.tenant == "aging" && t.expired == 1)
            .then_some(r)
    })
    .await;
    assert_eq!(report.retention_ms, 5000);
    let counts: Vec<(&str, u64, u64)> = report
        .tenants
        .iter()
        .map(|t| (t.tenant.as_str(), t.expired_on_arrival, t.expired))
        .collect();
    assert_eq!(counts, vec![("aging", 0, 1), ("old", 3, 0)]);
    let HubResponse::Retention(only_old) = call(HubRequest::Retention {
        tenant: Some("old".into()),
    })
    .await
    else {
        panic!("retention")
    };
    assert_eq!(only_old.tenants.len(), 1);
    // The metrics follow (reported at most every 10 s).
    let metric = |tenant: &str, reason| {
        hub.metrics
            .retention_dropped
            .get_or_create(&RetentionLabel {
                tenant: tenant.into(),
                reason,
            })
            .get()
    };
    wait_for("retention metrics", async || {
        (metric("old", "expired_on_arrival") == 3 && metric("aging", "expired") == 1).then_some(())
    })
    .await;
    stop.cancel();
    hub.wait().await.unwrap();
}
