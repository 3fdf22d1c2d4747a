//! `strata up`, the README's first command: the whole cluster in one
//! process tree (two regions, `north` and `south`, each 3 hubs and 2
//! edges, and central), telemetry flowing through both regions, a clean
//! stop on Ctrl-C, and a restart that resumes from the data directory;
//! `--single-region` keeping the one-region layout.
#![allow(clippy::unwrap_used)] // a test: unwrapping is the assertion

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use strata_tests::cluster::{free_tcp_ports, free_udp_ports, read_token, serial};
use strata_tests::proc::bin_path;
use strata_tests::{wait_until, Api};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Ports `strata up` derives from its flags, all checked free.
struct Ports {
    http: u16,
    mqtt: u16,
    quic_base: u16,
}

/// Finds a layout where every port `strata up` will bind is free: HTTP,
/// four consecutive MQTT ports, and the hubs' QUIC/metrics ports of both
/// regions at `base+1..3`, `base+11..13` (peers), `base+101..103`,
/// `base+111..113` (clients), `base+201..203`, `base+211..213` (metrics)
/// and the edges' metrics at `base+301..304`. `--single-region` with up
/// to 3 edges binds a subset of these.
fn free_layout() -> Ports {
    for _ in 0..200 {
        let base = free_udp_ports(1).unwrap()[0]
            .saturating_sub(400)
            .max(20_000);
        let hubs = [1, 2, 3, 11, 12, 13];
        let udp: Vec<u16> = hubs
            .iter()
            .flat_map(|h| [base + h, base + 100 + h])
            .collect();
        let tcp: Vec<u16> = hubs
            .iter()
            .map(|h| base + 200 + h)
            .chain((301..=304).map(|o| base + o))
            .collect();
        let udp_free = udp
            .iter()
            .all(|p| std::net::UdpSocket::bind(("127.0.0.1", *p)).is_ok());
        let tcp_free = tcp
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
        let mqtt = free_tcp_ports(1).unwrap()[0];
        let mqtt_free = (1..4)
            .all(|i| std::net::TcpListener::bind(("127.0.0.1", mqtt.saturating_add(i))).is_ok());
        if udp_free && tcp_free && mqtt_free {
            return Ports {
                http: free_tcp_ports(1).unwrap()[0],
                mqtt,
                quic_base: base,
            };
        }
    }
    panic!("no free port layout found");
}

/// Where run `n`'s stderr (its tracing log) goes.
fn log_path(dir: &std::path::Path, n: u32) -> std::path::PathBuf {
    dir.join(format!("up-{n}.log"))
}

/// The last `lines` lines of a run's log, for a failure message: its
/// stderr, and the log file `strata up` writes unless `--verbose`.
fn log_tail(dir: &std::path::Path, data: &std::path::Path, n: u32, lines: usize) -> String {
    let mut text = std::fs::read_to_string(log_path(dir, n)).unwrap_or_default();
    text.push_str(&std::fs::read_to_string(data.join("logs/strata.log")).unwrap_or_default());
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits for a clean exit after SIGINT, or fails with the log's tail.
async fn stop(child: &mut Child, logs: &std::path::Path, data: &std::path::Path, n: u32) {
    interrupt(child);
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(exit) => {
            let exit = exit.unwrap();
            assert!(
                exit.success(),
                "strata up run {n} exited with {exit}; log tail:\n{}",
                log_tail(logs, data, n, 60)
            );
        }
        Err(_) => panic!(
            "strata up run {n} did not stop within 30 s of SIGINT; log tail:\n{}",
            log_tail(logs, data, n, 80)
        ),
    }
}

/// `strata up`'s stdout lines after its banner, as they come.
type Said = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

async fn up_with(
    dir: &std::path::Path,
    p: &Ports,
    log: std::path::PathBuf,
    extra: &[&str],
) -> (Child, Said) {
    let log = std::fs::File::create(log).unwrap();
    let mut child = Command::new(bin_path("strata").unwrap())
        .args([
            "up",
            "--data-dir",
            &dir.display().to_string(),
            "--devices",
            "50",
            "--rate",
            "5",
            "--http",
            &format!("127.0.0.1:{}", p.http),
            "--mqtt-port",
            &p.mqtt.to_string(),
            "--quic-base",
            &p.quic_base.to_string(),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.starts_with("Strata is up") {
                return;
            }
        }
        panic!("strata up exited before it was up");
    })
    .await
    .expect("strata up within 30 s");
    let said = Said::default();
    let keep = said.clone();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            keep.lock().unwrap_or_else(|p| p.into_inner()).push(l);
        }
    });
    (child, said)
}

/// The liveness state central reports for `edge`.
async fn edge_state(api: &Api, edge: &str) -> Option<String> {
    let (status, body) = api.get("/api/v1/edges").await.ok()?;
    if status != 200 {
        return None;
    }
    body["edges"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == edge)
        .and_then(|e| e["liveness"]["state"].as_str().map(str::to_owned))
}

#[allow(unsafe_code)]
fn interrupt(child: &Child) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGINT);
    }
}

async fn stored(api: &Api) -> Option<u64> {
    let counts = api.device_counts("demo").await.ok()?;
    Some(counts.values().sum())
}

/// Demo devices per region as central lists them: (devices, records),
/// checking that each device's name says its region.
async fn by_region(api: &Api) -> Option<std::collections::BTreeMap<String, (u64, u64)>> {
    let (status, body) = api.get("/api/v1/devices?tenant=demo").await.ok()?;
    if status != 200 {
        return None;
    }
    let mut out = std::collections::BTreeMap::<String, (u64, u64)>::new();
    for d in body["devices"].as_array()? {
        let region = d["region"].as_str()?;
        let device = d["device"].as_str()?;
        if device != "my-sensor" {
            assert!(
                device.starts_with(&format!("dev-{region}-")),
                "{device} reported through region {region}"
            );
        }
        let e = out.entry(region.to_owned()).or_default();
        e.0 += 1;
        e.1 += d["records"].as_u64().unwrap_or(0);
    }
    Some(out)
}

/// The regions central reports healthy.
async fn healthy_regions(api: &Api) -> Option<Vec<String>> {
    let (status, body) = api.get("/api/v1/regions").await.ok()?;
    (status == 200).then_some(())?;
    Some(
        body["regions"]
            .as_array()?
            .iter()
            .filter(|r| r["status"] == "healthy")
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// (region, edge) of every edge central reports up.
async fn edges_up(api: &Api) -> Option<Vec<(String, String)>> {
    let (status, body) = api.get("/api/v1/edges").await.ok()?;
    (status == 200).then_some(())?;
    Some(
        body["edges"]
            .as_array()?
            .iter()
            .filter(|e| e["liveness"]["state"] == "up")
            .filter_map(|e| {
                Some((
                    e["region"].as_str()?.to_owned(),
                    e["name"].as_str()?.to_owned(),
                ))
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_the_whole_cluster_stops_cleanly_and_resumes() {
    let _g = serial().await;
    let tmp = tempfile::tempdir().unwrap();
    // A directory `strata up` creates: an existing one others can enter
    // (a tempdir under a 022 umask) is refused.
    let data = tmp.path().join("strata-data");
    let logs = tempfile::tempdir().unwrap();
    let ports = free_layout();

    let started = std::time::Instant::now();
    let (mut child, said) = up_with(&data, &ports, log_path(logs.path(), 1), &[]).await;
    println!(
        "two regions, 6 hubs, 4 edges and central up in {:?}",
        started.elapsed()
    );
    // `strata up` made central's token in <data-dir>/central, private.
    let central_dir = data.join("central");
    let token_file = central_dir.join("operator.token");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&central_dir), mode(&token_file)), (0o700, 0o600));
    let api = Api::new(&format!("127.0.0.1:{}", ports.http))
        .with_token(&read_token(&token_file).unwrap());
    let first = wait_until(
        "simulated telemetry stored",
        Duration::from_secs(60),
        || async { stored(&api).await.filter(|n| *n >= 500) },
    )
    .await
    .unwrap();
    // Two regions, both healthy, each with its two edges up and its half
    // of the fleet's devices storing telemetry.
    wait_until(
        "north and south healthy",
        Duration::from_secs(30),
        || async {
            let healthy = healthy_regions(&api).await?;
            (healthy == ["north", "south"]).then_some(())
        },
    )
    .await
    .unwrap();
    let up = wait_until("4 edges up", Duration::from_secs(30), || async {
        let mut up = edges_up(&api).await?;
        up.sort();
        (up.len() == 4).then_some(up)
    })
    .await
    .unwrap();
    let pair = |r: &str, e: &str| (r.to_owned(), e.to_owned());
    assert_eq!(
        up,
        [
            pair("north", "edge-1"),
            pair("north", "edge-2"),
            pair("south", "edge-3"),
            pair("south", "edge-4"),
        ]
    );
    let regions = wait_until(
        "telemetry from both regions' devices",
        Duration::from_secs(60),
        || async {
            let r = by_region(&api).await?;
            // 50 devices split 2:1 (north 33, south 17): device locality
            // differs by region.
            (r.get("north").is_some_and(|(d, n)| *d == 33 && *n > 0)
                && r.get("south").is_some_and(|(d, n)| *d == 17 && *n > 0))
            .then_some(r)
        },
    )
    .await
    .unwrap();
    println!("demo devices and records per region: {regions:?}");
    // Quiet by default: after the banner, only the live summary line (a
    // new one every 15 s when stdout is not a terminal); the logs go to
    // files under the data dir.
    let summary = wait_until("the live summary line", Duration::from_secs(40), || async {
        let said = said.lock().unwrap_or_else(|p| p.into_inner());
        said.iter()
            .rev()
            .find(|l| l.starts_with("ingest ") && l.contains("edges 4/4 up"))
            .cloned()
    })
    .await
    .unwrap();
    println!("summary: {summary}");
    let log = std::fs::read_to_string(data.join("logs/strata.log")).unwrap();
    assert!(log.contains("INFO"), "strata.log has no log lines");
    assert!(
        std::fs::metadata(data.join("logs/edge-1.log"))
            .unwrap()
            .len()
            > 0
    );
    assert!(
        !std::fs::read_to_string(log_path(logs.path(), 1))
            .unwrap()
            .contains(" INFO "),
        "logs on stderr without --verbose"
    );
    let banner = said.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
    for shown in [
        "edge-3 (zone a)",
        "edge-4 (zone b)",
        "--region north --follow",
        "again with --region south",
        "dev-north-0?step=10000",
    ] {
        assert!(
            banner.contains(shown),
            "{shown:?} not in the banner:\n{banner}"
        );
    }
    stop(&mut child, logs.path(), &data, 1).await;
    assert!(data.join("pki/ca.pem").exists());
    // Everything `strata up` wrote (every tier's data, the PKI) is 0600 in
    // 0700 directories.
    let audit = strata_net::files::audit(&data).unwrap();
    println!("{}: {} paths checked", data.display(), audit.checked.len());
    assert_eq!(audit.wrong, vec![], "not private");

    // Same data dir: the stored readings are still there, and more arrive.
    let (mut child, said) = up_with(
        &data,
        &ports,
        log_path(logs.path(), 2),
        &["--restart-edges-after", "5s"],
    )
    .await;
    let after = wait_until(
        "resumed and storing more",
        Duration::from_secs(60),
        || async { stored(&api).await.filter(|n| *n > first) },
    )
    .await
    .unwrap();
    assert!(after > first);
    wait_until(
        "both regions storing more after the restart",
        Duration::from_secs(60),
        || async {
            let now = by_region(&api).await?;
            now.iter()
                .all(|(r, (_, records))| regions.get(r).is_some_and(|(_, before)| records > before))
                .then_some(())
        },
    )
    .await
    .unwrap();

    // Each edge is its own process: `kill -9` one, as the banner suggests.
    // The region marks it down, `up` keeps running and restarts it. First
    // the new leader must have decided the edge is up (`renewing-leases`
    // is true only then): before that, `up` at the API may be the last
    // run's replicated decision, and an edge the leader has not heard from
    // is not declared down within its leader grace (5 s), while `up`
    // restarts it after 5 s, so the down could be missed.
    wait_until(
        "the new leader has edge-2 up",
        Duration::from_secs(30),
        || async {
            let (status, body) = api.get("/api/v1/edges").await.ok()?;
            (status == 200
                && body["edges"]
                    .as_array()?
                    .iter()
                    .any(|e| e["name"] == "edge-2" && e["renewing-leases"] == true))
            .then_some(())
        },
    )
    .await
    .unwrap();
    let pid: i32 = std::fs::read_to_string(data.join("edge-2/edge.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill9(pid);
    let killed = std::time::Instant::now();
    wait_until(
        "edge-2 down at the API",
        Duration::from_secs(10),
        || async { (edge_state(&api, "edge-2").await.as_deref() == Some("down")).then_some(()) },
    )
    .await
    .unwrap();
    println!(
        "edge-2 down at the API {:?} after kill -9",
        killed.elapsed()
    );
    wait_until(
        "edge-2 restarted and up",
        Duration::from_secs(30),
        || async { (edge_state(&api, "edge-2").await.as_deref() == Some("up")).then_some(()) },
    )
    .await
    .unwrap();
    let told = wait_until(
        "up to say it restarted edge-2",
        Duration::from_secs(10),
        || async {
            let said = said.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
            (said.contains("edge-2 exited (killed by SIGKILL)") && said.contains("edge-2 is back"))
                .then_some(())
        },
    )
    .await;
    assert!(
        told.is_ok(),
        "strata up said:\n{}",
        said.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "strata up died with its edge"
    );
    stop(&mut child, logs.path(), &data, 2).await;
}

/// `--single-region` keeps the layout `strata up` had before two regions:
/// one region `local`, devices `dev-<n>`, hubs in `<data-dir>/hub-i`; and
/// the two-region default refuses to start over such a data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_region_keeps_the_old_layout() {
    let _g = serial().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("strata-data");
    let logs = tempfile::tempdir().unwrap();
    let ports = free_layout();
    let (mut child, _) = up_with(
        &data,
        &ports,
        log_path(logs.path(), 1),
        &["--single-region", "--hubs", "1", "--edges", "2"],
    )
    .await;
    let api = Api::new(&format!("127.0.0.1:{}", ports.http))
        .with_token(&read_token(&data.join("central/operator.token")).unwrap());
    wait_until("local healthy", Duration::from_secs(30), || async {
        (healthy_regions(&api).await? == ["local"]).then_some(())
    })
    .await
    .unwrap();
    wait_until("2 edges up", Duration::from_secs(30), || async {
        (edges_up(&api).await?.len() == 2).then_some(())
    })
    .await
    .unwrap();
    wait_until(
        "telemetry from dev-0..49",
        Duration::from_secs(60),
        || async {
            let counts = api.device_counts("demo").await.ok()?;
            (counts.len() == 50
                && counts
                    .iter()
                    .all(|(d, n)| d.starts_with("dev-") && d[4..].parse::<u32>().is_ok() && *n > 0))
            .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(data.join("hub-1").is_dir() && !data.join("north").exists());
    stop(&mut child, logs.path(), &data, 1).await;

    let refused = Command::new(bin_path("strata").unwrap())
        .args(["up", "--data-dir", &data.display().to_string()])
        .env("RUST_BACKTRACE", "0")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(err.contains("strata up --single-region"), "{err}");
}

#[allow(unsafe_code)]
fn kill9(pid: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}
