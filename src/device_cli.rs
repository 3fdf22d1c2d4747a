//! `strata device add|list|remove`: manage the device credentials file an
//! edge hot-reloads (see docs/config/devices.toml). Every change validates
//! the whole file and replaces it atomically (0600, temp file + fsync +
//! rename), so a running edge never reads half a file; a removed identity's
//! connections are closed at the edge's next reload.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use edge_node::ingress::auth::credentials::{hash_password, IdentityEntry};
use edge_node::ingress::auth::file;
use rand::Rng;

/// The file `strata up`'s edges use with the default data directory.
pub const DEFAULT_FILE: &str = "strata-data/devices.toml";

/// `strata device …`.
#[derive(Debug, clap::Subcommand)]
pub enum DeviceCmd {
    /// Add an identity: a username bound to a tenant and a device glob.
    Add(AddArgs),
    /// List identities (never passwords: only hashes are stored).
    List {
        /// The credentials file.
        #[arg(long, default_value = DEFAULT_FILE)]
        file: PathBuf,
    },
    /// Remove (revoke) an identity; edges disconnect it within seconds.
    Remove {
        /// The credentials file.
        #[arg(long, default_value = DEFAULT_FILE)]
        file: PathBuf,
        /// The identity to remove.
        #[arg(long)]
        username: String,
    },
}

/// `strata device add` options.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The credentials file (created 0600 if missing).
    #[arg(long, default_value = DEFAULT_FILE)]
    pub file: PathBuf,
    /// MQTT username (and client-certificate CN).
    #[arg(long)]
    pub username: String,
    /// The tenant it publishes and subscribes in.
    #[arg(long)]
    pub tenant: String,
    /// Glob of device names it may publish as, e.g. '*' or 'pump-*'.
    #[arg(long)]
    pub devices: String,
    /// Read the password from the first line of stdin instead of
    /// generating one.
    #[arg(long, conflicts_with = "no_password")]
    pub password_stdin: bool,
    /// Also accept a TLS client certificate whose CN is the username.
    #[arg(long)]
    pub client_cert: bool,
    /// No password login (certificate only; needs --client-cert).
    #[arg(long, requires = "client_cert")]
    pub no_password: bool,
}

/// Length of a generated password: 24 of 62 symbols ≈ 143 bits.
const GENERATED_LEN: usize = 24;

/// A random password from the OS RNG.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..GENERATED_LEN)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Adds `username` with `password` (hashed) to `path`.
pub fn add_identity(
    path: &Path,
    entry_without_hash: IdentityEntry,
    password: Option<&str>,
) -> anyhow::Result<()> {
    let mut f = file::load(path)?;
    let mut entry = entry_without_hash;
    if let Some(p) = password {
        entry.password_hash = Some(hash_password(p.as_bytes())?);
    }
    f.add(entry)?;
    file::save(path, &f)?;
    Ok(())
}

fn read_password_line() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Password (one line):");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let p = line.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!p.is_empty(), "the password read from stdin is empty");
    Ok(p)
}

fn add(a: AddArgs) -> anyhow::Result<()> {
    let (password, generated) = match (a.no_password, a.password_stdin) {
        (true, _) => (None, false),
        (false, true) => (Some(read_password_line()?), false),
        (false, false) => (Some(generate_password()), true),
    };
    let entry = IdentityEntry {
        username: a.username.clone(),
        tenant: a.tenant.clone(),
        devices: a.devices.clone(),
        password_hash: None,
        client_cert: a.client_cert,
    };
    add_identity(&a.file, entry, password.as_deref())?;
    println!(
        "Added {:?}: tenant {:?}, devices {:?}{} to {}.",
        a.username,
        a.tenant,
        a.devices,
        if a.client_cert {
            ", client certificate with this CN accepted"
        } else {
            ""
        },
        a.file.display()
    );
    if let (true, Some(p)) = (generated, &password) {
        println!("Password (shown only now; the file keeps only its hash): {p}");
    }
    Ok(())
}

fn list(path: &Path) -> anyhow::Result<()> {
    let f = file::load(path)?;
    if f.identity.is_empty() {
        println!("No identities in {}.", path.display());
        return Ok(());
    }
    let w = |get: fn(&IdentityEntry) -> &str, title: &str| {
        f.identity
            .iter()
            .map(|e| get(e).chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let (wu, wt, wd) = (
        w(|e| &e.username, "USERNAME"),
        w(|e| &e.tenant, "TENANT"),
        w(|e| &e.devices, "DEVICES"),
    );
    println!(
        "{:wu$}  {:wt$}  {:wd$}  LOGIN",
        "USERNAME", "TENANT", "DEVICES"
    );
    for e in &f.identity {
        let login = match (e.password_hash.is_some(), e.client_cert) {
            (true, true) => "password, certificate",
            (true, false) => "password",
            (false, _) => "certificate",
        };
        println!(
            "{:wu$}  {:wt$}  {:wd$}  {login}",
            e.username, e.tenant, e.devices
        );
    }
    Ok(())
}

fn remove(path: &Path, username: &str) -> anyhow::Result<()> {
    let mut f = file::load(path)?;
    f.remove(username)?;
    file::save(path, &f)?;
    println!(
        "Removed {username:?} from {}; edges reading it disconnect it at their next reload.",
        path.display()
    );
    Ok(())
}

/// Runs a `strata device` command. Exit code 1 on any error (the message
/// names the file and entry).
pub fn device(cmd: DeviceCmd) -> ExitCode {
    let r = match cmd {
        DeviceCmd::Add(a) => add(a),
        DeviceCmd::List { file } => list(&file),
        DeviceCmd::Remove { file, username } => remove(&file, &username),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The demo fleet's login that `strata up` creates and prints.
#[derive(Debug, Clone)]
pub struct DemoLogin {
    /// Username (`demo-fleet`).
    pub username: String,
    /// Its password, kept 0600 beside the credentials file.
    pub password: String,
    /// The credentials file every edge of `strata up` reads.
    pub file: PathBuf,
}

/// Username of `strata up`'s simulated fleet.
pub const DEMO_USERNAME: &str = "demo-fleet";

/// Creates `strata up`'s demo identity on first start (tenant `tenant`,
/// every device; hashed in `<data-dir>/devices.toml`, the password in
/// `<data-dir>/demo-fleet.password`, 0600) and returns it; later starts
/// read the password back so the banner can print it again. A demo
/// identity an operator removed stays removed (the simulator is then
/// refused, and says so).
pub fn ensure_demo_identity(data_dir: &Path, tenant: &str) -> anyhow::Result<DemoLogin> {
    let file_path = data_dir.join("devices.toml");
    let pw_path = data_dir.join(format!("{DEMO_USERNAME}.password"));
    let login = |password: String| DemoLogin {
        username: DEMO_USERNAME.into(),
        password,
        file: file_path.clone(),
    };
    match std::fs::read_to_string(&pw_path) {
        Ok(text) => {
            let password = text.lines().next().unwrap_or_default().to_owned();
            anyhow::ensure!(!password.is_empty(), "{} is empty", pw_path.display());
            if !file::load(&file_path)?
                .identity
                .iter()
                .any(|e| e.username == DEMO_USERNAME)
            {
                tracing::warn!(
                    file = %file_path.display(),
                    "the demo identity {DEMO_USERNAME:?} was removed; the simulated fleet will be refused"
                );
            }
            return Ok(login(password));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("reading {}: {e}", pw_path.display()),
    }
    let password = generate_password();
    let mut f = file::load(&file_path)?;
    let _ = f.remove(DEMO_USERNAME); // a stale entry whose password was lost
    f.add(IdentityEntry {
        username: DEMO_USERNAME.into(),
        tenant: tenant.into(),
        devices: "*".into(),
        password_hash: Some(hash_password(password.as_bytes())?),
        client_cert: false,
    })?;
    file::save(&file_path, &f)?;
    file::write_private_atomic(&pw_path, format!("{password}\n").as_bytes())?;
    Ok(login(password))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_node::ingress::auth::Credentials;

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let a = generate_password();
        assert_eq!(a.len(), GENERATED_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, generate_password());
    }

    #[test]
    fn add_then_remove_round_trips_and_the_password_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/devices.toml");
        let entry = IdentityEntry {
            username: "pump-7".into(),
            tenant: "acme".into(),
            devices: "pump-7".into(),
            password_hash: None,
            client_cert: false,
        };
        add_identity(&path, entry.clone(), Some("pw-123")).unwrap();
        let err = add_identity(&path, entry, Some("again")).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("pw-123"), "only the hash is stored");
        let c = Credentials::parse(&text, "f", 1).unwrap();
        assert!(c.get("pump-7").unwrap().verify_password(b"pw-123"));
        remove(&path, "pump-7").unwrap();
        assert!(file::load(&path).unwrap().identity.is_empty());
        assert!(remove(&path, "pump-7").is_err());
    }

    #[test]
    fn invalid_entries_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.toml");
        let bad = IdentityEntry {
            username: "x".into(),
            tenant: "not a tenant".into(),
            devices: "[".into(),
            password_hash: None,
            client_cert: false,
        };
        let err = add_identity(&path, bad, Some("p")).unwrap_err().to_string();
        assert!(err.contains("identity[0] \"x\": tenant"), "{err}");
        assert!(err.contains("devices"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn the_demo_identity_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_demo_identity(dir.path(), "demo").unwrap();
        let again = ensure_demo_identity(dir.path(), "demo").unwrap();
        assert_eq!(first.password, again.password);
        let text = std::fs::read_to_string(&first.file).unwrap();
        let c = Credentials::parse(&text, "f", 1).unwrap();
        let id = c.get(DEMO_USERNAME).unwrap();
        assert_eq!(&*id.tenant, "demo");
        assert!(id.may_be("dev-999"));
        assert!(id.verify_password(first.password.as_bytes()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let pw = dir.path().join("demo-fleet.password");
            assert_eq!(
                std::fs::metadata(pw).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
