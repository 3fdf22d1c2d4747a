//! Reading and atomically replacing the credentials file (for `strata
//! device` and `strata up`). The file is created 0600 (with that mode from
//! the start, never chmodded later), in a 0700 directory when we create
//! the directory, and replaced by rename after an fsync, so the edge's
//! reload never reads half a file.

use std::io::Write;
use std::path::Path;

use super::credentials::CredentialsFile;
use super::CredentialsError;

/// Loads and validates `path`; a missing file is an empty one.
pub fn load(path: &Path) -> Result<CredentialsFile, CredentialsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => CredentialsFile::parse(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CredentialsFile::default()),
        Err(source) => Err(CredentialsError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Validates and writes `file` to `path` atomically.
pub fn save(path: &Path, file: &CredentialsFile) -> Result<(), CredentialsError> {
    let problems = file.problems();
    if !problems.is_empty() {
        return Err(CredentialsError::Invalid {
            path: path.display().to_string(),
            problems,
        });
    }
    write_private_atomic(path, file.render().as_bytes())
}

/// Writes `bytes` to `path` as a 0600 file via temp file, fsync and rename;
/// creates a missing parent directory 0700.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), CredentialsError> {
    let err = |p: &Path| {
        let p = p.display().to_string();
        move |source| CredentialsError::Write { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir).map_err(err(&dir))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "credentials".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err(path))
}

#[cfg(test)]
mod tests {
    use super::super::credentials::IdentityEntry;
    use super::*;

    #[test]
    fn save_creates_private_files_and_dirs_and_round_trips() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("new-dir/devices.toml");
        let mut f = load(&path).unwrap();
        assert!(f.identity.is_empty());
        f.add(IdentityEntry {
            username: "pump-1".into(),
            tenant: "acme".into(),
            devices: "pump-1".into(),
            password_hash: None,
            client_cert: true,
        })
        .unwrap();
        save(&path, &f).unwrap();
        assert_eq!(load(&path).unwrap(), f);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        // Replacing keeps 0600 and leaves no temp files behind.
        f.remove("pump-1").unwrap();
        save(&path, &f).unwrap();
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("devices.toml")]);
        assert!(matches!(
            f.remove("pump-1"),
            Err(CredentialsError::NotFound { .. })
        ));
    }
}
