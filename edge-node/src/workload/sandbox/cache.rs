//! The compiled-module disk cache: a driver's compiled form of each module,
//! kept under `<data-dir>/monitors/cache/` so a reboot with many modules
//! starts them without compiling again.
//!
//! ```text
//! cache/<module sha256>-<engine fingerprint>.cwasm
//!   "SCWASM\0\x01"            magic + format version (8 bytes)
//!   module sha256             32 bytes: the wasm module this was compiled from
//!   engine fingerprint        16 bytes: ASCII hex, the compiler's compatibility hash
//!   payload length            u64 LE
//!   payload sha256            32 bytes
//!   payload                   the driver's serialized compiled module
//! ```
//!
//! Loading a compiled form is trusting native code, so a file is only ever
//! handed to a driver as a [`VerifiedCompiled`], which only [`DiskCache::get`]
//! makes, and only after every check below passed on the very bytes it
//! returns (no second read a writer could race):
//! - the file lies in a directory this process created 0700 and is itself
//!   accessible to its owner only (0600): nobody else can have written it;
//! - files are written whole through a temporary file and a rename
//!   ([`write_atomic`]), so a crash cannot leave a torn file under the name;
//! - the header names the module's sha256 and the engine fingerprint asked
//!   for (the fingerprint is the compiler's own compatibility hash, so a new
//!   wasmtime version or engine setting never reads an old file), and the
//!   payload has exactly the recorded length and sha256, so truncation and
//!   corruption are caught.
//!
//! Anything that fails a check is deleted and reported as
//! [`Lookup::Discarded`]; the caller recompiles from the module and writes
//! a fresh file. Files of other fingerprints (an older wasmtime) are swept
//! when the cache opens.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use strata_net::files;

use super::sha256_hex;
use crate::workload::atomic_file::write_atomic;

const MAGIC: &[u8; 8] = b"SCWASM\0\x01";
/// Length of the engine fingerprint, ASCII hex digits.
pub const FINGERPRINT_LEN: usize = 16;
const HEADER_LEN: usize = 8 + 32 + FINGERPRINT_LEN + 8 + 32;
const SUFFIX: &str = ".cwasm";

/// Why the cache could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The filesystem refused.
    #[error("compiled-module cache {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A fingerprint or hash that cannot name a cache file.
    #[error("compiled-module cache: {what} {value:?} is not lowercase hex of the right length")]
    BadName {
        /// "module sha256" or "engine fingerprint".
        what: &'static str,
        /// The offending text.
        value: String,
    },
}

/// A compiled form that passed every check of [`DiskCache::get`]. Only this
/// module can make one, so holding one is proof of verification.
#[derive(Debug)]
pub struct VerifiedCompiled {
    sha256: String,
    payload: Vec<u8>,
}

impl VerifiedCompiled {
    /// The module the payload was compiled from.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The driver's serialized compiled module, exactly as it was written.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// What [`DiskCache::get`] found.
#[derive(Debug)]
pub enum Lookup {
    /// A verified compiled form.
    Hit(VerifiedCompiled),
    /// Nothing cached for this module and engine.
    Miss,
    /// A file was there but failed a check; it was deleted.
    Discarded {
        /// Which check, with the numbers.
        reason: String,
    },
}

/// The cache directory of one engine configuration.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    fingerprint: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl DiskCache {
    /// Opens (creating 0700) the cache at `dir` for compiled forms of
    /// `fingerprint` (16 lowercase hex digits), and deletes files of other
    /// fingerprints and leftovers of interrupted writes.
    pub fn open(dir: impl Into<PathBuf>, fingerprint: &str) -> Result<Self, CacheError> {
        let dir = dir.into();
        if !is_hex(fingerprint, FINGERPRINT_LEN) {
            return Err(CacheError::BadName {
                what: "engine fingerprint",
                value: fingerprint.to_owned(),
            });
        }
        files::create_private_dir(&dir).map_err(|e| CacheError::Io {
            path: dir.clone(),
            source: e.into(),
        })?;
        let cache = DiskCache {
            dir,
            fingerprint: fingerprint.to_owned(),
        };
        cache.sweep(&|name| name.ends_with(&format!("-{fingerprint}{SUFFIX}")))?;
        Ok(cache)
    }

    /// The engine fingerprint this cache serves.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The file that holds (or would hold) `sha256`'s compiled form.
    pub fn path(&self, sha256: &str) -> Result<PathBuf, CacheError> {
        if !is_hex(sha256, 64) {
            return Err(CacheError::BadName {
                what: "module sha256",
                value: sha256.to_owned(),
            });
        }
        Ok(self
            .dir
            .join(format!("{sha256}-{}{SUFFIX}", self.fingerprint)))
    }

    /// Looks up and verifies the compiled form of `sha256`.
    pub fn get(&self, sha256: &str) -> Lookup {
        let path = match self.path(sha256) {
            Ok(p) => p,
            Err(e) => {
                return Lookup::Discarded {
                    reason: e.to_string(),
                }
            }
        };
        let read = fs::File::open(&path).and_then(|mut f| {
            let mode = f.metadata()?.permissions().mode() & 0o7777;
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut f, &mut bytes)?;
            Ok((mode, bytes))
        });
        let (mode, bytes) = match read {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => {
                return self.discard(&path, format!("unreadable: {e}"));
            }
        };
        match verify(&bytes, mode, sha256, &self.fingerprint) {
            Ok(payload_at) => {
                let mut payload = bytes;
                payload.drain(..payload_at);
                Lookup::Hit(VerifiedCompiled {
                    sha256: sha256.to_owned(),
                    payload,
                })
            }
            Err(reason) => self.discard(&path, reason),
        }
    }

    /// Deletes a cache file a driver could not load after all (its own
    /// compatibility check refused it); returns the reason with the path.
    pub fn reject(&self, sha256: &str, reason: &str) -> String {
        match self.path(sha256) {
            Ok(p) => remove_bad(&p, reason),
            Err(e) => e.to_string(),
        }
    }

    fn discard(&self, path: &Path, reason: String) -> Lookup {
        Lookup::Discarded {
            reason: remove_bad(path, &reason),
        }
    }

    /// Writes `sha256`'s compiled form atomically (0600).
    pub fn put(&self, sha256: &str, payload: &[u8]) -> Result<(), CacheError> {
        let path = self.path(sha256)?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&hex_bytes(sha256));
        bytes.extend_from_slice(self.fingerprint.as_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&hex_bytes(&sha256_hex(payload)));
        bytes.extend_from_slice(payload);
        write_atomic(&path, &bytes).map_err(|source| CacheError::Io { path, source })
    }

    /// Deletes the compiled forms of modules `keep` rejects. Returns how
    /// many were deleted.
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) -> Result<usize, CacheError> {
        let fp = format!("-{}{SUFFIX}", self.fingerprint);
        self.sweep(&|name| name.strip_suffix(&fp).is_some_and(keep))
    }

    /// Deletes every entry whose file name `keep` rejects.
    fn sweep(&self, keep: &dyn Fn(&str) -> bool) -> Result<usize, CacheError> {
        let io_err = |source| CacheError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            let keep_it = name.to_str().is_some_and(keep);
            if !keep_it {
                let p = entry.path();
                fs::remove_file(&p).map_err(|source| CacheError::Io { path: p, source })?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Deletes a file that failed a check; returns the reason with its path.
fn remove_bad(path: &Path, reason: &str) -> String {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a bad compiled-module cache file");
        }
    }
    format!("{}: {reason}", path.display())
}

/// Checks a cache file's bytes; returns where the payload starts.
fn verify(bytes: &[u8], mode: u32, sha256: &str, fingerprint: &str) -> Result<usize, String> {
    if mode & files::UMASK != 0 {
        return Err(format!(
            "mode {mode:04o} lets other users at it; only 0600 files are loaded"
        ));
    }
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "truncated: {} bytes, the header alone is {HEADER_LEN}",
            bytes.len()
        ));
    }
    let (magic, rest) = bytes.split_at(8);
    if magic != MAGIC {
        return Err("not a compiled-module cache file of this format".to_owned());
    }
    let (module, rest) = rest.split_at(32);
    if module != hex_bytes(sha256).as_slice() {
        return Err(format!("compiled from another module than {sha256}"));
    }
    let (fp, rest) = rest.split_at(FINGERPRINT_LEN);
    if fp != fingerprint.as_bytes() {
        return Err(format!(
            "compiled by engine {}, this engine is {fingerprint}",
            String::from_utf8_lossy(fp)
        ));
    }
    let (len, rest) = rest.split_at(8);
    let mut l = [0u8; 8];
    l.copy_from_slice(len);
    let want_len = u64::from_le_bytes(l);
    let (digest, payload) = rest.split_at(32);
    if payload.len() as u64 != want_len {
        return Err(format!(
            "payload is {} bytes, the header says {want_len} (truncated or extended)",
            payload.len()
        ));
    }
    let actual = sha256_hex(payload);
    if digest != hex_bytes(&actual).as_slice() {
        return Err(format!(
            "payload hashes to {actual}, not to the recorded digest"
        ));
    }
    Ok(HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "0123456789abcdef";

    fn sha(b: &[u8]) -> String {
        sha256_hex(b)
    }

    #[test]
    fn round_trip_and_every_bad_file_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path().join("cache"), FP).unwrap();
        let m = sha(b"module");
        assert!(matches!(c.get(&m), Lookup::Miss));
        c.put(&m, b"compiled code").unwrap();
        match c.get(&m) {
            Lookup::Hit(v) => {
                assert_eq!(v.payload(), b"compiled code");
                assert_eq!(v.sha256(), m);
            }
            other => panic!("{other:?}"),
        }
        let path = c.path(&m).unwrap();
        let good = fs::read(&path).unwrap();

        // (case, how the file is spoiled, expected reason fragment)
        type Spoil = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Spoil, &str)> = vec![
            (
                "flipped payload bit",
                Box::new(|b| *b.last_mut().unwrap() ^= 1),
                "hashes to",
            ),
            (
                "truncated payload",
                Box::new(|b| b.truncate(b.len() - 3)),
                "truncated or extended",
            ),
            (
                "truncated header",
                Box::new(|b| b.truncate(20)),
                "truncated: 20 bytes",
            ),
            ("extended", Box::new(|b| b.push(0)), "truncated or extended"),
            (
                "other format",
                Box::new(|b| b[0] = b'X'),
                "not a compiled-module cache file",
            ),
            ("other module", Box::new(|b| b[8] ^= 0xff), "another module"),
            (
                "other engine",
                Box::new(|b| b[40..56].copy_from_slice(b"fedcba9876543210")),
                "compiled by engine fedcba9876543210",
            ),
        ];
        for (name, spoil, want) in cases {
            let mut b = good.clone();
            spoil(&mut b);
            files::write_private(&path, &b).unwrap();
            match c.get(&m) {
                Lookup::Discarded { reason } => assert!(reason.contains(want), "{name}: {reason}"),
                other => panic!("{name}: {other:?}"),
            }
            assert!(!path.exists(), "{name}: bad file left in place");
            assert!(matches!(c.get(&m), Lookup::Miss), "{name}");
        }

        // A file others may write is never loaded, whatever it holds.
        c.put(&m, b"compiled code").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        match c.get(&m) {
            Lookup::Discarded { reason } => assert!(reason.contains("0666"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn open_sweeps_other_engines_and_retain_keeps_wanted_modules() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let old = DiskCache::open(&root, "ffffffffffffffff").unwrap();
        let (a, b) = (sha(b"a"), sha(b"b"));
        old.put(&a, b"old engine").unwrap();
        fs::write(root.join("junk.tmp"), b"torn").unwrap();
        let c = DiskCache::open(&root, FP).unwrap();
        assert_eq!(
            fs::read_dir(&root).unwrap().count(),
            0,
            "old engine's files swept"
        );
        c.put(&a, b"x").unwrap();
        c.put(&b, b"y").unwrap();
        assert_eq!(c.retain(&|s| s == a).unwrap(), 1);
        assert!(matches!(c.get(&a), Lookup::Hit(_)));
        assert!(matches!(c.get(&b), Lookup::Miss));
        let audit = files::audit(&root).unwrap();
        assert_eq!(audit.wrong, vec![], "{audit:?}");
        assert!(DiskCache::open(&root, "short").is_err());
        assert!(matches!(c.get("../x"), Lookup::Discarded { .. }));
    }
}
