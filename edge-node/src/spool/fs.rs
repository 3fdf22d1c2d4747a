//! The small filesystem surface the spool needs, and its real implementation.
//!
//! Everything the spool does to storage goes through [`SpoolFs`], so the
//! recovery, append, read and trim logic can run against [`super::MemFs`],
//! which models what survives a crash (synced bytes, directory entries made
//! durable by a directory fsync) and what does not.
//!
//! [`StdFs`] creates directories 0700 and files 0600, with the mode given
//! at creation (`strata_net::files`): segments hold device data.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strata_net::files;

/// Path-based file operations, in the vocabulary of an append-only log.
///
/// Durability contract (what [`super::MemFs`] models): data written by
/// `append`/`write` survives a crash only after `sync` on that file; a new
/// name (creation, `rename`) or a removal survives only after `sync_dir` on
/// its directory.
pub trait SpoolFs: Send + Sync + fmt::Debug + 'static {
    /// Creates `dir` and any missing parents, durably (parents are synced).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files directly inside `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Length of a file in bytes.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Reads into `buf` starting at `offset`; returns the bytes read, fewer
    /// than `buf.len()` only at end of file.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Appends `data` at the end of the file, creating it if missing.
    fn append(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Makes the file's data durable (fdatasync).
    fn sync(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals inside `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Deletes the file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Creates or replaces the file with exactly `data` (not synced).
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
}

/// Reads a whole (small) file.
pub fn read_all(fs: &dyn SpoolFs, path: &Path) -> io::Result<Vec<u8>> {
    let len = fs.len(path)?;
    let len = usize::try_from(len).map_err(|_| io::Error::other("file too large"))?;
    let mut buf = vec![0; len];
    let n = read_full(fs, path, 0, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// `read_at` until `buf` is full or the file ends; returns the bytes read.
pub fn read_full(fs: &dyn SpoolFs, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = fs.read_at(path, offset + done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// The real filesystem.
///
/// Keeps the file the writer appends to open between calls, so a group
/// commit costs one `write` and one `fdatasync`, not an `open` each time.
#[derive(Debug, Default)]
pub struct StdFs {
    append_handle: Mutex<Option<(PathBuf, File)>>,
}

impl StdFs {
    /// A new handle on the real filesystem.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_append_file<T>(
        &self,
        path: &Path,
        f: impl FnOnce(&mut File) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut guard = self.append_handle.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *guard {
            Some((p, file)) if p == path => f(file),
            slot => {
                let file = files::private_options()
                    .create(true)
                    .append(true)
                    .open(path)?;
                let (_, file) = slot.insert((path.to_owned(), file));
                f(file)
            }
        }
    }

    fn forget(&self, path: &Path) {
        let mut guard = self.append_handle.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_some_and(|(p, _)| p == path) {
            *guard = None;
        }
    }
}

impl SpoolFs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Remember which ancestors are new: their entries in their parents
        // must be synced, or a power loss could take the whole spool away.
        let mut created = Vec::new();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if d.as_os_str().is_empty() || d.exists() {
                break;
            }
            created.push(d.to_owned());
            cur = d.parent();
        }
        files::create_private_dir(dir)?;
        for d in created.iter().rev() {
            if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                self.sync_dir(parent)?;
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut done = 0;
        while done < buf.len() {
            match file.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn append(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.with_append_file(path, |f| f.write_all(data))
    }

    fn sync(&self, path: &Path) -> io::Result<()> {
        self.with_append_file(path, |f| f.sync_data())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            Ok(())
        }
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.forget(path);
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.forget(path);
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.forget(from);
        self.forget(to);
        std::fs::rename(from, to)
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.forget(path);
        Ok(files::write_private(path, data)?)
    }
}
