//! Atomic file replacement for everything the workload layer persists
//! (assignments, modules, kv state, compiled modules): a crash leaves the
//! old or the new content under the final name, never a mix or a prefix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use strata_net::files;

/// Writes `bytes` to `path` through a private (0600) temporary file: tmp +
/// fsync + rename + directory fsync. The temporary file is removed on
/// failure.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let r = (|| {
        let mut f = files::create_private(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert!(!p.with_extension("tmp").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A directory that does not exist: the error, and no temp file.
        let bad = dir.path().join("nope/f.bin");
        assert!(write_atomic(&bad, b"x").is_err());
    }
}
