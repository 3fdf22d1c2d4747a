//! Central replicas in one process over real QUIC and HTTP: a group of one
//! that keeps its writes across a restart, and a group of three where any
//! replica takes writes (forwarded to the leader), reads are linearizable
//! on followers, and the group keeps its writes and answers when the
//! leader stops.

use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{ClusterConfig, ClusterReplica, RegionConfig};
use crate::{bind_on, CentralConfig, Listeners};

const DEADLINE: Duration = Duration::from_secs(15);

struct Running {
    http: String,
    token: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), crate::CentralError>>,
}

fn config(dir: &std::path::Path, pki: &strata_net::Pki, id: u64) -> CentralConfig {
    CentralConfig {
        data_dir: dir.join(format!("central-{id}")),
        tls: pki.node(&format!("central-{id}")).unwrap(),
        regions: vec![RegionConfig {
            name: "west".into(),
            hubs: vec!["127.0.0.1:9".into()],
        }],
        cluster: ClusterConfig {
            id,
            tick_ms: 20,
            ..ClusterConfig::default()
        },
        ..CentralConfig::default()
    }
}

async fn start(cfg: CentralConfig, listeners: Listeners) -> Running {
    let token_file = cfg.token_file();
    let central = bind_on(cfg, listeners).await.unwrap();
    let http = central.local_addr().to_string();
    let stop = CancellationToken::new();
    let task = tokio::spawn(central.run(stop.clone()));
    Running {
        http,
        token: std::fs::read_to_string(token_file)
            .unwrap()
            .trim()
            .to_owned(),
        stop,
        task,
    }
}

impl Running {
    async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

async fn call(
    method: reqwest::Method,
    r: &Running,
    token: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method, format!("http://{}{path}", r.http))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

async fn until(what: &str, mut pred: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !pred().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tenant_names(v: &serde_json::Value) -> Vec<String> {
    v["tenants"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_one_keeps_its_writes_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = strata_net::Pki::ensure(&dir.path().join("pki")).unwrap();
    let r = start(config(dir.path(), &pki, 1), Listeners::default()).await;
    let token = r.token.clone();
    let put = serde_json::json!({ "description": "pumps" });
    let (s, body) = call(
        reqwest::Method::PUT,
        &r,
        &token,
        "/api/v1/tenants/acme",
        Some(put.clone()),
    )
    .await;
    assert_eq!(
        (s, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    // A retried PUT is answered, and changes nothing.
    let (s, body) = call(
        reqwest::Method::PUT,
        &r,
        &token,
        "/api/v1/tenants/acme",
        Some(put),
    )
    .await;
    assert_eq!((s, body["result"].as_str()), (200, Some("unchanged")));
    // Bad input: refused with the field named, nothing changed.
    let (s, body) = call(
        reqwest::Method::PUT,
        &r,
        &token,
        "/api/v1/tenants/acme",
        Some(serde_json::json!({ "description": "x".repeat(2000) })),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("description"));
    let (s, _) = call(
        reqwest::Method::GET,
        &r,
        &token,
        "/api/v1/tenants?stale=maybe",
        None,
    )
    .await;
    assert_eq!(s, 400);
    // The configured region was registered by the bootstrap.
    until("the region registry to hold west", async || {
        let (_, v) = call(
            reqwest::Method::GET,
            &r,
            &token,
            "/api/v1/central/regions",
            None,
        )
        .await;
        v["regions"][0]["name"] == "west"
    })
    .await;
    r.shutdown().await;

    let r = start(config(dir.path(), &pki, 1), Listeners::default()).await;
    let (s, v) = call(reqwest::Method::GET, &r, &token, "/api/v1/tenants", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(tenant_names(&v), ["acme"]);
    assert_eq!(v["tenants"][0]["description"], "pumps");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replica_takes_writes_and_the_group_survives_its_leader() {
    let dir = tempfile::tempdir().unwrap();
    let pki = strata_net::Pki::ensure(&dir.path().join("pki")).unwrap();
    let sockets: Vec<(TcpListener, UdpSocket)> = (0..3)
        .map(|_| {
            (
                TcpListener::bind("127.0.0.1:0").unwrap(),
                UdpSocket::bind("127.0.0.1:0").unwrap(),
            )
        })
        .collect();
    let replicas: Vec<ClusterReplica> = sockets
        .iter()
        .enumerate()
        .map(|(i, (t, u))| ClusterReplica {
            id: i as u64 + 1,
            peer_addr: u.local_addr().unwrap().to_string(),
            http_addr: t.local_addr().unwrap().to_string(),
        })
        .collect();
    // One operator token for the whole group (as `strata up` writes it).
    let shared_token = dir.path().join("operator.token");
    let mut running = Vec::new();
    for (i, (t, u)) in sockets.into_iter().enumerate() {
        let mut cfg = config(dir.path(), &pki, i as u64 + 1);
        cfg.cluster.replicas = replicas.clone();
        cfg.auth.token_file = Some(shared_token.clone());
        running.push(
            start(
                cfg,
                Listeners {
                    http: Some(t),
                    peer: Some(u),
                },
            )
            .await,
        );
    }
    let token = running[0].token.clone();
    let leader = async |rs: &[Running]| -> Option<u64> {
        for r in rs {
            let (s, v) = call(reqwest::Method::GET, r, &token, "/api/v1/central", None).await;
            if s == 200 && v["role"] == "leader" {
                return v["replica"].as_u64();
            }
        }
        None
    };
    let mut first = None;
    until("a leader", async || {
        first = leader(&running).await;
        first.is_some()
    })
    .await;
    let first = first.unwrap();
    // Write on every replica (two of them followers: forwarded).
    for (i, r) in running.iter().enumerate() {
        let (s, v) = call(
            reqwest::Method::PUT,
            r,
            &token,
            &format!("/api/v1/tenants/t{i}"),
            Some(serde_json::json!({})),
        )
        .await;
        assert_eq!(s, 200, "replica {}: {v}", i + 1);
    }
    // A linearizable read on any replica sees every acknowledged write.
    for r in &running {
        let (s, v) = call(reqwest::Method::GET, r, &token, "/api/v1/tenants", None).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(tenant_names(&v), ["t0", "t1", "t2"]);
    }
    // Stop the leader: the others elect one and keep every write.
    let gone = running.remove(first as usize - 1);
    gone.shutdown().await;
    let mut second = None;
    until("a new leader", async || {
        second = leader(&running).await;
        second.is_some()
    })
    .await;
    assert_ne!(second, Some(first));
    for r in &running {
        let (s, v) = call(
            reqwest::Method::PUT,
            r,
            &token,
            "/api/v1/tenants/after",
            Some(serde_json::json!({})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let (_, v) = call(reqwest::Method::GET, r, &token, "/api/v1/tenants", None).await;
        assert_eq!(tenant_names(&v), ["after", "t0", "t1", "t2"]);
    }
    // The operator digest is replicated: every replica takes the token.
    let (s, _) = call(
        reqwest::Method::GET,
        &running[0],
        "wrong-token-wrong-token-wrong-token",
        "/api/v1/tenants",
        None,
    )
    .await;
    assert_eq!(s, 401);
    for r in running {
        r.shutdown().await;
    }
}
