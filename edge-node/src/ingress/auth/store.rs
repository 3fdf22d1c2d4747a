//! The credentials in force, hot-reloaded from the file.
//!
//! [`CredentialStore`] holds the current [`Credentials`] in a `watch`
//! channel: the CONNECT path reads the latest snapshot, and every
//! authenticated connection waits on the channel to notice revocation.
//! [`CredentialStore::run`] is the only writer: it polls the file's content
//! digest every `reload-interval` (simple and robust: no inotify edge
//! cases, atomic replacements and in-place edits alike are seen) and swaps
//! in a new snapshot when the content changed and validates. A file that
//! fails to parse or validate keeps the previous credentials, is logged and
//! counted (`strata_ingress_credentials_reloads_total{kind="error"}`). A
//! file that disappears means "no identities": everyone is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::credentials::Credentials;
use super::metrics::{AuthMetrics, KindLabel};
use super::CredentialsError;

/// What the file held at the last look.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// No file (or no path configured).
    Missing,
    /// Content with this SHA-256.
    Content([u8; 32]),
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The credentials in force; see the module docs.
#[derive(Debug)]
pub struct CredentialStore {
    path: Option<PathBuf>,
    tx: watch::Sender<Arc<Credentials>>,
    initial: Seen,
    metrics: AuthMetrics,
}

/// The command that creates the first identity, for log lines.
pub fn add_hint(path: &Path) -> String {
    format!(
        "strata device add --file {} --username <name> --tenant <tenant> --devices '<glob>'",
        path.display()
    )
}

impl CredentialStore {
    /// Loads the file once. A missing file is "no identities yet" (logged
    /// with the command that adds one); an unreadable or invalid one is an
    /// error, so a broken file is noticed at start, not at the first device.
    pub fn open(path: Option<PathBuf>, metrics: AuthMetrics) -> Result<Self, CredentialsError> {
        let (creds, initial) = match &path {
            None => (Credentials::default(), Seen::Missing),
            Some(p) => match std::fs::read(p) {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let c = Credentials::parse(&text, &p.display().to_string(), 1)?;
                    tracing::info!(file = %p.display(), identities = c.len(), "device credentials loaded");
                    (c, Seen::Content(digest(&bytes)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(
                        file = %p.display(),
                        "no device credentials yet: every MQTT client is refused until an identity is added with `{}`",
                        add_hint(p)
                    );
                    (Credentials::default(), Seen::Missing)
                }
                Err(source) => {
                    return Err(CredentialsError::Read {
                        path: p.display().to_string(),
                        source,
                    })
                }
            },
        };
        metrics.identities.set(creds.len() as i64);
        metrics
            .reloads
            .get_or_create(&KindLabel { kind: "ok" })
            .inc();
        Ok(CredentialStore {
            path,
            tx: watch::Sender::new(Arc::new(creds)),
            initial,
            metrics,
        })
    }

    /// The credentials in force now.
    pub fn current(&self) -> Arc<Credentials> {
        self.tx.borrow().clone()
    }

    /// A receiver that wakes on every swap (for revocation).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Credentials>> {
        self.tx.subscribe()
    }

    /// The file watched, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Polls the file every `interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let mut seen = self.initial.clone();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let read = tokio::fs::read(&path).await;
            seen = self.observe(&path, seen, read);
        }
    }

    /// One poll: swaps the snapshot if the content changed and is valid.
    fn observe(&self, path: &Path, seen: Seen, read: std::io::Result<Vec<u8>>) -> Seen {
        let file = path.display().to_string();
        let bytes = match read {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if seen != Seen::Missing {
                    tracing::warn!(%file, "credentials file removed: every MQTT client is now refused");
                    self.swap(Credentials::default());
                }
                return Seen::Missing;
            }
            Err(e) => {
                if seen != Seen::Missing || self.current().is_empty() {
                    tracing::error!(%file, "cannot read credentials file, keeping the previous credentials: {e}");
                }
                self.metrics
                    .reloads
                    .get_or_create(&KindLabel { kind: "error" })
                    .inc();
                return seen;
            }
        };
        let d = Seen::Content(digest(&bytes));
        if d == seen {
            return seen;
        }
        let generation = self.current().generation + 1;
        match Credentials::parse(&String::from_utf8_lossy(&bytes), &file, generation) {
            Ok(c) => {
                tracing::info!(%file, identities = c.len(), generation, "device credentials reloaded");
                self.swap(c);
            }
            Err(e) => {
                // Logged and counted once per distinct bad content.
                tracing::error!("keeping the previous device credentials: {e}");
                self.metrics
                    .reloads
                    .get_or_create(&KindLabel { kind: "error" })
                    .inc();
            }
        }
        d
    }

    fn swap(&self, mut c: Credentials) {
        c.generation = c.generation.max(self.current().generation + 1);
        self.metrics.identities.set(c.len() as i64);
        self.metrics
            .reloads
            .get_or_create(&KindLabel { kind: "ok" })
            .inc();
        self.tx.send_replace(Arc::new(c));
    }
}

#[cfg(test)]
mod tests {
    use super::super::credentials::{CredentialsFile, IdentityEntry};
    use super::*;
    use prometheus_client::registry::Registry;

    fn file_with(users: &[&str]) -> String {
        CredentialsFile {
            identity: users
                .iter()
                .map(|u| IdentityEntry {
                    username: (*u).into(),
                    tenant: "demo".into(),
                    devices: "*".into(),
                    password_hash: None,
                    client_cert: true,
                })
                .collect(),
        }
        .render()
    }

    #[test]
    fn changes_swap_invalid_content_keeps_the_previous_and_removal_empties() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.toml");
        std::fs::write(&path, file_with(&["a"])).unwrap();
        let metrics = AuthMetrics::register(&mut Registry::default(), None);
        let store = CredentialStore::open(Some(path.clone()), metrics.clone()).unwrap();
        let mut rx = store.subscribe();
        let mut seen = store.initial.clone();
        let read = |p: &Path| std::fs::read(p);

        seen = store.observe(&path, seen, read(&path));
        assert!(!rx.has_changed().unwrap(), "same content: no swap");

        std::fs::write(&path, file_with(&["a", "b"])).unwrap();
        seen = store.observe(&path, seen, read(&path));
        assert!(rx.has_changed().unwrap());
        let c = rx.borrow_and_update().clone();
        assert_eq!((c.len(), c.generation), (2, 2));

        std::fs::write(&path, "[[identity]]\nusername = \"x\"\n").unwrap();
        seen = store.observe(&path, seen, read(&path));
        seen = store.observe(&path, seen, read(&path));
        assert!(
            !rx.has_changed().unwrap(),
            "invalid file keeps the previous"
        );
        assert_eq!(store.current().len(), 2);
        assert_eq!(
            metrics
                .reloads
                .get_or_create(&KindLabel { kind: "error" })
                .get(),
            1
        );

        std::fs::remove_file(&path).unwrap();
        seen = store.observe(&path, seen, read(&path));
        assert!(store.current().is_empty());
        assert_eq!(seen, Seen::Missing);
        std::fs::write(&path, file_with(&["c"])).unwrap();
        store.observe(&path, seen, read(&path));
        assert!(store.current().get("c").is_some());
        assert_eq!(metrics.identities.get(), 1);
    }

    #[test]
    fn open_missing_is_empty_and_invalid_is_an_error_naming_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.toml");
        let m = AuthMetrics::default();
        assert!(CredentialStore::open(Some(path.clone()), m.clone())
            .unwrap()
            .current()
            .is_empty());
        std::fs::write(&path, "[[identity]]\nusername = \"pump\"\ntenant = \"t\"\ndevices = \"[\"\nclient-cert = true\n").unwrap();
        let err = CredentialStore::open(Some(path), m)
            .unwrap_err()
            .to_string();
        assert!(err.contains("identity[0] \"pump\""), "{err}");
    }
}
