//! Raft membership changes end to end, through central's HTTP API, with
//! real processes: a fourth hub joins a running 3-hub region (as a learner,
//! promoted once caught up), catches up by snapshot and log, survives a
//! SIGKILL and restart from its own disk, and is removed again; bad
//! requests get clear JSON errors. Every phase checks that each device has
//! exactly the readings it sent. Membership safety: a voter at an
//! unreachable address is refused with the reason and the region keeps its
//! three voters; a SIGKILLed hub makes the region degraded, naming it, and
//! healthy again once it is back.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use strata_protocol::{HubRequest, HubResponse, HubStatus, NodeIdentity, NodeKind, RaftRole};
use strata_tests::cluster::{free_udp_ports, metric_value, scrape, serial};
use strata_tests::fleet::{self, run_fleet, Phase, TENANT};
use strata_tests::{wait_until, Cluster, ClusterOpts, Proc};

/// Devices per ingest phase, and readings per device.
const DEVICES: u32 = 20;
const COUNT: u64 = 50;
/// The joining replica's Raft id.
const NEW_ID: u64 = 4;

/// One ingest phase: devices `<prefix>-0..DEVICES`, `COUNT` readings each.
fn phase(prefix: &str) -> Phase {
    Phase::new(prefix, DEVICES, COUNT)
}

/// Sends one phase as fast as the edges take it; every reading PUBACKed.
async fn ingest(c: &Cluster, prefix: &str, seed: u64) -> anyhow::Result<()> {
    run_fleet(phase(prefix).fleet(c.mqtt_addrs(), seed, 0.0))
        .await
        .map(|_| ())
        .with_context(|| format!("phase {prefix}"))
}

/// Every device of the given phases holds exactly its readings.
async fn assert_exactly_once(c: &Cluster, prefixes: &[&str], seed: u64) -> anyhow::Result<()> {
    let phases: Vec<Phase> = prefixes.iter().map(|p| phase(p)).collect();
    fleet::assert_exactly_once(c, &phases, seed).await
}

/// Sends one request to central's API; returns the status and JSON body.
async fn send(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = http.request(method, format!("{base}{path}"));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json::<Value>().await.unwrap_or(Value::Null)))
}

/// Asserts an API error: the status, and `{"error": {"code", "message"}}`
/// with a message containing `needle`.
fn assert_error(got: &(u16, Value), status: u16, code: &str, needle: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
}

/// Raft ids listed in a membership answer.
fn member_ids(body: &Value) -> Vec<u64> {
    body["replicas"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// One request straight to a hub over QUIC (no central in between).
async fn ask_hub(c: &Cluster, addr: SocketAddr, req: &HubRequest) -> anyhow::Result<HubResponse> {
    let me = NodeIdentity {
        kind: NodeKind::Tool,
        id: "membership-test".into(),
        region: c.opts.region.clone(),
    };
    let call = async {
        let (conn, _) = strata_net::connect(&c.tool, addr, &me).await?;
        let resp: HubResponse = strata_net::rpc::call(&conn, req).await?;
        conn.close(0u32.into(), b"done");
        Ok::<_, anyhow::Error>(resp)
    };
    tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .map_err(|_| anyhow::anyhow!("hub at {addr}: no answer in 2 s"))?
}

async fn status_at(c: &Cluster, addr: SocketAddr) -> anyhow::Result<HubStatus> {
    match ask_hub(c, addr, &HubRequest::Status).await? {
        HubResponse::Status(s) => Ok(s),
        other => anyhow::bail!("hub at {addr}: unexpected status answer {other:?}"),
    }
}

/// The leader's status, asked of the original three hubs directly.
async fn leader_status(c: &Cluster) -> Option<HubStatus> {
    for h in &c.hub_addrs {
        if let Ok(s) = status_at(c, h.client).await {
            if s.role == RaftRole::Leader {
                return Some(s);
            }
        }
    }
    None
}

/// Per-device record counts of `TENANT` on the hub at `addr`, read from
/// its own store.
async fn hub_devices(c: &Cluster, addr: SocketAddr) -> anyhow::Result<BTreeMap<String, u64>> {
    let req = HubRequest::ListDevices {
        tenant: Some(TENANT.into()),
    };
    match ask_hub(c, addr, &req).await? {
        HubResponse::Devices(ds) => Ok(ds.into_iter().map(|d| (d.device, d.records)).collect()),
        other => anyhow::bail!("hub at {addr}: unexpected devices answer {other:?}"),
    }
}

/// Waits until the replica at `addr` is a follower in a group of `members`
/// that has applied at least `min_applied` and stores exactly what the
/// leader stores; returns its status.
async fn wait_caught_up(
    c: &Cluster,
    addr: SocketAddr,
    members: usize,
    min_applied: u64,
) -> anyhow::Result<HubStatus> {
    let last = std::sync::Mutex::new(String::new());
    let r = wait_until("hub-4 caught up", Duration::from_secs(20), || async {
        let leader = leader_status(c).await?;
        let me = status_at(c, addr).await.ok()?;
        *last.lock().unwrap() = format!(
            "leader {} applied {} stored {}; hub-4 {:?} applied {} stored {} members {}",
            leader.id,
            leader.applied_index,
            leader.stored_records,
            me.role,
            me.applied_index,
            me.stored_records,
            me.replicas.len()
        );
        (me.role == RaftRole::Follower
            && me.replicas.len() == members
            && me.applied_index >= min_applied
            && me.stored_records == leader.stored_records)
            .then_some(me)
    })
    .await;
    r.with_context(|| format!("last seen: {}", last.lock().unwrap()))
}

/// A joining hub: its config names the running group as `peers`, with
/// `join = true`, so it starts empty and waits for the leader.
struct NewHub {
    proc: Proc,
    peer: SocketAddr,
    client: SocketAddr,
}

async fn start_joining_hub(c: &Cluster) -> anyhow::Result<NewHub> {
    let root = c.root();
    let name = format!("hub-{NEW_ID}");
    let tls = strata_net::Pki::ensure(&root.join("pki"))?.node(&name)?;
    let ports = free_udp_ports(2)?;
    let peer = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let client = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    let mut cfg = format!(
        "region = \"{}\"\nid = {NEW_ID}\njoin = true\ndata-dir = {:?}\npeer-listen = \"{peer}\"\nclient-listen = \"{client}\"\nmetrics-listen = \"127.0.0.1:0\"\ntls = {{ ca = {:?}, cert = {:?}, key = {:?} }}\n",
        c.opts.region,
        root.join(&name).display().to_string(),
        tls.ca.display().to_string(),
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    for h in &c.hub_addrs {
        cfg.push_str(&format!(
            "[[peers]]\nid = {}\npeer-addr = \"{}\"\nclient-addr = \"{}\"\n",
            h.id, h.peer, h.client
        ));
    }
    let cfg_path = root.join(format!("{name}.toml"));
    std::fs::write(&cfg_path, cfg)?;
    let proc = Proc::spawn(
        &name,
        "region-hub",
        &["--config".to_owned(), cfg_path.display().to_string()],
        &root.join(format!("{name}.log")),
    )
    .await?;
    Ok(NewHub { proc, peer, client })
}

fn count_in_log(p: &Proc, needle: &str) -> usize {
    std::fs::read_to_string(&p.log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_joins_catches_up_restarts_and_leaves_through_the_api() -> anyhow::Result<()> {
    let _g = serial().await;
    let seed = 21;
    let c = Cluster::start(ClusterOpts::default()).await?;
    let mut new_hub = None;
    let r = membership(&c, seed, &mut new_hub).await;
    if r.is_err() {
        if let Some(h) = &new_hub {
            eprintln!("----- {} -----\n{}", h.proc.name, h.proc.log_tail(80));
        }
    }
    c.finish(r)
}

async fn membership(c: &Cluster, seed: u64, slot: &mut Option<NewHub>) -> anyhow::Result<()> {
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", c.operator_token()?).parse()?,
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .default_headers(auth)
        .build()?;
    let base = format!(
        "http://{}",
        c.central
            .ready_field("http")
            .context("central http address")?
    );
    let replicas = format!("/api/v1/regions/{}/replicas", c.opts.region);
    let (post, delete) = (reqwest::Method::POST, reqwest::Method::DELETE);

    // 1. Data the new replica must get from a snapshot.
    ingest(c, "a", seed).await?;
    assert_exactly_once(c, &["a"], seed).await?;

    // 2. hub-4 starts empty and is added through central.
    let hub = slot.insert(start_joining_hub(c).await?);
    let (peer, client) = (hub.peer, hub.client);
    let before = leader_status(c).await.context("no leader")?;
    let body =
        json!({"id": NEW_ID, "peer-addr": peer.to_string(), "client-addr": client.to_string()})
            .to_string();
    let t = Instant::now();
    let added = send(&http, &base, post.clone(), &replicas, Some(&body)).await?;
    eprintln!(
        "hub-4 added (learner, caught up by snapshot, promoted) in {:?}",
        t.elapsed()
    );
    assert_eq!(added.0, 200, "add: {}", added.1);
    assert_eq!(added.1["region"], c.opts.region.as_str());
    assert_eq!(member_ids(&added.1), vec![1, 2, 3, NEW_ID], "{}", added.1);
    let me = added.1["replicas"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == NEW_ID))
        .cloned()
        .unwrap_or_default();
    assert_eq!(me["peer-addr"], peer.to_string());
    assert_eq!(me["client-addr"], client.to_string());
    assert_eq!(me["voter"], true);
    // It went through the learner stage: the leader promoted it.
    let leader = leader_status(c).await.context("no leader")?;
    let leader_metrics = scrape(&c.hub_metrics_addr(leader.id)?).await?;
    assert_eq!(
        metric_value(&leader_metrics, "strata_hub_learners_promoted_total"),
        Some(1.0),
        "hub {} promoted no learner",
        leader.id
    );

    // 3. It catches up: by snapshot (its log is empty), then by log.
    let s = wait_caught_up(c, client, 4, before.applied_index).await?;
    assert_eq!(s.stored_records, u64::from(DEVICES) * COUNT);
    let snapshots = count_in_log(&hub.proc, "installed snapshot");
    assert!(snapshots >= 1, "hub-4 caught up without a snapshot?");
    ingest(c, "b", seed + 1).await?;
    assert_exactly_once(c, &["a", "b"], seed).await?;
    let at = leader_status(c).await.context("no leader")?;
    wait_caught_up(c, client, 4, at.applied_index).await?;
    // Its own store, device by device.
    let mine = hub_devices(c, client).await?;
    assert_eq!(mine.len(), 2 * DEVICES as usize, "{mine:?}");
    assert!(mine.values().all(|n| *n == COUNT), "{mine:?}");
    // Central lists the new replica.
    let region_path = format!("/api/v1/regions/{}", c.opts.region);
    wait_until("central lists hub-4", Duration::from_secs(10), || async {
        let (st, body) = c.api.get(&region_path).await.ok()?;
        (st == 200 && region_ids(&body) == vec![1, 2, 3, NEW_ID]).then_some(())
    })
    .await?;

    // 4. SIGKILL hub-4, ingest without it (3 of 4 is a quorum), restart:
    //    it recovers from its own disk and catches up from the log.
    hub.proc.kill().await;
    ingest(c, "c", seed + 2).await?;
    hub.proc.start().await?;
    let at = leader_status(c).await.context("no leader")?;
    wait_caught_up(c, client, 4, at.applied_index).await?;
    assert_eq!(
        count_in_log(&hub.proc, "installed snapshot"),
        snapshots,
        "hub-4 needed a new snapshot after its restart instead of its disk and the log"
    );
    assert_exactly_once(c, &["a", "b", "c"], seed).await?;

    // 5. Bad requests are refused with clear errors, and change nothing.
    for (body, needle) in [
        (r#"{"id": 5, "peer-addr": "127.0.0.1:1""#.to_owned(), ""),
        (r#"{"id": "five"}"#.to_owned(), ""),
        (
            r#"{"id": 5, "peer-addr": "127.0.0.1:1"}"#.to_owned(),
            "client-addr",
        ),
        (
            r#"{"id": 0, "peer-addr": "127.0.0.1:1", "client-addr": "127.0.0.1:2"}"#.to_owned(),
            "`id`",
        ),
        (
            r#"{"id": 5, "peer-addr": "nowhere", "client-addr": "127.0.0.1:2"}"#.to_owned(),
            "peer-addr",
        ),
    ] {
        let got = send(&http, &base, post.clone(), &replicas, Some(&body)).await?;
        assert_error(&got, 400, "invalid-body", needle);
    }
    // A duplicate id with other addresses would re-address a live member.
    let dup = json!({"id": 2, "peer-addr": peer.to_string(), "client-addr": client.to_string()})
        .to_string();
    let got = send(&http, &base, post.clone(), &replicas, Some(&dup)).await?;
    assert_error(&got, 409, "replica-exists", "replica 2");
    for path in ["0", "two"] {
        let got = send(
            &http,
            &base,
            delete.clone(),
            &format!("{replicas}/{path}"),
            None,
        )
        .await?;
        assert_error(&got, 400, "invalid-parameter", "`id`");
    }
    let got = send(&http, &base, delete.clone(), &format!("{replicas}/9"), None).await?;
    assert_error(&got, 404, "unknown-replica", "replica 9");
    // The leader cannot remove itself.
    let leader = leader_status(c).await.context("no leader")?;
    let got = send(
        &http,
        &base,
        delete.clone(),
        &format!("{replicas}/{}", leader.id),
        None,
    )
    .await?;
    assert_error(
        &got,
        409,
        "replica-is-leader",
        &format!("replica {}", leader.id),
    );
    // The leader answers a change only after applying it: ask it.
    let s = leader_status(c).await.context("no leader")?;
    let ids: Vec<u64> = s.replicas.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        vec![1, 2, 3, NEW_ID],
        "a refused request changed the group"
    );
    let two = s.replicas.iter().find(|r| r.id == 2).context("member 2")?;
    assert_eq!(two.client_addr, c.hub_addrs[1].client.to_string());

    // 6. Remove hub-4: the group shrinks back to three and ingest goes on.
    let removed = send(&http, &base, delete, &format!("{replicas}/{NEW_ID}"), None).await?;
    assert_eq!(removed.0, 200, "remove: {}", removed.1);
    assert_eq!(member_ids(&removed.1), vec![1, 2, 3], "{}", removed.1);
    wait_until(
        "central lists three replicas",
        Duration::from_secs(10),
        || async {
            let (st, body) = c.api.get(&region_path).await.ok()?;
            (st == 200 && region_ids(&body) == vec![1, 2, 3]).then_some(())
        },
    )
    .await?;
    // Followers apply the removal a moment after the leader answers.
    for h in &c.hub_addrs {
        wait_until(
            &format!("hub {} to see three members", h.id),
            Duration::from_secs(10),
            || async {
                let s = status_at(c, h.client).await.ok()?;
                let ids: Vec<u64> = s.replicas.iter().map(|r| r.id).collect();
                (ids == vec![1, 2, 3]).then_some(())
            },
        )
        .await?;
    }
    assert!(hub.proc.terminate().await, "hub-4 did not stop cleanly");
    ingest(c, "d", seed + 3).await?;
    assert_exactly_once(c, &["a", "b", "c", "d"], seed).await
}

/// Raft ids of the reachable replicas in a region document.
fn region_ids(body: &Value) -> Vec<u64> {
    let region = body.get("region").filter(|r| r.is_object()).unwrap_or(body);
    region["replicas"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// Hubs give a new replica 3 s to answer and catch up (default 30 s).
const CATCH_UP: &str = "[membership]\ncatch-up-timeout = \"3s\"\n";

/// Voter ids and learner ids in a hub status.
fn voters_and_learners(s: &HubStatus) -> (Vec<u64>, Vec<u64>) {
    let ids = |voter: bool| {
        s.replicas
            .iter()
            .filter(|r| r.voter == voter)
            .map(|r| r.id)
            .collect()
    };
    (ids(true), ids(false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_at_an_unreachable_address_is_refused_and_the_region_keeps_three_voters(
) -> anyhow::Result<()> {
    let _g = serial().await;
    let c = Cluster::start(ClusterOpts {
        edges: 1,
        hub_extra: CATCH_UP.into(),
        ..ClusterOpts::default()
    })
    .await?;
    let r = unreachable_voter(&c).await;
    c.finish(r)
}

async fn unreachable_voter(c: &Cluster) -> anyhow::Result<()> {
    // Nothing listens at these ports: held, never read, so datagrams vanish.
    let silent: Vec<std::net::UdpSocket> = (0..2)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let peer = silent[0].local_addr()?.to_string();
    let client = silent[1].local_addr()?.to_string();
    let path = format!("/api/v1/regions/{}/replicas", c.opts.region);
    let body = json!({"id": 5, "peer-addr": peer, "client-addr": client}).to_string();
    let t = Instant::now();
    let (status, resp) = c
        .api
        .send_raw(
            reqwest::Method::POST,
            &path,
            Some("application/json"),
            &body,
        )
        .await?;
    eprintln!(
        "unreachable replica 5 refused after {:?}: {resp}",
        t.elapsed()
    );
    assert_error(
        &(status, resp.clone()),
        409,
        "replica-unreachable",
        "replica 5",
    );
    let msg = resp["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&peer) && msg.contains("never answered"),
        "{msg}"
    );

    // Exactly three voters and no learner, in the API and in a hub status.
    let region = format!("/api/v1/regions/{}", c.opts.region);
    let (st, view) = c.api.get(&region).await?;
    assert_eq!(st, 200, "{view}");
    let members: Vec<(u64, bool)> = view["members"]
        .as_array()
        .context("members")?
        .iter()
        .filter_map(|m| Some((m["id"].as_u64()?, m["voter"].as_bool()?)))
        .collect();
    assert_eq!(members, vec![(1, true), (2, true), (3, true)], "{view}");
    let leader = leader_status(c).await.context("no leader")?;
    assert_eq!(voters_and_learners(&leader), (vec![1, 2, 3], vec![]));
    assert_eq!(leader.peers.len(), 3, "{:?}", leader.peers);
    let metrics = scrape(&c.hub_metrics_addr(leader.id)?).await?;
    assert_eq!(
        metric_value(
            &metrics,
            "strata_hub_membership_refusals_total{reason=\"no_answer\"}"
        ),
        Some(1.0)
    );
    // The removal reaches the followers too, and the region is healthy.
    for h in &c.hub_addrs {
        wait_until(
            &format!("hub {} to drop the learner", h.id),
            Duration::from_secs(10),
            || async {
                let s = c.hub_status(h.id, Duration::from_secs(2)).await.ok()?;
                (voters_and_learners(&s) == (vec![1, 2, 3], vec![])).then_some(())
            },
        )
        .await?;
    }
    wait_until("region healthy", Duration::from_secs(10), || async {
        let (_, v) = c.api.get(&region).await.ok()?;
        (v["status"] == "healthy" && v["healthy"] == true).then_some(())
    })
    .await?;
    drop(silent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hub_makes_the_region_degraded_naming_it_until_it_is_back() -> anyhow::Result<()> {
    let _g = serial().await;
    let mut c = Cluster::start(ClusterOpts {
        edges: 1,
        ..ClusterOpts::default()
    })
    .await?;
    let r = killed_hub(&mut c).await;
    c.finish(r)
}

async fn killed_hub(c: &mut Cluster) -> anyhow::Result<()> {
    let region = format!("/api/v1/regions/{}", c.opts.region);
    wait_until("region healthy", Duration::from_secs(15), || async {
        let (_, v) = c.api.get(&region).await.ok()?;
        (v["status"] == "healthy").then_some(())
    })
    .await?;
    // A follower, so the leader's view covers it from the start.
    let leader = leader_status(c).await.context("no leader")?;
    let victim = c
        .hub_addrs
        .iter()
        .find(|h| h.id != leader.id)
        .copied()
        .context("a follower")?;
    let named = format!("replica {} ({})", victim.id, victim.client);
    let i = c.hub_index(victim.id);
    let t = Instant::now();
    c.hubs[i].kill().await;
    let problems = wait_until(
        "the region degraded, naming the killed hub",
        Duration::from_secs(15),
        || async {
            let (_, all) = c.api.get("/api/v1/regions").await.ok()?;
            let v = all["regions"].as_array()?.first()?.clone();
            // Named, with the leader's view (central's own may come first).
            let named_it = v["problems"].as_array()?.iter().any(|p| {
                p.as_str()
                    .is_some_and(|p| p.starts_with(&named) && p.contains("unreachable for"))
            });
            (v["status"] == "degraded" && v["healthy"] == false && named_it)
                .then(|| v["problems"].clone())
        },
    )
    .await?;
    eprintln!(
        "hub {} SIGKILLed: region degraded after {:?}: {problems}",
        victim.id,
        t.elapsed()
    );
    // The leader's own status says the same.
    let s = c.hub_status(leader.id, Duration::from_secs(2)).await?;
    let p = s
        .peers
        .iter()
        .find(|p| p.id == victim.id)
        .context("victim in the leader's view")?;
    assert!(p.voter && !p.reachable, "{p:?}");

    let t = Instant::now();
    c.hubs[i].start().await?;
    wait_until(
        "the region healthy again",
        Duration::from_secs(20),
        || async {
            let (_, v) = c.api.get(&region).await.ok()?;
            (v["status"] == "healthy" && v["healthy"] == true).then_some(())
        },
    )
    .await?;
    eprintln!(
        "hub {} restarted: region healthy again after {:?}",
        victim.id,
        t.elapsed()
    );
    Ok(())
}
