//! Private files and directories: the one place every tier creates and
//! checks its data directories, data files and keys.
//!
//! - Directories are created 0700 and files 0600 *by the call that creates
//!   them* (the mode goes to mkdir(2) / open(2)), never chmodded afterwards:
//!   a chmod leaves a window in which the file is readable and can fail
//!   after the data is already written.
//! - An existing directory or key file that other users can read, write or
//!   enter (any group/other bit) is refused with an error that names the
//!   path and the command that fixes it. The process neither loosens nor
//!   tightens permissions it did not set: an operator may have given a
//!   backup group access on purpose, and a silent chmod would hide that the
//!   data was exposed until now (ssh refuses an unprotected key the same
//!   way).
//! - What is checked: each tier's data directory, any store directory
//!   configured outside it, and every private key. Directories inside a
//!   checked one are created 0700 by [`create_private_dir`] and not checked
//!   again, nor are files one by one: without search permission on the
//!   data directory nobody else can reach them. The PKI directory is only
//!   created 0700: it holds public certificates and keys that are each
//!   checked when loaded.
//! - [`restrict_umask`] sets the umask to 0o077 at the start of every
//!   binary, a belt for files that third-party code (raft-engine) creates
//!   with its own modes.
//!
//! Strata runs on Unix only (the stores use positional reads from
//! `std::os::unix`), so there is no fallback for other systems.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every directory Strata creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every data and key file Strata creates.
pub const FILE_MODE: u32 = 0o600;
/// Umask set at process start: no group or other bits on anything created.
pub const UMASK: u32 = 0o077;

/// Why a private file or directory could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The filesystem refused an operation.
    #[error("{path}: cannot {op}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was attempted ("create directory", "create file", …).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The path exists and other users can access it.
    #[error(
        "{path} is accessible to other users (mode {mode:04o}); refusing to use it. \
         Fix: chmod {} {path}",
        if *dir { "-R go-rwx" } else { "600" }
    )]
    TooOpen {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Whether it is a directory.
        dir: bool,
    },
    /// A directory was expected.
    #[error("{path} exists and is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
}

impl From<FilesError> for io::Error {
    /// For seams that speak `io::Error` and name the path themselves (the
    /// spool's filesystem trait, the monitor store): the kind is kept, and a
    /// refusal still says how to fix it.
    fn from(e: FilesError) -> io::Error {
        match e {
            FilesError::Io { op, source, .. } => {
                io::Error::new(source.kind(), format!("cannot {op}: {source}"))
            }
            e @ FilesError::TooOpen { .. } => io::Error::new(io::ErrorKind::PermissionDenied, e),
            e @ FilesError::NotADirectory { .. } => io::Error::new(io::ErrorKind::NotADirectory, e),
        }
    }
}

/// Creates `dir` and any missing parents with mode 0700; an existing
/// directory is left as it is (use it for directories inside a data
/// directory that [`ensure_private_dir`] checked).
pub fn create_private_dir(dir: &Path) -> Result<(), FilesError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| FilesError::Io {
            path: dir.to_owned(),
            op: "create directory",
            source,
        })
}

/// Creates `dir` and any missing parents with mode 0700, or checks that an
/// existing `dir` is a directory only its owner can access (a data
/// directory).
pub fn ensure_private_dir(dir: &Path) -> Result<(), FilesError> {
    create_private_dir(dir)?;
    let meta = std::fs::metadata(dir).map_err(|source| FilesError::Io {
        path: dir.to_owned(),
        op: "read the mode of",
        source,
    })?;
    if !meta.is_dir() {
        return Err(FilesError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    check_mode(dir, meta.permissions().mode(), true)
}

/// Checks that an existing file (a private key, say) is accessible to its
/// owner only.
pub fn check_private_file(path: &Path) -> Result<(), FilesError> {
    let meta = std::fs::metadata(path).map_err(|source| FilesError::Io {
        path: path.to_owned(),
        op: "read the mode of",
        source,
    })?;
    check_mode(path, meta.permissions().mode(), meta.is_dir())
}

fn check_mode(path: &Path, mode: u32, dir: bool) -> Result<(), FilesError> {
    let mode = mode & 0o7777;
    if mode & UMASK != 0 {
        return Err(FilesError::TooOpen {
            path: path.to_owned(),
            mode,
            dir,
        });
    }
    Ok(())
}

/// `OpenOptions` that create with mode 0600; add `write`, `append`,
/// `create`, `truncate` as needed. The mode applies only when the open
/// creates the file.
pub fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Creates (or truncates) `path` for writing, mode 0600 when new.
pub fn create_private(path: &Path) -> Result<File, FilesError> {
    private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|source| FilesError::Io {
            path: path.to_owned(),
            op: "create file",
            source,
        })
}

/// Like `std::fs::write`, but a new file is created 0600. Not synced.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), FilesError> {
    create_private(path)?
        .write_all(data)
        .map_err(|source| FilesError::Io {
            path: path.to_owned(),
            op: "write",
            source,
        })
}

/// Sets the process umask to 0o077 and returns the previous one. Call it
/// first thing in `main`, before any thread creates files.
pub fn restrict_umask() -> u32 {
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(UMASK as _));
    #[allow(clippy::useless_conversion)] // mode_t is u16 on some Unixes
    old.as_raw_mode().into()
}

/// What [`audit`] found under a directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Every path looked at (the root included), in walk order.
    pub checked: Vec<PathBuf>,
    /// Paths that are not a 0700 directory or a 0600 regular file, with
    /// their mode (symlinks, sockets and the like are listed too).
    pub wrong: Vec<(PathBuf, u32)>,
}

/// Walks `root` (not following symlinks) and lists every entry that is not
/// a 0700 directory or a 0600 file, for tests and operators checking a
/// data directory.
pub fn audit(root: &Path) -> io::Result<Audit> {
    let mut out = Audit::default();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p)?;
        let mode = meta.permissions().mode() & 0o7777;
        let ok = if meta.is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&p)?
                .map(|e| e.map(|e| e.path()))
                .collect::<io::Result<_>>()?;
            children.sort();
            stack.extend(children.into_iter().rev());
            mode == DIR_MODE
        } else {
            meta.is_file() && mode == FILE_MODE
        };
        if !ok {
            out.wrong.push((p.clone(), mode));
        }
        out.checked.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// One test owns the process umask (tests run on parallel threads).
    #[test]
    fn umask_and_modes_from_creation() {
        let old = restrict_umask();
        assert_eq!(
            restrict_umask(),
            UMASK,
            "restrict_umask returns the previous mask"
        );
        // A permissive umask would leave 0755 / 0644 with default modes.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        let tmp = tempfile::tempdir().unwrap();
        let nested = tmp.path().join("a/b/c");
        ensure_private_dir(&nested).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&tmp.path().join(d)), 0o700, "{d}");
        }
        let f = nested.join("data");
        write_private(&f, b"x").unwrap();
        assert_eq!(mode(&f), 0o600);
        let g = nested.join("log");
        private_options()
            .append(true)
            .create(true)
            .open(&g)
            .unwrap();
        assert_eq!(mode(&g), 0o600);
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(old as _));
        // Idempotent on a private directory.
        ensure_private_dir(&nested).unwrap();
        let a = audit(&tmp.path().join("a")).unwrap();
        assert_eq!(a.checked.len(), 5, "{a:?}");
        assert_eq!(a.wrong, vec![]);
        std::fs::write(nested.join("open"), "").unwrap();
        std::fs::set_permissions(nested.join("open"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let a = audit(&tmp.path().join("a")).unwrap();
        assert_eq!(a.wrong, vec![(nested.join("open"), 0o644)]);
    }

    #[test]
    fn open_dirs_and_keys_are_refused_naming_the_path_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("data");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = ensure_private_dir(&d).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(
            e,
            FilesError::TooOpen {
                mode: 0o755,
                dir: true,
                ..
            }
        ));
        assert!(msg.contains(&d.display().to_string()), "{msg}");
        assert!(msg.contains("chmod -R go-rwx"), "{msg}");
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::PermissionDenied);

        let k = tmp.path().join("node.key");
        std::fs::write(&k, "key").unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o640)).unwrap();
        let msg = check_private_file(&k).unwrap_err().to_string();
        assert!(
            msg.contains("mode 0640") && msg.contains("chmod 600"),
            "{msg}"
        );
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o400)).unwrap();
        check_private_file(&k).unwrap();

        let f = tmp.path().join("file");
        std::fs::write(&f, "").unwrap();
        assert!(matches!(
            ensure_private_dir(&f),
            Err(FilesError::Io { .. } | FilesError::NotADirectory { .. })
        ));
    }
}
