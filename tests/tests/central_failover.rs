//! Central as a replicated service, with real processes: three replicas,
//! a client writing tenants through every replica (retrying on another one
//! when a call fails, as a client of a replicated API does), the leader
//! SIGKILLed in the middle of the writes. Every acknowledged write must be
//! on every surviving replica (linearizable reads) and on the killed one
//! after it restarts; stale reads keep answering while there is no leader;
//! writes resume once the survivors elected a new leader.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use strata_tests::central_group::CentralGroup;
use strata_tests::cluster::serial;
use strata_tests::wait_until;

/// Raft tick of the replicas: elections within 0.5–1 s.
const TICK_MS: u64 = 50;

/// Writes `name` through replica `start`, then the next ones, until one
/// acknowledges it; returns when it was acknowledged.
async fn write(g: &CentralGroup, start: usize, name: &str, alive: &[bool]) -> Option<Instant> {
    for k in 0..g.replicas.len() {
        let i = (start + k) % g.replicas.len();
        if !alive[i] {
            continue;
        }
        let api = g.api(i).ok()?;
        if let Ok((200, _)) = api
            .put_json(&format!("/api/v1/tenants/{name}"), &json!({}))
            .await
        {
            return Some(Instant::now());
        }
    }
    None
}

async fn tenants(g: &CentralGroup, i: usize, stale: bool) -> anyhow::Result<Vec<String>> {
    let path = if stale {
        "/api/v1/tenants?stale=true"
    } else {
        "/api/v1/tenants"
    };
    let (s, v) = g.api(i)?.get(path).await?;
    anyhow::ensure!(s == 200, "replica {} answered {s}: {v}", i + 1);
    Ok(v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_central_leader_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut g = CentralGroup::start(3, TICK_MS).await?;
    let t0 = Instant::now();
    let leader = loop {
        if let Some(l) = g.leader().await {
            break l;
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(20), "no central leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut alive = vec![true; 3];
    let mut acked: Vec<String> = Vec::new();
    let mut last_ack = Instant::now();
    let mut longest_gap = Duration::ZERO;
    for n in 0..120 {
        if n == 40 {
            // SIGKILL the leader mid-stream: no shutdown code runs.
            g.replicas[leader].kill().await;
            alive[leader] = false;
            // With no leader, stale reads still answer at once.
            let survivor = (leader + 1) % 3;
            let t0 = Instant::now();
            let seen = tenants(&g, survivor, true).await?;
            assert!(t0.elapsed() < Duration::from_secs(1));
            assert!(seen.len() >= acked.len().saturating_sub(1));
        }
        let name = format!("w{n:03}");
        // A client that retries until some replica acknowledges.
        let mut done = None;
        for _ in 0..40 {
            done = write(&g, n % 3, &name, &alive).await;
            if done.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let at = done.unwrap_or_else(|| panic!("write {name} never acknowledged"));
        longest_gap = longest_gap.max(at - last_ack);
        last_ack = at;
        acked.push(name);
    }
    eprintln!("longest gap between acknowledged writes: {longest_gap:?}");
    // Writes resumed within a few election timeouts of the kill.
    assert!(longest_gap < Duration::from_secs(5), "{longest_gap:?}");
    // Every acknowledged write is on every survivor, linearizably read.
    for i in (0..3).filter(|i| alive[*i]) {
        let seen = tenants(&g, i, false).await?;
        for name in &acked {
            assert!(seen.contains(name), "replica {} lost {name}", i + 1);
        }
    }
    // The killed replica restarts from its disk and catches up.
    g.replicas[leader].start().await?;
    alive[leader] = true;
    let expected = acked.clone();
    wait_until(
        "the restarted replica to hold every write",
        Duration::from_secs(20),
        || async {
            let seen = tenants(&g, leader, false).await.unwrap_or_default();
            expected.iter().all(|n| seen.contains(n)).then_some(())
        },
    )
    .await?;
    for r in &mut g.replicas {
        assert!(r.terminate().await, "{} did not stop cleanly", r.name);
    }
    Ok(())
}

/// Central's write latency (through the leader and through a follower,
/// which forwards) and its failover gap over repeated leader SIGKILLs.
/// A measurement, not a check: run with
/// `cargo test -p strata-tests --test central_failover central_write_latency -- --ignored --nocapture`
/// and record the printed numbers in BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn central_write_latency_and_failover_gap() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut g = CentralGroup::start(3, 100).await?;
    let mut leader = loop {
        if let Some(l) = g.leader().await {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let alive = vec![true; 3];
    for (label, via) in [("leader", leader), ("follower", (leader + 1) % 3)] {
        let api = g.api(via)?;
        let mut lat: Vec<u64> = Vec::new();
        for n in 0..300 {
            let t0 = Instant::now();
            let (s, v) = api
                .put_json(&format!("/api/v1/tenants/{label}-{n}"), &json!({}))
                .await?;
            anyhow::ensure!(s == 200, "{s} {v}");
            lat.push(t0.elapsed().as_micros() as u64);
        }
        lat.sort_unstable();
        let (p50, p99) = strata_tests::percentiles(&lat);
        println!("write via {label}: p50 {p50} µs, p99 {p99} µs (300 writes)");
    }
    let mut gaps = Vec::new();
    let mut alive = alive;
    for round in 0..5 {
        g.replicas[leader].kill().await;
        alive[leader] = false;
        let t0 = Instant::now();
        let name = format!("gap-{round}");
        loop {
            if write(&g, (leader + 1) % 3, &name, &alive).await.is_some() {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "no write after kill"
            );
        }
        gaps.push(t0.elapsed().as_millis() as u64);
        g.replicas[leader].start().await?;
        alive[leader] = true;
        tokio::time::sleep(Duration::from_secs(2)).await;
        leader = loop {
            if let Some(l) = g.leader().await {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
    }
    gaps.sort_unstable();
    println!(
        "failover gap (SIGKILL of the leader to the next acknowledged write, 100 ms ticks, \
         10-tick election timeout): {gaps:?} ms"
    );
    for r in &mut g.replicas {
        r.terminate().await;
    }
    Ok(())
}
