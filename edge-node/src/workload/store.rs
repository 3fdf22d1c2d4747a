//! What the workload layer keeps on disk so it runs with no hub after a
//! reboot.
//!
//! ```text
//! <data-dir>/monitors/
//!   assignments.json          version + every allocation (id, fencing token,
//!                             spec, disconnect policy) placed here (JSON)
//!   artifacts/<sha256>.wasm   modules, named by content hash, verified on load
//!   state/<tenant>@<name>.kv  each instance's key-value state (crc-checked),
//!                             with its origin: the allocation, fencing token
//!                             and time it was taken under (format SKV2; SKV1
//!                             files, without an origin, are still read)
//!   cache/                    compiled modules (`sandbox::cache`, owned by the wasm driver)
//! ```
//!
//! Every file is written atomically (tmp + fsync + rename + directory
//! fsync), so a crash leaves the old or the new version, never a mix. A file
//! that is corrupt anyway (disk trouble, hand edits) is reported as
//! [`StoreError::Corrupt`] naming it; callers log it and carry on without it.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_net::files;
use strata_protocol::scheduling::EdgeAllocation;
use strata_protocol::workload::MonitorSpec;

use super::atomic_file::write_atomic as write_file;
use super::model::InstanceKey;
use super::sandbox::{sha256_hex, KvState};

const ASSIGNMENTS: &str = "assignments.json";
const KV_MAGIC: &[u8; 4] = b"SKV1";
const KV_MAGIC_V2: &[u8; 4] = b"SKV2";

/// Where a persisted state comes from: the allocation and fencing token it
/// was taken under (this edge's instance, or the region's checkpoint it was
/// seeded from), and when. Decides whether a checkpoint the region hands a
/// new instance replaces it (see `checkpoint::seed_decision`).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct StateOrigin {
    /// Allocation id.
    pub allocation: String,
    /// Its fencing token.
    pub token: u64,
    /// When the state was taken, ms since the Unix epoch.
    pub taken_ms: i64,
}

/// Why a persisted monitor file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The filesystem refused.
    #[error("monitor store {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The file exists but its content is unusable.
    #[error("monitor store {path}: corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The module is not stored.
    #[error("monitor store: module {sha256} is not stored")]
    MissingArtifact {
        /// Module hash.
        sha256: String,
    },
    /// A hash is not 64 lowercase hex digits (it would name a file).
    #[error("monitor store: {sha256:?} is not a sha256 hex digest")]
    BadHash {
        /// The offending text.
        sha256: String,
    },
}

/// The applied assignment set, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Assignments {
    /// Region assignments version applied.
    pub version: u64,
    /// Monitors assigned by a pre-scheduler region (a file written before
    /// the upgrade): run as `keep` instances with the `tenant/name` and
    /// generation fence until the region sends allocations. Never written
    /// now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monitors: Vec<MonitorSpec>,
    /// Every allocation placed on this edge.
    #[serde(default)]
    pub allocations: Vec<EdgeAllocation>,
}

impl Assignments {
    /// Module hashes the set needs.
    pub fn modules(&self) -> BTreeSet<String> {
        self.monitors
            .iter()
            .map(|m| m.artifact.sha256.clone())
            .chain(
                self.allocations
                    .iter()
                    .map(|a| a.spec.artifact.sha256.clone()),
            )
            .collect()
    }

    /// Number of instances the set asks for.
    pub fn len(&self) -> usize {
        self.monitors.len() + self.allocations.len()
    }

    /// Whether the set asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The on-disk store under `<data-dir>/monitors`.
#[derive(Debug, Clone)]
pub struct WorkloadStore {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn valid_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A file-name-safe spelling of a name: `[A-Za-z0-9_.-]` kept, anything
/// else `%XX`, so no name can escape the directory (`..` stays inside the
/// `tenant@name` form) and distinct names never collide.
fn file_part(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

impl WorkloadStore {
    /// Opens (creating) the store at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        // 0700 (files 0600): state and modules are tenants' data. The edge
        // checked its data directory; this one is inside it.
        for sub in ["artifacts", "state"] {
            let p = dir.join(sub);
            files::create_private_dir(&p).map_err(|e| io_err(&p)(e.into()))?;
        }
        Ok(WorkloadStore { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The persisted assignments; `Ok(None)` when none were ever applied.
    pub fn load_assignments(&self) -> Result<Option<Assignments>, StoreError> {
        let path = self.dir.join(ASSIGNMENTS);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    /// Persists the assignments atomically.
    pub fn save_assignments(&self, a: &Assignments) -> Result<(), StoreError> {
        let path = self.dir.join(ASSIGNMENTS);
        let bytes = serde_json::to_vec_pretty(a).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: format!("encoding: {e}"),
        })?;
        write_atomic(&path, &bytes)
    }

    fn artifact_path(&self, sha256: &str) -> Result<PathBuf, StoreError> {
        if !valid_hash(sha256) {
            return Err(StoreError::BadHash {
                sha256: sha256.to_owned(),
            });
        }
        Ok(self.dir.join("artifacts").join(format!("{sha256}.wasm")))
    }

    /// Whether a module file with this hash exists (its content is checked
    /// on [`WorkloadStore::load_artifact`]).
    pub fn has_artifact(&self, sha256: &str) -> bool {
        self.artifact_path(sha256).is_ok_and(|p| p.is_file())
    }

    /// Stores a module atomically. The caller verified the hash; it is
    /// checked again because a wrong file would be served forever.
    pub fn put_artifact(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.artifact_path(sha256)?;
        let actual = sha256_hex(bytes);
        if actual != sha256 {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("bytes hash to {actual}"),
            });
        }
        write_atomic(&path, bytes)
    }

    /// Reads a module and verifies its hash.
    pub fn load_artifact(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.artifact_path(sha256)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingArtifact {
                    sha256: sha256.to_owned(),
                })
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("content hashes to {actual}"),
            });
        }
        Ok(bytes)
    }

    /// Deletes a module file (a corrupt one, so it is fetched again).
    pub fn remove_artifact(&self, sha256: &str) -> Result<(), StoreError> {
        let path = self.artifact_path(sha256)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// The hashes of every module file present (contents not checked).
    pub fn artifacts(&self) -> Result<BTreeSet<String>, StoreError> {
        let dir = self.dir.join("artifacts");
        let mut out = BTreeSet::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            if let Some(sha) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".wasm"))
                .filter(|s| valid_hash(s))
            {
                out.insert(sha.to_owned());
            }
        }
        Ok(out)
    }

    /// Deletes modules no assignment refers to any more.
    pub fn retain_artifacts(&self, keep: &dyn Fn(&str) -> bool) -> Result<usize, StoreError> {
        let dir = self.dir.join("artifacts");
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let Some(sha) = name.to_str().and_then(|n| n.strip_suffix(".wasm")) else {
                continue;
            };
            if !keep(sha) {
                let p = entry.path();
                fs::remove_file(&p).map_err(io_err(&p))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn state_path(&self, key: &InstanceKey) -> PathBuf {
        let mut name = String::with_capacity(key.tenant.len() + key.name.len() + 4);
        file_part(&key.tenant, &mut name);
        name.push('@');
        file_part(&key.name, &mut name);
        // `#` never comes out of `file_part`, so `a@b#1` cannot collide
        // with an unsharded name. Slot 0 and unsharded share the file
        // (`InstanceKey::slot_suffix`).
        if let Some(s) = key.slot_suffix() {
            use std::fmt::Write as _;
            let _ = write!(name, "#{s}");
        }
        name.push_str(".kv");
        self.dir.join("state").join(name)
    }

    /// An instance's persisted state; empty when none was saved.
    pub fn load_state(&self, key: &InstanceKey) -> Result<KvState, StoreError> {
        self.load_state_with_origin(key).map(|(s, _)| s)
    }

    /// An instance's persisted state with its origin (`None` for a file
    /// written before origins were kept); empty when none was saved.
    pub fn load_state_with_origin(
        &self,
        key: &InstanceKey,
    ) -> Result<(KvState, Option<StateOrigin>), StoreError> {
        let path = self.state_path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((KvState::new(), None)),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        if bytes.len() < 8 || (&bytes[..4] != KV_MAGIC && &bytes[..4] != KV_MAGIC_V2) {
            return Err(corrupt("bad header".into()));
        }
        let with_origin = &bytes[..4] == KV_MAGIC_V2;
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&bytes[4..8]);
        let body = &bytes[8..];
        if crc32fast::hash(body) != u32::from_le_bytes(crc) {
            return Err(corrupt("checksum mismatch".into()));
        }
        let cfg = bincode::config::standard();
        let (decoded, used) = if with_origin {
            bincode::decode_from_slice::<(StateOrigin, KvState), _>(body, cfg)
                .map(|((o, s), used)| ((s, Some(o)), used))
        } else {
            bincode::decode_from_slice::<KvState, _>(body, cfg).map(|(s, used)| ((s, None), used))
        }
        .map_err(|e| corrupt(e.to_string()))?;
        if used != body.len() {
            return Err(corrupt(format!("{} trailing bytes", body.len() - used)));
        }
        Ok(decoded)
    }

    /// Persists an instance's state atomically (without an origin).
    pub fn save_state(&self, key: &InstanceKey, state: &KvState) -> Result<(), StoreError> {
        self.save_state_from(key, state, None)
    }

    /// Persists an instance's state atomically, with its origin when known.
    pub fn save_state_from(
        &self,
        key: &InstanceKey,
        state: &KvState,
        origin: Option<&StateOrigin>,
    ) -> Result<(), StoreError> {
        let path = self.state_path(key);
        let cfg = bincode::config::standard();
        let body = match origin {
            Some(o) => bincode::encode_to_vec((o, state), cfg),
            None => bincode::encode_to_vec(state, cfg),
        }
        .map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: format!("encoding: {e}"),
        })?;
        let mut bytes = Vec::with_capacity(body.len() + 8);
        bytes.extend_from_slice(if origin.is_some() {
            KV_MAGIC_V2
        } else {
            KV_MAGIC
        });
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        write_atomic(&path, &bytes)
    }

    /// Forgets an instance's state (its monitor was deleted).
    pub fn remove_state(&self, key: &InstanceKey) -> Result<(), StoreError> {
        let path = self.state_path(key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }
}

/// Atomic replacement, naming the file in the error.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_file(path, bytes).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_protocol::workload::{
        ArtifactRef, DeviceSelector, Placement, Resources, RestartPolicy, RuntimeKind,
    };

    fn spec(tenant: &str, name: &str, sha256: &str) -> MonitorSpec {
        MonitorSpec {
            name: name.into(),
            tenant: tenant.into(),
            runtime: RuntimeKind::Wasm,
            artifact: ArtifactRef {
                sha256: sha256.into(),
                size_bytes: 1,
            },
            selector: DeviceSelector {
                tenant: tenant.into(),
                device_globs: vec!["dev-*".into()],
                tags: Default::default(),
            },
            params: r#"{"a":1}"#.into(),
            resources: Resources {
                memory_mib: 16,
                cpu_millicores: 100,
                min_memory_mib: None,
                max_memory_mib: Some(32),
                min_cpu_millicores: None,
                max_cpu_millicores: None,
            },
            priority: 50,
            restart: RestartPolicy::default(),
            target: Placement::Node("edge-1".into()),
            generation: 3,
            placement: Default::default(),
        }
    }

    #[test]
    fn round_trips_assignments_artifacts_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let s = WorkloadStore::open(dir.path().join("monitors")).unwrap();
        assert_eq!(s.load_assignments().unwrap(), None);
        let module = b"(module)".to_vec();
        let sha = sha256_hex(&module);
        let a = Assignments {
            version: 7,
            monitors: vec![spec("acme", "m1", &sha), spec("acme", "..", &sha)],
            allocations: vec![],
        };
        s.save_assignments(&a).unwrap();
        s.put_artifact(&sha, &module).unwrap();
        let key = InstanceKey::new("acme", "..");
        let mut kv = KvState::new();
        kv.insert("n".into(), vec![1, 2, 3]);
        s.save_state(&key, &kv).unwrap();

        // A second handle sees exactly what was written.
        let s2 = WorkloadStore::open(dir.path().join("monitors")).unwrap();
        assert_eq!(s2.load_assignments().unwrap(), Some(a));
        assert!(s2.has_artifact(&sha));
        assert_eq!(s2.artifacts().unwrap(), [sha.clone()].into());
        assert_eq!(s2.load_artifact(&sha).unwrap(), module);
        assert_eq!(s2.load_state(&key).unwrap(), kv);
        assert!(s2
            .load_state(&InstanceKey::new("acme", "m1"))
            .unwrap()
            .is_empty());
        // The odd name stayed inside the state directory.
        assert!(dir.path().join("monitors/state/acme@...kv").is_file());
        // With an origin (format SKV2), and the old format still read.
        let origin = StateOrigin {
            allocation: "a1".into(),
            token: 4,
            taken_ms: 77,
        };
        s2.save_state_from(&key, &kv, Some(&origin)).unwrap();
        assert_eq!(
            s2.load_state_with_origin(&key).unwrap(),
            (kv.clone(), Some(origin))
        );
        s2.save_state(&key, &kv).unwrap();
        assert_eq!(s2.load_state_with_origin(&key).unwrap(), (kv.clone(), None));
        s2.remove_state(&key).unwrap();
        assert!(s2.load_state(&key).unwrap().is_empty());
        assert_eq!(s2.retain_artifacts(&|_| false).unwrap(), 1);
        assert!(!s2.has_artifact(&sha));
    }

    /// Assignments, modules and kv state are 0600 in 0700 directories,
    /// from creation (the test runs under the default umask, not 077).
    #[test]
    fn files_and_directories_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("monitors");
        let s = WorkloadStore::open(&root).unwrap();
        let module = b"(module)".to_vec();
        let sha = sha256_hex(&module);
        s.save_assignments(&Assignments {
            version: 1,
            monitors: vec![spec("acme", "m1", &sha)],
            allocations: vec![],
        })
        .unwrap();
        s.put_artifact(&sha, &module).unwrap();
        let mut kv = KvState::new();
        kv.insert("n".into(), vec![1]);
        s.save_state(&InstanceKey::new("acme", "m1"), &kv).unwrap();
        let audit = strata_net::files::audit(&root).unwrap();
        assert_eq!(audit.checked.len(), 6, "{audit:?}");
        assert_eq!(audit.wrong, vec![], "{audit:?}");
    }

    #[test]
    fn corrupt_files_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let s = WorkloadStore::open(dir.path()).unwrap();
        // A torn assignments file.
        let a = Assignments {
            version: 1,
            monitors: vec![spec("acme", "m1", &"a".repeat(64))],
            allocations: vec![],
        };
        s.save_assignments(&a).unwrap();
        let p = dir.path().join(ASSIGNMENTS);
        let full = fs::read(&p).unwrap();
        fs::write(&p, &full[..full.len() / 2]).unwrap();
        let e = s.load_assignments().unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt { path, .. } if path == &p),
            "{e}"
        );

        // A module whose bytes changed on disk.
        let module = b"(module)".to_vec();
        let sha = sha256_hex(&module);
        s.put_artifact(&sha, &module).unwrap();
        fs::write(
            dir.path().join(format!("artifacts/{sha}.wasm")),
            b"(module )",
        )
        .unwrap();
        let e = s.load_artifact(&sha).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
        assert!(matches!(
            s.load_artifact(&"b".repeat(64)),
            Err(StoreError::MissingArtifact { .. })
        ));
        assert!(matches!(
            s.load_artifact("../../etc/passwd"),
            Err(StoreError::BadHash { .. })
        ));
        // Wrong bytes are never stored under a hash.
        assert!(s.put_artifact(&"c".repeat(64), &module).is_err());

        // A flipped bit in a state file.
        let key = InstanceKey::new("acme", "m1");
        let mut kv = KvState::new();
        kv.insert("k".into(), vec![9; 32]);
        s.save_state(&key, &kv).unwrap();
        let sp = dir.path().join("state/acme@m1.kv");
        let mut b = fs::read(&sp).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        fs::write(&sp, b).unwrap();
        assert!(matches!(
            s.load_state(&key),
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// Slot 0 of a sharded monitor and the unsharded instance share one
    /// state file (a monitor that becomes sharded keeps its state); other
    /// slots have their own.
    #[test]
    fn sharded_slots_keep_their_own_state_but_slot_0_is_the_unsharded_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = WorkloadStore::open(dir.path()).unwrap();
        let state = |v: u8| KvState::from([("r/d/m".to_owned(), vec![v])]);
        store
            .save_state(&InstanceKey::new("t", "m"), &state(1))
            .unwrap();
        store
            .save_state(&InstanceKey::sharded("t", "m", 2), &state(2))
            .unwrap();
        assert_eq!(
            store
                .load_state(&InstanceKey::sharded("t", "m", 0))
                .unwrap(),
            state(1)
        );
        assert_eq!(
            store
                .load_state(&InstanceKey::sharded("t", "m", 2))
                .unwrap(),
            state(2)
        );
        assert!(store
            .load_state(&InstanceKey::sharded("t", "m", 1))
            .unwrap()
            .is_empty());
        assert!(
            dir.path().join("state/t@m.kv").exists(),
            "the pre-sharding path"
        );
    }
}
