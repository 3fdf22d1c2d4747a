//! The manifest: the single source of truth of what a store holds durably.
//!
//! It names every live chunk file and pairs them with the Raft applied index
//! and the encoded region state they correspond to. It is replaced
//! atomically (temp file, fsync, rename, fsync directory), so after a crash
//! the store is exactly the last completed checkpoint; chunk files it does
//! not name are leftovers of an interrupted checkpoint and are deleted.
//!
//! ```text
//! "STMANIF2" | crc32 of body: u32 LE | body length: u64 LE | bincode Manifest
//! ```
//!
//! Version 2 added what retention dropped per tenant (so those counts are
//! exactly as durable as the files they describe). Version 1 ("STMANIF1",
//! without them) is still read; the counts then start at zero.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use bincode::{Decode, Encode};

use super::retention::DurableCounts;
use super::StoreError;

const MAGIC: &[u8; 8] = b"STMANIF2";
const MAGIC_V1: &[u8; 8] = b"STMANIF1";
/// The manifest's file name.
pub(super) const MANIFEST: &str = "MANIFEST";
/// Temporary name while a new manifest is written.
pub(super) const MANIFEST_TMP: &str = "MANIFEST.tmp";
/// Largest manifest accepted (2 GiB): the region state can be large, but a
/// corrupt length must not allocate without bound.
const MAX_MANIFEST_BYTES: usize = 2 << 30;

/// One live chunk file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub(super) struct FileMeta {
    pub id: u64,
    pub partition: i64,
    pub bytes: u64,
}

/// Durable store contents.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(super) struct Manifest {
    pub applied_index: u64,
    pub fsm_state: Vec<u8>,
    pub partition_ms: u64,
    pub next_file_id: u64,
    pub files: Vec<FileMeta>,
    /// What retention dropped, per tenant, up to `applied_index`.
    pub retention_dropped: DurableCounts,
}

/// Version 1 layout: frozen, never edit.
#[derive(Decode)]
struct ManifestV1 {
    applied_index: u64,
    fsm_state: Vec<u8>,
    partition_ms: u64,
    next_file_id: u64,
    files: Vec<FileMeta>,
}

fn corrupt(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the manifest in `dir`; `None` when there is none (a new store).
pub(super) fn read(dir: &Path) -> Result<Option<Manifest>, StoreError> {
    let path = dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    if bytes.len() < 20 || (&bytes[..8] != MAGIC && &bytes[..8] != MAGIC_V1) {
        return Err(corrupt(
            &path,
            "not a store manifest (bad magic or too short)",
        ));
    }
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(len8);
    let body = &bytes[20..];
    if body.len() as u64 != len {
        return Err(corrupt(
            &path,
            format!("body is {} bytes, header says {len}", body.len()),
        ));
    }
    if crc32fast::hash(body) != crc {
        return Err(corrupt(&path, "checksum mismatch"));
    }
    if &bytes[..8] == MAGIC_V1 {
        let m: ManifestV1 = decode_exact(&path, body)?;
        return Ok(Some(Manifest {
            applied_index: m.applied_index,
            fsm_state: m.fsm_state,
            partition_ms: m.partition_ms,
            next_file_id: m.next_file_id,
            files: m.files,
            retention_dropped: Vec::new(),
        }));
    }
    decode_exact(&path, body).map(Some)
}

fn decode_exact<T: Decode<()>>(path: &Path, body: &[u8]) -> Result<T, StoreError> {
    let cfg = bincode::config::standard().with_limit::<MAX_MANIFEST_BYTES>();
    let (m, used): (T, usize) =
        bincode::decode_from_slice(body, cfg).map_err(|e| corrupt(path, e.to_string()))?;
    if used != body.len() {
        return Err(corrupt(path, "trailing bytes"));
    }
    Ok(m)
}

/// fsyncs a directory so renames and new entries in it are durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Atomically replaces the manifest in `dir`.
pub(super) fn write(dir: &Path, m: &Manifest) -> Result<(), StoreError> {
    let body = bincode::encode_to_vec(m, bincode::config::standard()).unwrap_or_default();
    let mut bytes = Vec::with_capacity(body.len() + 20);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&body);
    let tmp: PathBuf = dir.join(MANIFEST_TMP);
    {
        let mut f = strata_net::files::create_private(&tmp).map_err(|e| io(&tmp)(e.into()))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    let path = dir.join(MANIFEST);
    fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use crate::store::tests::{cfg, rec};
    use crate::store::TelemetryStore;

    /// Every file the store writes (chunks, the manifest; its temporary
    /// file is renamed into place) is 0600 and its directory 0700, from
    /// creation: the test runs under the default umask, not 077.
    #[test]
    fn store_files_are_private_from_creation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (mut store, _) = TelemetryStore::open(cfg(&dir, 1000)).unwrap();
        let recs: Vec<_> = (0..20)
            .map(|i| rec("d", i * 500, &[("t", i as f64)]))
            .collect();
        store.insert(&recs);
        store.checkpoint(1, b"fsm").unwrap();
        store.insert(&recs[..3]);
        store.checkpoint(2, b"fsm").unwrap();
        let audit = strata_net::files::audit(&dir).unwrap();
        assert!(audit.checked.len() > 5, "{audit:?}");
        assert_eq!(audit.wrong, vec![], "{audit:?}");
    }
}
