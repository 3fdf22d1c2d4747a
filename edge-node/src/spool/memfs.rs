//! An in-memory [`SpoolFs`] that models crashes.
//!
//! Each file tracks how much of it is synced; each directory entry tracks
//! whether it was made durable by a directory sync. [`MemFs::crash`] returns
//! the disk image a power loss could leave behind: durable names only, and
//! for each file its synced bytes plus a seeded-random prefix of the unsynced
//! ones, sometimes with garbage after them (a torn write). The crashed
//! instance refuses every later operation, as a dead process would.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::fs::SpoolFs;

#[derive(Debug, Clone, Default)]
struct MemFile {
    data: Vec<u8>,
    /// Bytes `[..synced]` survive a crash.
    synced: usize,
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<u64, MemFile>,
    /// Names as the running process sees them.
    live: BTreeMap<PathBuf, u64>,
    /// Names that survive a crash.
    durable: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    next_id: u64,
    /// fsyncs of files and directories.
    syncs: u64,
    /// Mutating operations performed so far.
    ops: u64,
    /// Bytes returned by `read_at` so far.
    bytes_read: u64,
    /// Refuse mutating operation number `crash_at` and everything after.
    crash_at: Option<u64>,
    crashed: bool,
}

/// In-memory filesystem with crash simulation; see the module docs.
#[derive(Debug, Default)]
pub struct MemFs {
    state: Mutex<State>,
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash: this filesystem instance is dead")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl State {
    fn check_alive(&self) -> io::Result<()> {
        if self.crashed {
            Err(crashed())
        } else {
            Ok(())
        }
    }

    /// Counts a mutating operation, dying instead when the armed crash
    /// point is reached.
    fn mutate(&mut self) -> io::Result<()> {
        self.check_alive()?;
        if self.crash_at.is_some_and(|at| self.ops >= at) {
            self.crashed = true;
            return Err(crashed());
        }
        self.ops += 1;
        Ok(())
    }

    fn file(&self, path: &Path) -> io::Result<&MemFile> {
        self.live
            .get(path)
            .and_then(|id| self.files.get(id))
            .ok_or_else(|| not_found(path))
    }

    fn file_mut(&mut self, path: &Path) -> io::Result<&mut MemFile> {
        let id = *self.live.get(path).ok_or_else(|| not_found(path))?;
        self.files.get_mut(&id).ok_or_else(|| not_found(path))
    }

    fn create(&mut self, path: &Path) -> io::Result<u64> {
        let dir = path.parent().unwrap_or(Path::new(""));
        if !self.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(id, MemFile::default());
        self.live.insert(path.to_owned(), id);
        Ok(id)
    }
}

impl MemFs {
    /// An empty filesystem.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// File and directory fsyncs performed so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Bytes returned by `read_at` so far.
    pub fn bytes_read(&self) -> u64 {
        self.lock().bytes_read
    }

    /// Mutating operations performed so far.
    pub fn op_count(&self) -> u64 {
        self.lock().ops
    }

    /// Arms a crash: the next `n` mutating operations succeed, the one after
    /// fails and the instance is dead from then on.
    pub fn crash_after_ops(&self, n: u64) {
        let mut s = self.lock();
        s.crash_at = Some(s.ops + n);
    }

    /// True once the instance has died.
    pub fn is_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Kills this instance (if the armed crash did not already) and returns
    /// the disk image a power loss at this moment could leave behind; which
    /// one is chosen by `seed`.
    pub fn crash(&self, seed: u64) -> MemFs {
        let mut s = self.lock();
        s.crashed = true;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut image = State {
            dirs: s.dirs.clone(),
            next_id: s.next_id,
            ..State::default()
        };
        for (path, id) in &s.durable {
            let Some(f) = s.files.get(id) else { continue };
            let mut data = f.data[..f.synced].to_vec();
            let unsynced = &f.data[f.synced..];
            if !unsynced.is_empty() {
                // Some prefix of what was written reached the disk…
                let keep = rng.gen_range(0..=unsynced.len());
                data.extend_from_slice(&unsynced[..keep]);
                // …and a torn sector may follow it with junk.
                if rng.gen_bool(0.3) {
                    let junk = rng.gen_range(1..=64);
                    data.extend((0..junk).map(|_| rng.gen::<u8>()));
                }
            }
            let synced = data.len();
            image.files.insert(*id, MemFile { data, synced });
            image.live.insert(path.clone(), *id);
            image.durable.insert(path.clone(), *id);
        }
        MemFs {
            state: Mutex::new(image),
        }
    }

    /// Test helper: the current contents of a file.
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.lock().file(path)?.data.clone())
    }

    /// Test helper: replaces a file's contents, durably (simulates damage
    /// done behind the spool's back).
    pub fn set_contents(&self, path: &Path, data: Vec<u8>) -> io::Result<()> {
        let mut s = self.lock();
        let f = s.file_mut(path)?;
        f.synced = data.len();
        f.data = data;
        Ok(())
    }
}

impl SpoolFs for MemFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.check_alive()?;
        // Directories are modelled as always durable: the spool syncs their
        // parents on creation, and nothing here removes them.
        for d in dir.ancestors() {
            s.dirs.insert(d.to_owned());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        s.check_alive()?;
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(s.live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        let s = self.lock();
        s.check_alive()?;
        Ok(s.file(path)?.data.len() as u64)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.lock();
        s.check_alive()?;
        let data = &s.file(path)?.data;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        s.bytes_read += n as u64;
        Ok(n)
    }

    fn append(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        s.mutate()?;
        if !s.live.contains_key(path) {
            s.create(path)?;
        }
        s.file_mut(path)?.data.extend_from_slice(data);
        Ok(())
    }

    fn sync(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.mutate()?;
        s.syncs += 1;
        let f = s.file_mut(path)?;
        f.synced = f.data.len();
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.mutate()?;
        s.syncs += 1;
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        s.durable.retain(|p, _| !in_dir(p));
        let live: Vec<_> = s
            .live
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        s.durable.extend(live);
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = self.lock();
        s.mutate()?;
        let f = s.file_mut(path)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len < f.data.len() {
            f.data.truncate(len);
            f.synced = f.synced.min(len);
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.mutate()?;
        // The file's bytes stay reachable through `durable` until the
        // directory is synced, as on a real disk.
        s.live
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.mutate()?;
        let id = s.live.remove(from).ok_or_else(|| not_found(from))?;
        s.live.insert(to.to_owned(), id);
        Ok(())
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        s.mutate()?;
        // A fresh inode, like write-to-new-file: the old contents stay
        // under the durable name until a directory sync.
        s.create(path)?;
        s.file_mut(path)?.data = data.to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_data_and_durable_names_only() {
        let fs = MemFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let a = dir.join("a");
        let b = dir.join("b");
        fs.append(&a, b"synced").unwrap();
        fs.sync(&a).unwrap();
        fs.sync_dir(dir).unwrap();
        fs.append(&a, b"-unsynced").unwrap();
        fs.append(&b, b"never named durably").unwrap();
        fs.sync(&b).unwrap();
        for seed in 0..50 {
            let img = fs.crash(seed);
            let data = img.contents(&a).unwrap();
            assert!(data.starts_with(b"synced"), "seed {seed}");
            assert!(
                img.contents(&b).is_err(),
                "seed {seed}: b was never dir-synced"
            );
        }
        assert!(fs.append(&a, b"x").is_err(), "crashed instance is dead");
    }

    #[test]
    fn armed_crash_fails_the_nth_op() {
        let fs = MemFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        fs.crash_after_ops(2);
        fs.append(Path::new("/d/a"), b"1").unwrap();
        fs.append(Path::new("/d/a"), b"2").unwrap();
        assert!(fs.append(Path::new("/d/a"), b"3").is_err());
        assert!(fs.is_crashed());
    }

    #[test]
    fn unsynced_rename_reverts() {
        let fs = MemFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        fs.write(&dir.join("m"), b"old").unwrap();
        fs.sync(&dir.join("m")).unwrap();
        fs.sync_dir(dir).unwrap();
        fs.write(&dir.join("m.tmp"), b"new").unwrap();
        fs.sync(&dir.join("m.tmp")).unwrap();
        fs.rename(&dir.join("m.tmp"), &dir.join("m")).unwrap();
        assert_eq!(fs.contents(&dir.join("m")).unwrap(), b"new");
        assert_eq!(fs.crash(1).contents(&dir.join("m")).unwrap(), b"old");
    }
}
