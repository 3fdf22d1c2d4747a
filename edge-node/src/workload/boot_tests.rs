//! Reboots of the workload host with the compiled-module disk cache: a
//! restarted edge starts its persisted instances from cached compiled
//! modules (nothing compiled), a bad cache file is discarded and the module
//! compiled again while the instance still starts, and (ignored, for the
//! numbers) how long a boot with many modules takes with and without the
//! cache.

use std::path::Path;
use std::time::{Duration, Instant};

use super::handle_tests::{
    assign, key, open, readings, running, sample_module, spec, test_cfg, wait, wait_spool, wat,
    COUNTER,
};
use super::metrics::ReasonLabel;
use super::*;

fn loads(host: &WorkloadHost, how: &str) -> u64 {
    host.metrics()
        .module_loads
        .get_or_create(&ReasonLabel {
            reason: how.to_owned(),
        })
        .get()
}

fn cache_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("monitors/cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_starts_instances_from_the_compiled_module_cache() {
    let dir = tempfile::tempdir().unwrap();
    let m = wat(COUNTER);
    let a = spec("acme", "a", &m, &["dev-*"], "{}");
    {
        let (spool, host) = open(dir.path(), test_cfg()).await;
        assign(&host, 1, vec![a.clone()], &[&m]).await;
        wait(&host, "a running", |h| running(h, "acme", "a")).await;
        assert_eq!((loads(&host, "compiled"), loads(&host, "disk")), (1, 0));
        host.route(&readings("acme", "dev-1", 1, None));
        wait(&host, "a batch", |h| {
            h.instance(&key("acme", "a"))
                .is_some_and(|i| i.records_in == 1)
        })
        .await;
        host.shutdown().await;
        spool.close().await;
    }
    assert_eq!(cache_files(dir.path()).len(), 1);

    // No hub: the instance runs again, loaded, not compiled, with its state.
    let (spool, host) = open(dir.path(), test_cfg()).await;
    wait(&host, "a running after reboot", |h| running(h, "acme", "a")).await;
    assert_eq!((loads(&host, "compiled"), loads(&host, "disk")), (0, 1));
    host.route(&readings("acme", "dev-1", 1, None));
    wait_spool(&spool, "a's second batch metric", |e| {
        e.iter().any(|x| {
            x.as_metric()
                .is_some_and(|m| m.monitor == "a" && m.value == 2.0)
        })
    })
    .await;
    host.shutdown().await;
    spool.close().await;

    // The cache file rots: discarded, compiled again, and the instance runs.
    let f = &cache_files(dir.path())[0];
    let mut b = std::fs::read(f).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0xff;
    strata_net::files::write_private(f, &b).unwrap();
    let (spool, host) = open(dir.path(), test_cfg()).await;
    wait(&host, "a running after a bad cache file", |h| {
        running(h, "acme", "a")
    })
    .await;
    assert_eq!((loads(&host, "discarded"), loads(&host, "disk")), (1, 0));
    host.shutdown().await;
    spool.close().await;
    // And the next boot loads the fresh file.
    let (spool, host) = open(dir.path(), test_cfg()).await;
    wait(&host, "a running", |h| running(h, "acme", "a")).await;
    assert_eq!(loads(&host, "disk"), 1);
    host.shutdown().await;
    spool.close().await;
}

/// Not a pass/fail test: boot time to "every instance running" with `N`
/// persisted modules, with and without compiled modules on disk. Run with
/// `cargo test -p edge-node --lib boot_measurement -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn boot_measurement() {
    let Some(base) = sample_module("zscore") else {
        return;
    };
    const N: usize = 20;
    // Distinct modules (so nothing is shared): the same code plus a custom
    // section naming it.
    let modules: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let mut m = base.clone();
            let name = format!("strata-boot-{i}");
            m.push(0);
            m.push((name.len() + 1) as u8);
            m.push(name.len() as u8);
            m.extend_from_slice(name.as_bytes());
            m
        })
        .collect();
    let specs: Vec<_> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| {
            spec(
                "acme",
                &format!("z{i}"),
                m,
                &["dev-*"],
                r#"{"metrics":["temperature"]}"#,
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_cfg();
    cfg.worker_threads = 0;
    cfg.memory_mib = 10_000;
    cfg.cpu_millicores = 100_000;
    {
        let (spool, host) = open(dir.path(), cfg.clone()).await;
        let refs: Vec<&[u8]> = modules.iter().map(Vec::as_slice).collect();
        assign(&host, 1, specs.clone(), &refs).await;
        wait_all(&host, N).await;
        host.shutdown().await;
        spool.close().await;
    }
    let mut out = Vec::new();
    for cached in [true, false, true] {
        if !cached {
            std::fs::remove_dir_all(dir.path().join("monitors/cache")).unwrap();
        }
        let t = Instant::now();
        let (spool, host) = open(dir.path(), cfg.clone()).await;
        wait_all(&host, N).await;
        let took = t.elapsed();
        out.push(format!(
            "{} {took:?} (disk {}, compiled {})",
            if cached { "cached" } else { "uncached" },
            loads(&host, "disk"),
            loads(&host, "compiled")
        ));
        host.shutdown().await;
        spool.close().await;
    }
    println!(
        "boot with {N} persisted modules of {} bytes to all running: {}",
        base.len(),
        out.join("; ")
    );
}

async fn wait_all(host: &WorkloadHost, n: usize) {
    let ok = host
        .wait_until(Duration::from_secs(300), |h| {
            let s = h.status();
            s.instances.len() == n && s.instances.iter().all(|i| i.state == "running")
        })
        .await;
    assert!(ok, "{:#?}", host.status());
}
