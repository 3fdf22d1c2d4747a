//! What every Strata binary does around its library's `run`: load a TOML
//! config with an error that names the file and the problem, set up
//! tracing, turn SIGINT/SIGTERM into a cancellation, and announce readiness.
//!
//! The ready line is how the test harness (and scripts) learn the ports a
//! process bound when it was configured with port 0: one line on stdout,
//! `STRATA_READY {"kind":"edge-node","mqtt":"127.0.0.1:40123",...}`.

use std::path::Path;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// Prefix of the readiness line on stdout.
pub const READY_PREFIX: &str = "STRATA_READY ";

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown / mistyped keys.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message, with line and column.
        message: String,
    },
    /// The values are inconsistent; every problem is listed.
    #[error("invalid config {path}:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// The file.
        path: String,
        /// One line per problem.
        problems: Vec<String>,
    },
}

/// Reads and parses a TOML config file.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigFileError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Turns a list of problems into `Ok` or [`ConfigFileError::Invalid`].
pub fn check_problems(path: &Path, problems: Vec<String>) -> Result<(), ConfigFileError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigFileError::Invalid {
            path: path.display().to_string(),
            problems,
        })
    }
}

/// Installs a tracing subscriber: `RUST_LOG`-style filter, default `info`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A token cancelled on SIGINT (Ctrl-C) or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}

/// Prints the readiness line (see the module docs).
pub fn announce_ready(fields: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{READY_PREFIX}{fields}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        name: String,
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.toml");
        std::fs::write(&p, "name = \"a\"\nnmae = \"typo\"\n").unwrap();
        let err = load_toml::<Cfg>(&p).unwrap_err().to_string();
        assert!(err.contains("x.toml") && err.contains("nmae"), "{err}");
        let err = check_problems(&p, vec!["a: bad".into(), "b: worse".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("a: bad") && err.contains("b: worse"), "{err}");
    }
}
