//! Data and keys are private on disk: after a run through the real
//! binaries (devices → 2 edges → 3 hubs), with every process stopped, every
//! file under each node's data directory and the PKI directory is 0600 and
//! every directory 0700.
//!
//! Checked, recursively, without following symlinks:
//! - `pki/`: the CA key and certificate, each node's key and certificate;
//! - `hub-1/`..`hub-3/`: the raft-engine log (files raft-engine creates
//!   itself, under the binaries' 0o077 umask), the telemetry store's chunk
//!   files and manifest;
//! - `edge-1/`, `edge-2/`: spool segments and meta, the monitor store;
//! - `central/`: central's data directory with its operator token.
//!
//! Not checked, because the test harness writes them, not Strata: the
//! cluster root (a temporary directory), each process's `<name>.toml` config
//! and `<name>.log` log. Anything else
//! found at the root fails the test, so nothing is skipped silently.

use std::path::PathBuf;
use std::time::Duration;

use strata_net::files::audit;
use strata_tests::fleet::{assert_exactly_once, run_fleet, Phase};
use strata_tests::{cluster::serial, wait_until, Cluster, ClusterOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_file_is_0600_and_every_directory_0700() -> anyhow::Result<()> {
    let _g = serial().await;
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let r = run_then_audit(&mut c).await;
    c.finish(r)
}

async fn run_then_audit(c: &mut Cluster) -> anyhow::Result<()> {
    let seed = 21;
    let phase = Phase::new("fm", 10, 50);
    run_fleet(phase.fleet(c.mqtt_addrs(), seed, 0.0)).await?;
    assert_exactly_once(c, &[phase], seed).await?;
    // The stores checkpoint every 2 s: wait until each hub wrote chunks, so
    // they are among the files checked.
    let root = c.root().to_owned();
    let hubs: Vec<PathBuf> = (1..=c.hubs.len())
        .map(|i| root.join(format!("hub-{i}")))
        .collect();
    let edges: Vec<PathBuf> = (1..=c.edges.len())
        .map(|i| root.join(format!("edge-{i}")))
        .collect();
    wait_until(
        "a chunk file on every hub",
        Duration::from_secs(30),
        || async {
            hubs.iter()
                .all(|h| {
                    std::fs::read_dir(h.join("store")).is_ok_and(|d| {
                        d.flatten()
                            .any(|e| e.file_name().to_string_lossy().ends_with(".chunk"))
                    })
                })
                .then_some(())
        },
    )
    .await?;
    // Stop everything cleanly, so no file appears or vanishes mid-walk.
    for p in c.edges.iter_mut().chain(c.hubs.iter_mut()) {
        anyhow::ensure!(p.terminate().await, "{} did not stop cleanly", p.name);
    }
    c.central.terminate().await;

    let data: Vec<PathBuf> = [root.join("pki"), root.join("central")]
        .into_iter()
        .chain(hubs)
        .chain(edges)
        .collect();
    // Nothing at the root escapes: it is a data directory or a harness file.
    for entry in std::fs::read_dir(&root)? {
        let path = entry?.path();
        let harness_file = path.extension().is_some_and(|e| e == "toml" || e == "log");
        anyhow::ensure!(
            harness_file || data.contains(&path),
            "unexpected {} in the cluster root: add it to the checked set",
            path.display()
        );
    }
    let mut wrong = Vec::new();
    for dir in &data {
        let a = audit(dir)?;
        println!(
            "{}: {} paths checked, {} not private",
            dir.display(),
            a.checked.len(),
            a.wrong.len()
        );
        wrong.extend(a.wrong);
    }
    anyhow::ensure!(
        wrong.is_empty(),
        "not 0600 files / 0700 directories: {:?}",
        wrong
            .iter()
            .map(|(p, m)| format!("{} {m:04o}", p.display()))
            .collect::<Vec<_>>()
    );
    Ok(())
}
