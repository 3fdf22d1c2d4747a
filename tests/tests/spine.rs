//! The telemetry spine under faults: devices → edges → 3 Raft hubs → API.
//! Every test checks the same end state: each device has exactly the
//! readings it sent, none missing, none doubled.

use std::time::{Duration, Instant};

use anyhow::Context;
use strata_tests::fleet::{assert_exactly_once, run_fleet, Phase};
use strata_tests::{cluster::serial, wait_until, Cluster, ClusterOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_two_edges_into_three_hubs() -> anyhow::Result<()> {
    let _g = serial().await;
    let seed = 11;
    let c = Cluster::start(ClusterOpts::default()).await?;
    let r = async {
        let phase = Phase::new("dev", 60, 100);
        run_fleet(phase.fleet(c.mqtt_addrs(), seed, 0.0)).await?;
        assert_exactly_once(&c, &[phase], seed).await
    }
    .await;
    c.finish(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_during_ingest_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let _g = serial().await;
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let r = leader_sigkill(&mut c, 12).await;
    c.finish(r)
}

async fn leader_sigkill(c: &mut Cluster, seed: u64) -> anyhow::Result<()> {
    let phase = Phase::new("dev", 40, 150);
    // ~30 readings/s per device: ingest lasts about 5 s.
    let sim = tokio::spawn(run_fleet(phase.fleet(c.mqtt_addrs(), seed, 30.0)));
    // Kill the leader once ingest is well under way.
    let region = c.opts.region.clone();
    wait_until("ingest under way", Duration::from_secs(30), || async {
        let (_, stored) = c.api.leader_stored(&region).await.ok()??;
        (stored > 500).then_some(())
    })
    .await?;
    let (leader, before) = c.leader_applied().await.context("leader")?;
    let killed_at = Instant::now();
    let idx = c.hub_index(leader);
    c.hubs[idx].kill().await;
    // Write gap, asked of the hubs directly: from the kill until a new
    // leader has stored more than the old one had.
    let new_leader = wait_until(
        "a new leader storing again",
        Duration::from_secs(30),
        || async {
            let (id, stored) = c.leader_applied().await?;
            (id != leader && stored > before).then_some(id)
        },
    )
    .await?;
    let gap = killed_at.elapsed();
    println!("write gap after SIGKILL of leader hub {leader}: {gap:?} (new leader {new_leader})");
    sim.await??;
    // The killed replica comes back and catches up; the answer is unchanged.
    c.hubs[idx].start().await?;
    assert_exactly_once(c, &[phase], seed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_sigkill_mid_stream_replays_its_spool() -> anyhow::Result<()> {
    let _g = serial().await;
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let r = edge_sigkill(&mut c, 13).await;
    c.finish(r)
}

async fn edge_sigkill(c: &mut Cluster, seed: u64) -> anyhow::Result<()> {
    let phase = Phase::new("dev", 40, 150);
    let sim = tokio::spawn(run_fleet(phase.fleet(c.mqtt_addrs(), seed, 30.0)));
    let region = c.opts.region.clone();
    wait_until("ingest under way", Duration::from_secs(30), || async {
        let (_, stored) = c.api.leader_stored(&region).await.ok()??;
        (stored > 400).then_some(())
    })
    .await?;
    c.edges[0].kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.edges[0].start().await?;
    let s = sim.await??;
    anyhow::ensure!(
        s.reconnects > 0,
        "devices of edge-1 should have reconnected: {s}"
    );
    assert_exactly_once(c, &[phase], seed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_outage_edges_spool_and_deliver_after() -> anyhow::Result<()> {
    let _g = serial().await;
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let r = hub_outage(&mut c, 14).await;
    c.finish(r)
}

async fn hub_outage(c: &mut Cluster, seed: u64) -> anyhow::Result<()> {
    for h in c.hubs.iter_mut() {
        h.kill().await;
    }
    let phase = Phase::new("dev", 40, 50);
    // Devices keep publishing and get PUBACKs from the edges' spools.
    run_fleet(phase.fleet(c.mqtt_addrs(), seed, 0.0)).await?;
    // Nothing can have been stored: no hub is up. Bring them back.
    for h in c.hubs.iter_mut() {
        h.start().await?;
    }
    c.wait_for_leader(Duration::from_secs(30)).await?;
    assert_exactly_once(c, &[phase], seed).await
}
