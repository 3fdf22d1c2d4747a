//! `strata up`'s banner: what runs where, how to log in, and commands to
//! try against exactly this cluster (its regions, ports and data dir).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::device_cli::DemoLogin;
use crate::up::{FleetShare, LocalRegion, UpOptions};

/// Everything the banner tells.
pub struct Banner<'a> {
    /// The flags `up` runs with.
    pub o: &'a UpOptions,
    /// The running regions, in order.
    pub regions: &'a [LocalRegion],
    /// Central's HTTP address.
    pub api: SocketAddr,
    /// Central's operator token file.
    pub token_file: PathBuf,
    /// The simulated fleet's login.
    pub demo: &'a DemoLogin,
    /// The simulated fleet, per region.
    pub fleets: &'a [FleetShare],
    /// How long the start took.
    pub took: Duration,
    /// How to name the `strata` CLI.
    pub cli: String,
}

/// Prints the banner to stdout.
pub fn print(b: &Banner<'_>) {
    print!("{}", text(b));
}

/// `addrs` as `host:first-last` when they are consecutive ports of one
/// host, else listed.
fn port_range(addrs: &[SocketAddr]) -> String {
    let consecutive = addrs
        .windows(2)
        .all(|w| w[0].ip() == w[1].ip() && u32::from(w[0].port()) + 1 == u32::from(w[1].port()));
    match (addrs.first(), addrs.last()) {
        (Some(a), Some(z)) if consecutive && addrs.len() > 1 => {
            format!("{}-{}", a, z.port())
        }
        _ => addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// `"north" and "south"`, `"a", "b" and "c"`.
fn names(regions: &[LocalRegion]) -> String {
    let quoted: Vec<String> = regions.iter().map(|r| format!("{:?}", r.name)).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// The banner's text, every line ending in a newline.
pub fn text(b: &Banner<'_>) -> String {
    let (o, api, cli) = (b.o, b.api, &b.cli);
    let mut t = String::new();
    let took = format!("{:.1} s", b.took.as_secs_f64());
    let edges = o.edges_per_region();
    let first = b.regions.first().map_or("local", |r| r.name.as_str());
    if b.regions.len() == 1 {
        let _ = writeln!(
            t,
            "Strata is up ({} hubs in region {first:?}, {edges} edges; started in {took}).",
            o.hubs
        );
    } else {
        let _ = writeln!(
            t,
            "Strata is up (regions {}, {} hubs and {edges} edges each, central federating them; started in {took}).",
            names(b.regions),
            o.hubs
        );
    }
    let _ = writeln!(
        t,
        "  Console  : http://{api}/   (log in with the API token below; `strata status` for the same at a glance)"
    );
    let _ = writeln!(
        t,
        "  HTTP API : http://{api}/api/v1/regions   (reference at /api/v1/docs, metrics at /metrics)"
    );
    let _ = writeln!(
        t,
        "  API token: {}   (send it as `Authorization: Bearer <token>`; `strata` reads it there)",
        b.token_file.display()
    );
    for r in b.regions {
        let clients: Vec<SocketAddr> = r.hubs.iter().map(|(_, c)| *c).collect();
        let peers: Vec<SocketAddr> = r.hubs.iter().map(|(p, _)| *p).collect();
        let hub_dir = if b.regions.len() == 1 {
            o.data_dir.clone()
        } else {
            o.data_dir.join(&r.name)
        };
        let _ = writeln!(
            t,
            "  {:<9}: {} hubs on QUIC {} (Raft peers {}), data in {}",
            r.name,
            r.hubs.len(),
            port_range(&clients),
            port_range(&peers),
            hub_dir.join("hub-N").display()
        );
        let edges: Vec<String> = r
            .edges
            .iter()
            .map(|e| format!("{} (zone {}) MQTT {}", e.name, e.zone, e.mqtt))
            .collect();
        let _ = writeln!(t, "             {}", edges.join(", "));
    }
    let mqtt: Vec<SocketAddr> = b
        .regions
        .iter()
        .flat_map(|r| r.edges.iter().map(|e| e.mqtt))
        .collect();
    let _ = writeln!(
        t,
        "  MQTT     : {}   (topic strata/<tenant>/<device>/telemetry)",
        port_range(&mqtt)
    );
    let _ = writeln!(t, "  Data     : {}", o.data_dir.display());
    // The CLI finds central and its token by itself at `strata up`'s
    // defaults: name ours when they differ.
    let mut flags = String::new();
    if api != SocketAddr::from(([127, 0, 0, 1], 8080)) {
        let _ = write!(flags, " --api {api}");
    }
    if o.data_dir != Path::new("strata-data") {
        let _ = write!(flags, " --data-dir {}", o.data_dir.display());
    }
    let _ = writeln!(
        t,
        "  Edges    : one process each (data, config and pid in {}); watch them with\n             {cli} edges{flags}   and   {cli} events{flags} --region {first} --follow",
        o.data_dir.join("edge-N").display()
    );
    let kill = b
        .regions
        .iter()
        .flat_map(|r| r.edges.iter().map(move |e| (r, e)))
        .nth(1);
    if let Some((region, edge)) = kill {
        let restart = if o.restart_edges_after.is_zero() {
            "it stays down (--restart-edges-after 0s)".to_owned()
        } else {
            format!(
                "`up` restarts it after {}",
                humantime::format_duration(o.restart_edges_after)
            )
        };
        let _ = writeln!(
            t,
            "             see healing: kill -9 $(cat {})   (region {}'s {} is marked down within a second; {restart})",
            crate::edge_proc::pid_file(&o.data_dir, &edge.name).display(),
            region.name,
            edge.name
        );
    }
    let first_mqtt = b
        .regions
        .first()
        .and_then(|r| r.edges.first())
        .map(|e| e.mqtt);
    let (host, port) = first_mqtt.map_or(("127.0.0.1".to_owned(), o.mqtt_port), |a| {
        (a.ip().to_string(), a.port())
    });
    let (user, pass) = (&b.demo.username, &b.demo.password);
    let _ = writeln!(
        t,
        "  Login    : MQTT username {user} password {pass}   (tenant \"demo\", every device, on every edge)"
    );
    let _ = writeln!(
        t,
        "             stored hashed in {f}; more: {cli} device add --file {f} --username <name> --tenant <tenant> --devices '<glob>'",
        f = b.demo.file.display()
    );
    let _ = writeln!(
        t,
        "             mosquitto_pub -h {host} -p {port} -u {user} -P {pass} -t strata/demo/my-sensor/telemetry -m \"{{\\\"ts\\\":$(date +%s%3N),\\\"metrics\\\":{{\\\"temperature\\\":21.5}}}}\""
    );
    let bearer = format!(
        "-H \"Authorization: Bearer $(cat {})\"",
        b.token_file.display()
    );
    if let Some(share) = b.fleets.first() {
        let spread = if b.fleets.len() == 1 {
            String::new()
        } else {
            let parts: Vec<String> = b
                .fleets
                .iter()
                .map(|f| {
                    format!(
                        "{} {}-<n> through {}'s edges",
                        f.devices, f.prefix, f.region
                    )
                })
                .collect();
            format!(": {}", parts.join(", "))
        };
        let _ = writeln!(
            t,
            "  Devices  : {} simulated (tenant \"demo\"), {} reading/s each{spread}; try\n             curl {bearer} 'http://{api}/api/v1/telemetry/demo/{}-0?step=10000'",
            o.devices, o.rate, share.prefix
        );
        if let Some(other) = b.fleets.get(1) {
            let _ = writeln!(
                t,
                "             curl {bearer} 'http://{api}/api/v1/devices?tenant=demo&region={}'",
                other.region
            );
        }
        let again = if b.regions.len() > 1 {
            let others: Vec<&str> = b.regions[1..].iter().map(|r| r.name.as_str()).collect();
            format!(
                "\n             (a monitor runs in the region it is submitted to: submit it again with --region {} for its edges)",
                others.join(", then ")
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "  Monitors : temperature spikes hit 0.5% of devices at readings 120, 300 and 600; catch them on every edge\n             that carries devices with one instance each (they follow the devices when an edge dies):\n             ./monitors/build.sh && {cli} monitor submit{flags} --region {first} \\\n               --module target/monitors/wasm/zscore.wasm docs/monitors/zscore-per-edge.toml{again}\n             {cli} monitor inspect{flags} {first} demo temperature-anomaly-per-edge   (where each runs, and why)\n             {cli} alerts{flags} --tenant demo\n             docs/monitors/threshold-replace.toml: 2 instances in 2 zones, replaced 2 s after their edge is lost"
        );
        if b.regions.len() > 1 {
            let _ = writeln!(
                t,
                "  Global   : one workload over every region, split where the devices report (2:1 here):\n             {cli} workload submit{flags} --module target/monitors/wasm/threshold.wasm docs/monitors/global-threshold.toml\n             {cli} workloads{flags}   {cli} regions{flags}   {cli} workload inspect{flags} demo overheat-global"
            );
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::up::LocalEdge;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        up: UpOptions,
    }

    fn options(args: &[&str]) -> UpOptions {
        let o = Args::try_parse_from(std::iter::once("up").chain(args.iter().copied()))
            .unwrap()
            .up;
        o.check().unwrap();
        o
    }

    fn localhost(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The regions `o` would run, with `up`'s default ports.
    fn running(o: &UpOptions) -> Vec<LocalRegion> {
        let mut n = 0;
        (0u16..)
            .zip(o.regions())
            .map(|(r, plan)| LocalRegion {
                name: plan.name,
                hubs: (1..=plan.hubs as u16)
                    .map(|i| (localhost(7100 + 10 * r + i), localhost(7200 + 10 * r + i)))
                    .collect(),
                edges: (1..=plan.edges)
                    .map(|i| {
                        n += 1;
                        LocalEdge {
                            name: format!("edge-{n}"),
                            zone: crate::up::edge_zone(i),
                            mqtt: localhost(1882 + n),
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    fn banner_of(args: &[&str]) -> String {
        let o = options(args);
        let regions = running(&o);
        let fleets = crate::up::fleet_shares(o.devices, &regions);
        let demo = DemoLogin {
            username: "demo-fleet".into(),
            password: "pw".into(),
            file: o.data_dir.join("devices.toml"),
        };
        text(&Banner {
            o: &o,
            regions: &regions,
            api: o.http,
            token_file: o.data_dir.join("central/operator.token"),
            demo: &demo,
            fleets: &fleets,
            took: Duration::from_millis(4200),
            cli: "strata".into(),
        })
    }

    #[test]
    fn the_default_banner_shows_both_regions_and_true_commands() {
        let t = banner_of(&[]);
        assert!(t.starts_with(
            "Strata is up (regions \"north\" and \"south\", 3 hubs and 2 edges each, central federating them; started in 4.2 s)."
        ), "{t}");
        assert!(t.contains("  north    : 3 hubs on QUIC 127.0.0.1:7201-7203 (Raft peers 127.0.0.1:7101-7103), data in strata-data/north/hub-N"), "{t}");
        assert!(t.contains("  south    : 3 hubs on QUIC 127.0.0.1:7211-7213 (Raft peers 127.0.0.1:7111-7113), data in strata-data/south/hub-N"), "{t}");
        assert!(
            t.contains(
                "edge-1 (zone a) MQTT 127.0.0.1:1883, edge-2 (zone b) MQTT 127.0.0.1:1884\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "edge-3 (zone a) MQTT 127.0.0.1:1885, edge-4 (zone b) MQTT 127.0.0.1:1886\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("kill -9 $(cat strata-data/edge-2/edge.pid)   (region north's edge-2"),
            "{t}"
        );
        assert!(t.contains("  Console  : http://127.0.0.1:8080/"), "{t}");
        assert!(t.contains("strata events --region north --follow"), "{t}");
        assert!(
            t.contains(
                "666 dev-north-<n> through north's edges, 334 dev-south-<n> through south's edges"
            ),
            "{t}"
        );
        assert!(
            t.contains("/api/v1/telemetry/demo/dev-north-0?step=10000"),
            "{t}"
        );
        assert!(
            t.contains("/api/v1/devices?tenant=demo&region=south"),
            "{t}"
        );
        assert!(t.contains("monitor submit --region north"), "{t}");
        assert!(t.contains("again with --region south"), "{t}");
        assert!(t.contains("monitor inspect north demo"), "{t}");
        assert!(!t.contains("--api"), "default API address: {t}");
    }

    #[test]
    fn the_single_region_banner_keeps_the_old_layout() {
        let t = banner_of(&[
            "--single-region",
            "--data-dir",
            "d",
            "--http",
            "127.0.0.1:9000",
        ]);
        assert!(
            t.starts_with("Strata is up (3 hubs in region \"local\", 3 edges; started in 4.2 s)."),
            "{t}"
        );
        assert!(t.contains("  local    : 3 hubs on QUIC 127.0.0.1:7201-7203 (Raft peers 127.0.0.1:7101-7103), data in d/hub-N"), "{t}");
        assert!(t.contains("edge-3 (zone a) MQTT 127.0.0.1:1885\n"), "{t}");
        assert!(t.contains("kill -9 $(cat d/edge-2/edge.pid)"), "{t}");
        assert!(t.contains("/api/v1/telemetry/demo/dev-0?step=10000"), "{t}");
        assert!(
            t.contains("strata events --api 127.0.0.1:9000 --data-dir d --region local --follow"),
            "{t}"
        );
        assert!(!t.contains("again with --region"), "{t}");
        assert!(!t.contains("region=south"), "{t}");
    }

    #[test]
    fn region_and_edges_flags_follow_the_layout() {
        // --region belongs to --single-region.
        assert!(Args::try_parse_from(["up", "--region", "x"]).is_err());
        let o = options(&["--single-region", "--region", "x", "--edges", "5"]);
        assert_eq!(o.regions().len(), 1);
        assert_eq!(
            (o.regions()[0].name.as_str(), o.regions()[0].edges),
            ("x", 5)
        );
        let o = options(&["--edges", "1", "--hubs", "1"]);
        let plans = o.regions();
        assert_eq!(
            plans
                .iter()
                .map(|p| (p.name.as_str(), p.hubs, p.edges))
                .collect::<Vec<_>>(),
            [("north", 1, 1), ("south", 1, 1)]
        );
        assert_eq!(plans[1].dir, Path::new("strata-data/south"));
        assert_eq!(plans[1].hub_prefix, "south-");
        // Ports past the top are refused up front, not overflowed.
        let o = Args::try_parse_from(["up", "--quic-base", "65300"])
            .unwrap()
            .up;
        assert!(o.check().is_err());
    }
}
