//! One Strata child process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where cargo put the binaries: the directory above `deps/` that holds the
/// running test executable.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .context("test executable has no parent directory")?;
    let p = dir.join(name);
    if !p.exists() {
        bail!(
            "binary {} not found: build it first (./scripts/test runs `cargo build --workspace --bins`)",
            p.display()
        );
    }
    Ok(p)
}

/// A running (or stopped) child with its config, log and ready line.
pub struct Proc {
    /// Name used in logs, e.g. `hub-2`.
    pub name: String,
    bin: PathBuf,
    args: Vec<String>,
    /// stderr of every run, appended.
    pub log: PathBuf,
    child: Option<Child>,
    /// The JSON of the last `STRATA_READY` line.
    pub ready: serde_json::Value,
}

impl Proc {
    /// Spawns `bin args...` and waits for its ready line.
    pub async fn spawn(name: &str, bin: &str, args: &[String], log: &Path) -> anyhow::Result<Proc> {
        let mut p = Proc {
            name: name.to_owned(),
            bin: bin_path(bin)?,
            args: args.to_vec(),
            log: log.to_owned(),
            child: None,
            ready: serde_json::Value::Null,
        };
        p.start().await?;
        Ok(p)
    }

    /// (Re)starts the process and waits up to 30 s for its ready line.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("STRATA_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.name))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let name = self.name.clone();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(json) = line.strip_prefix(strata_net::process::READY_PREFIX) {
                    return Ok::<_, anyhow::Error>(serde_json::from_str(json)?);
                }
            }
            bail!("{name} exited before it was ready")
        })
        .await;
        let ready = match ready {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => bail!("{e}; log:\n{}", self.log_tail(40)),
            Err(_) => bail!(
                "{} not ready after 30 s; log:\n{}",
                self.name,
                self.log_tail(40)
            ),
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.ready = ready;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no shutdown code runs, like a power cut of the process.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// SIGTERM and wait (up to 20 s) for a clean exit; returns whether it
    /// exited successfully.
    pub async fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        if let Some(pid) = c.id() {
            send_signal(pid as i32, libc::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(20), c.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => {
                let _ = c.start_kill();
                let _ = c.wait().await;
                false
            }
        }
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A string field of the ready line, e.g. `mqtt`.
    pub fn ready_field(&self, key: &str) -> Option<String> {
        self.ready.get(key)?.as_str().map(str::to_owned)
    }
}

/// Sends a signal. `libc::kill` is an FFI call; the workspace denies
/// `unsafe_code`, so it is allowed here alone, for the test harness.
#[allow(unsafe_code)]
fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}
