//! `strata up`'s edges as real processes, so a user can SIGKILL one and
//! watch the region heal: each edge is this binary re-run as
//! `strata edge-node --config <data-dir>/edge-N/edge.toml` (the hidden
//! subcommand runs exactly what the `edge-node` binary runs), with its pid
//! in `<data-dir>/edge-N/edge.pid`.
//!
//! [`supervise`] owns one edge process for the cluster's lifetime: it
//! starts it, and when the process dies without being asked to (a
//! `kill -9`, a crash) says so and starts it again after a delay — long
//! enough to see its workloads move elsewhere and the region mark it down,
//! then come back. On shutdown it sends SIGTERM (the edge drains, closes
//! its hub connection with the shutdown code and stops) and SIGKILLs only
//! a process that does not stop in time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// How long a SIGTERMed edge may take to drain and stop.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a new edge process may take to accept MQTT connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One edge process of a local cluster.
#[derive(Debug, Clone)]
pub struct EdgeProcess {
    /// Edge name (`edge-2`).
    pub name: String,
    /// Its config file.
    pub config: PathBuf,
    /// Where its pid is written while it runs.
    pub pid_file: PathBuf,
    /// Its MQTT listener, to know when it is ready.
    pub mqtt: SocketAddr,
    /// File its stdout and stderr are appended to; `None`: this process's.
    pub log: Option<PathBuf>,
}

impl EdgeProcess {
    /// Writes `cfg` as the edge's config file (0600, beside its data).
    pub fn write_config(&self, cfg: &edge_node::EdgeConfig) -> anyhow::Result<()> {
        let text = toml::to_string(cfg).context("encoding an edge config")?;
        if let Some(dir) = self.config.parent() {
            strata_net::files::create_private_dir(dir)?;
        }
        strata_net::files::write_private(&self.config, text.as_bytes())?;
        Ok(())
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("locating the strata binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("edge-node").arg("--config").arg(&self.config);
        if let Some(log) = &self.log {
            let file = strata_net::files::private_options()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("opening {}", log.display()))?;
            let err = file.try_clone().context("duplicating a log file handle")?;
            cmd.stdout(file).stderr(err);
        }
        let child = cmd
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        if let Some(pid) = child.id() {
            strata_net::files::write_private(&self.pid_file, format!("{pid}\n").as_bytes())?;
        }
        Ok(child)
    }
}

/// Starts `edge` and waits until it accepts MQTT connections; returns the
/// running process for [`supervise`].
pub async fn start(edge: &EdgeProcess) -> anyhow::Result<Child> {
    let mut child = edge.spawn()?;
    wait_ready(edge, &mut child).await?;
    Ok(child)
}

async fn wait_ready(edge: &EdgeProcess, child: &mut Child) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(edge.mqtt).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{} exited while starting: {}", edge.name, describe(status));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} did not accept MQTT connections on {} within {READY_TIMEOUT:?}",
            edge.name,
            edge.mqtt
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keeps `edge` running until `shutdown`: a process that dies on its own is
/// started again after `restart_after` (never, when `None`). A config the
/// edge refuses (exit code 2) ends supervision with an error, since a
/// restart would fail the same way.
pub async fn supervise(
    edge: EdgeProcess,
    mut child: Child,
    restart_after: Option<Duration>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let status = tokio::select! {
            status = child.wait() => status?,
            _ = shutdown.cancelled() => {
                stop(&edge, &mut child).await;
                let _ = std::fs::remove_file(&edge.pid_file);
                return Ok(());
            }
        };
        let _ = std::fs::remove_file(&edge.pid_file);
        anyhow::ensure!(
            status.code() != Some(2),
            "{} refused its config ({})",
            edge.name,
            edge.config.display()
        );
        let Some(delay) = restart_after else {
            println!(
                "strata up: {} exited ({}); not restarting it (--restart-edges-after 0s)",
                edge.name,
                describe(status)
            );
            shutdown.cancelled().await;
            return Ok(());
        };
        println!(
            "strata up: {} exited ({}); its region marks it down and moves its replace-after \
             monitors; restarting it in {}",
            edge.name,
            describe(status),
            humantime::format_duration(delay)
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        child = start(&edge).await?;
        println!("strata up: {} is back", edge.name);
    }
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
async fn stop(edge: &EdgeProcess, child: &mut Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            eprintln!(
                "strata up: {} did not stop within {STOP_GRACE:?}; killing it",
                edge.name
            );
            let _ = child.kill().await;
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(9)) => "killed by SIGKILL".to_owned(),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// The pid file of edge `name` under `data_dir`, for the banner.
pub fn pid_file(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(name).join("edge.pid")
}
