//! The node's real resource use, from /proc and statvfs, for heartbeats and
//! the local scheduler's pressure decisions.
//!
//! The parsers are pure functions over the files' text (tested on captured
//! samples); [`NodeSampler`] is the thin driver that reads the files and turns
//! counters into rates between two samples. On a system without /proc (not
//! Linux) every field it cannot read stays 0: the report degrades, the edge
//! keeps running.

use std::path::{Path, PathBuf};
use std::time::Instant;

use strata_protocol::monitoring::NodeResources;

/// Cumulative CPU jiffies from the `cpu` line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Jiffies spent busy (everything but idle and iowait).
    pub busy: u64,
    /// All jiffies.
    pub total: u64,
    /// Number of `cpuN` lines (cores online).
    pub cores: u32,
}

/// Parses /proc/stat.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let mut out = None;
    let mut cores = 0u32;
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        match it.next() {
            Some("cpu") => {
                let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
                if v.len() < 4 {
                    return None;
                }
                // user nice system idle iowait irq softirq steal (guest is
                // already inside user).
                let total: u64 = v.iter().take(8).sum();
                let idle = v[3] + v.get(4).copied().unwrap_or(0);
                out = Some(CpuTimes {
                    busy: total - idle,
                    total,
                    cores: 0,
                });
            }
            Some(name) if name.starts_with("cpu") => cores += 1,
            _ => {}
        }
    }
    out.map(|c| CpuTimes {
        cores: cores.max(1),
        ..c
    })
}

/// `(MemTotal, MemAvailable)` in bytes from /proc/meminfo.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_ascii_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// Received and sent bytes summed over every interface but loopback, from
/// /proc/net/dev.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_ascii_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() >= 9 {
            rx = rx.saturating_add(v[0]);
            tx = tx.saturating_add(v[8]);
        }
    }
    (rx, tx)
}

/// `VmRSS` in bytes from /proc/self/status.
pub fn parse_status_rss(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l["VmRSS:".len()..].split_ascii_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Millicores busy between two CPU samples.
pub fn cpu_millicores(prev: CpuTimes, now: CpuTimes) -> u32 {
    let total = now.total.saturating_sub(prev.total);
    if total == 0 {
        return 0;
    }
    let busy = now.busy.saturating_sub(prev.busy);
    let m = u128::from(busy) * u128::from(now.cores) * 1000 / u128::from(total);
    u32::try_from(m).unwrap_or(u32::MAX)
}

/// Reads the node's resources; keeps the previous counters for rates.
#[derive(Debug)]
pub struct NodeSampler {
    data_dir: PathBuf,
    proc_root: PathBuf,
    prev_cpu: Option<CpuTimes>,
    prev_net: Option<(Instant, u64, u64)>,
}

impl NodeSampler {
    /// A sampler whose disk figures describe `data_dir`'s filesystem.
    pub fn new(data_dir: &Path) -> NodeSampler {
        Self::with_proc_root(data_dir, Path::new("/proc"))
    }

    /// Same, reading `proc_root` instead of /proc (tests).
    pub fn with_proc_root(data_dir: &Path, proc_root: &Path) -> NodeSampler {
        NodeSampler {
            data_dir: data_dir.to_path_buf(),
            proc_root: proc_root.to_path_buf(),
            prev_cpu: None,
            prev_net: None,
        }
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.proc_root.join(rel)).ok()
    }

    /// One sample. CPU and network rates cover the time since the previous
    /// sample (0 on the first).
    pub fn sample(&mut self, now: Instant) -> NodeResources {
        let mut r = NodeResources::default();
        if let Some(cpu) = self.read("stat").as_deref().and_then(parse_proc_stat) {
            r.cpu_total_millicores = cpu.cores.saturating_mul(1000);
            if let Some(prev) = self.prev_cpu {
                r.cpu_used_millicores = cpu_millicores(prev, cpu);
            }
            self.prev_cpu = Some(cpu);
        }
        if let Some((total, avail)) = self.read("meminfo").as_deref().and_then(parse_meminfo) {
            r.memory_total_bytes = total;
            r.memory_used_bytes = total.saturating_sub(avail);
        }
        if let Some(text) = self.read("net/dev") {
            let (rx, tx) = parse_net_dev(&text);
            if let Some((t0, rx0, tx0)) = self.prev_net {
                let ms = now.saturating_duration_since(t0).as_millis() as u64;
                let per_s = |d: u64| d.saturating_mul(1000).checked_div(ms).unwrap_or(0);
                r.net_rx_bytes_per_s = per_s(rx.saturating_sub(rx0));
                r.net_tx_bytes_per_s = per_s(tx.saturating_sub(tx0));
            }
            self.prev_net = Some((now, rx, tx));
        }
        if let Some(rss) = self
            .read("self/status")
            .as_deref()
            .and_then(parse_status_rss)
        {
            r.process_rss_bytes = rss;
        }
        // The data dir may not exist yet on a first boot: measure its
        // nearest existing ancestor's filesystem.
        let mut dir: &Path = &self.data_dir;
        loop {
            if let Ok(st) = rustix::fs::statvfs(dir) {
                let frsize = if st.f_frsize > 0 {
                    st.f_frsize
                } else {
                    st.f_bsize
                };
                r.disk_total_bytes = st.f_blocks.saturating_mul(frsize);
                r.disk_used_bytes = st
                    .f_blocks
                    .saturating_sub(st.f_bfree)
                    .saturating_mul(frsize);
                break;
            }
            match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => dir = p,
                _ => break,
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const STAT: &str = "cpu  100 0 100 700 100 0 0 0 0 0\n\
        cpu0 50 0 50 350 50 0 0 0 0 0\n\
        cpu1 50 0 50 350 50 0 0 0 0 0\n\
        intr 12345\nctxt 999\n";

    #[test]
    fn proc_stat_counts_busy_idle_and_cores() {
        let c = parse_proc_stat(STAT).unwrap();
        assert_eq!(
            c,
            CpuTimes {
                busy: 200,
                total: 1000,
                cores: 2
            }
        );
        assert_eq!(parse_proc_stat("intr 1\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 2\n"), None);
    }

    #[test]
    fn cpu_rate_is_busy_share_times_cores() {
        let a = CpuTimes {
            busy: 200,
            total: 1000,
            cores: 2,
        };
        // Half of the jiffies since `a` were busy, on 2 cores: 1000 mc.
        let b = CpuTimes {
            busy: 700,
            total: 2000,
            cores: 2,
        };
        assert_eq!(cpu_millicores(a, b), 1000);
        assert_eq!(cpu_millicores(b, b), 0);
    }

    #[test]
    fn meminfo_net_and_rss_parse() {
        let mem = "MemTotal:       2048 kB\nMemFree:         100 kB\nMemAvailable:    1024 kB\n";
        assert_eq!(parse_meminfo(mem), Some((2048 * 1024, 1024 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
        let net = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n\
            lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n\
          eth0: 1000 2 0 0 0 0 0 0 500 3 0 0 0 0 0 0\n\
          eth1: 24 2 0 0 0 0 0 0 6 3 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(net), (1024, 506));
        assert_eq!(
            parse_status_rss("Name: x\nVmRSS:\t  3000 kB\n"),
            Some(3000 * 1024)
        );
        assert_eq!(parse_status_rss("Name: x\n"), None);
    }

    #[test]
    fn sampler_turns_counters_into_rates() {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        std::fs::create_dir_all(proc_root.join("net")).unwrap();
        std::fs::create_dir_all(proc_root.join("self")).unwrap();
        let write = |rel: &str, text: &str| std::fs::write(proc_root.join(rel), text).unwrap();
        write("stat", STAT);
        write("meminfo", "MemTotal: 4000 kB\nMemAvailable: 1000 kB\n");
        write("net/dev", "h\nh\neth0: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n");
        write("self/status", "VmRSS: 10 kB\n");
        let mut s = NodeSampler::with_proc_root(dir.path(), &proc_root);
        let t0 = Instant::now();
        let first = s.sample(t0);
        assert_eq!(first.cpu_total_millicores, 2000);
        assert_eq!(first.cpu_used_millicores, 0);
        assert_eq!(first.memory_used_bytes, 3000 * 1024);
        assert_eq!(first.process_rss_bytes, 10 * 1024);
        assert!(first.disk_total_bytes > 0 && first.disk_used_bytes <= first.disk_total_bytes);

        write("stat", "cpu 600 0 100 1200 100 0 0 0\ncpu0 1\ncpu1 1\n");
        write(
            "net/dev",
            "h\nh\neth0: 2000 0 0 0 0 0 0 0 4000 0 0 0 0 0 0 0\n",
        );
        let second = s.sample(t0 + Duration::from_secs(2));
        // 500 of 1000 new jiffies busy on 2 cores.
        assert_eq!(second.cpu_used_millicores, 1000);
        assert_eq!(second.net_rx_bytes_per_s, 1000);
        assert_eq!(second.net_tx_bytes_per_s, 2000);
    }

    #[test]
    fn sampler_survives_missing_proc_and_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut s =
            NodeSampler::with_proc_root(&dir.path().join("not/yet/made"), &dir.path().join("no"));
        let r = s.sample(Instant::now());
        assert_eq!(r.cpu_total_millicores, 0);
        assert!(r.disk_total_bytes > 0, "falls back to an existing ancestor");
    }

    #[test]
    fn real_proc_is_readable_here() {
        if !Path::new("/proc/stat").exists() {
            eprintln!("skipping: no /proc on this system");
            return;
        }
        let mut s = NodeSampler::new(Path::new("."));
        let r = s.sample(Instant::now());
        assert!(r.cpu_total_millicores >= 1000);
        assert!(r.memory_total_bytes > 0 && r.process_rss_bytes > 0);
    }
}
