//! The credentials file: one `[[identity]]` per device or fleet login.
//!
//! ```toml
//! [[identity]]
//! username = "demo-fleet"
//! tenant = "demo"
//! devices = "dev-*"            # glob over device names it may publish as
//! password-hash = "$argon2id$v=19$m=19456,t=2,p=1$…"
//! client-cert = false          # true: a client certificate with CN = username also logs in
//! ```
//!
//! [`CredentialsFile`] is the file as written (serde, `deny_unknown_fields`,
//! edited by `strata device`); [`Credentials`] is the validated snapshot
//! the server checks CONNECTs against (compiled globs, one entry per
//! username, a fingerprint per identity to notice revocation).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use super::CredentialsError;

/// Longest username (and so client-certificate CN) accepted, bytes.
pub const MAX_USERNAME: usize = 256;
/// Largest argon2 memory cost accepted in a hash, KiB: verification
/// allocates it, so an absurd entry must not exhaust the edge's memory.
pub const MAX_M_COST_KIB: u32 = 256 * 1024;
/// Largest argon2 time cost (passes) accepted in a hash.
pub const MAX_T_COST: u32 = 16;
/// Largest argon2 parallelism accepted in a hash.
pub const MAX_P_COST: u32 = 8;

/// The credentials file as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CredentialsFile {
    /// One entry per login.
    pub identity: Vec<IdentityEntry>,
}

/// One login: who it is, which tenant and devices it may speak for, and
/// how it proves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IdentityEntry {
    /// MQTT username, and the subject CN of its client certificate.
    /// Unique in the file; 1-256 bytes, no control characters.
    pub username: String,
    /// The one tenant it publishes and subscribes in ([A-Za-z0-9_.-],
    /// 1-128 chars).
    pub tenant: String,
    /// Glob over device names it may publish as (`*`, `dev-*`,
    /// `{pump,valve}-[0-9]*`).
    pub devices: String,
    /// argon2id PHC string (`strata device add` writes it). Absent: no
    /// password login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// A TLS client certificate whose subject CN equals `username` also
    /// logs in as this identity. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_cert: bool,
}

const HEADER: &str = "\
# Strata device credentials: who may publish to this edge's MQTT server.
# Managed with `strata device add|list|remove`; hot-reloaded by the edge.
# See docs/config/devices.toml for the format. Passwords are argon2id hashes.
";

impl CredentialsFile {
    /// Parses TOML and validates every entry, reporting all problems at
    /// once. `path` only names the file in errors.
    pub fn parse(text: &str, path: &str) -> Result<CredentialsFile, CredentialsError> {
        let file: CredentialsFile = toml::from_str(text).map_err(|e| CredentialsError::Parse {
            path: path.to_owned(),
            detail: e.message().to_owned(),
        })?;
        let problems = file.problems();
        if problems.is_empty() {
            Ok(file)
        } else {
            Err(CredentialsError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Every problem, naming the entry (`identity[2] "pump-7": …`).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut seen = HashSet::new();
        for (i, e) in self.identity.iter().enumerate() {
            let at = format!("identity[{i}] {:?}", e.username);
            if e.username.is_empty()
                || e.username.len() > MAX_USERNAME
                || e.username.chars().any(char::is_control)
            {
                p.push(format!(
                    "{at}: username must be 1-{MAX_USERNAME} bytes without control characters"
                ));
            }
            if !seen.insert(e.username.as_str()) {
                p.push(format!("{at}: username appears more than once"));
            }
            if !valid_name(&e.tenant) {
                p.push(format!(
                    "{at}: tenant {:?} must be 1-128 chars of [A-Za-z0-9_.-]",
                    e.tenant
                ));
            }
            if let Err(detail) = compile_glob(&e.devices) {
                p.push(format!("{at}: devices {:?}: {detail}", e.devices));
            }
            if let Some(h) = &e.password_hash {
                if let Err(detail) = check_hash(h) {
                    p.push(format!("{at}: password-hash: {detail}"));
                }
            }
            if e.password_hash.is_none() && !e.client_cert {
                p.push(format!(
                    "{at}: has neither password-hash nor client-cert = true, so it can never log in"
                ));
            }
        }
        p
    }

    /// The file's text: a header comment and the entries.
    pub fn render(&self) -> String {
        // Serializing plain strings and bools cannot fail.
        let body = toml::to_string(self).unwrap_or_default();
        format!("{HEADER}\n{body}")
    }

    /// Adds `entry`; refuses a username that exists.
    pub fn add(&mut self, entry: IdentityEntry) -> Result<(), CredentialsError> {
        if self.identity.iter().any(|e| e.username == entry.username) {
            return Err(CredentialsError::Exists {
                username: entry.username,
            });
        }
        self.identity.push(entry);
        Ok(())
    }

    /// Removes `username` (revocation); refuses an unknown one.
    pub fn remove(&mut self, username: &str) -> Result<IdentityEntry, CredentialsError> {
        match self.identity.iter().position(|e| e.username == username) {
            Some(i) => Ok(self.identity.remove(i)),
            None => Err(CredentialsError::NotFound {
                username: username.to_owned(),
            }),
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= strata_protocol::telemetry::MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn compile_glob(pattern: &str) -> Result<GlobMatcher, String> {
    if pattern.is_empty() {
        return Err("pattern is empty (use \"*\" for every device)".into());
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.kind().to_string())
}

fn check_hash(phc: &str) -> Result<(), String> {
    let h = PasswordHash::new(phc).map_err(|e| format!("not a PHC string: {e}"))?;
    if h.algorithm != argon2::ARGON2ID_IDENT {
        return Err(format!("algorithm {} is not argon2id", h.algorithm));
    }
    if h.version.is_some_and(|v| v != 0x13) {
        return Err("argon2 version must be 19 (0x13)".into());
    }
    let params = Params::try_from(&h).map_err(|e| format!("bad parameters: {e}"))?;
    if params.m_cost() > MAX_M_COST_KIB || params.t_cost() > MAX_T_COST {
        return Err(format!(
            "costs m={} t={} exceed the limits m<={MAX_M_COST_KIB} t<={MAX_T_COST}",
            params.m_cost(),
            params.t_cost()
        ));
    }
    if params.p_cost() > MAX_P_COST {
        return Err(format!(
            "parallelism {} exceeds {MAX_P_COST}",
            params.p_cost()
        ));
    }
    if h.salt.is_none() || h.hash.is_none() {
        return Err("salt or hash missing".into());
    }
    Ok(())
}

/// Hashes `password` as an argon2id PHC string with the recommended
/// parameters (19 MiB, 2 passes, 1 lane) and a random salt.
pub fn hash_password(password: &[u8]) -> Result<String, CredentialsError> {
    hash_password_with(password, Params::default())
}

/// [`hash_password`] with explicit costs (tests use cheap ones).
pub fn hash_password_with(password: &[u8], params: Params) -> Result<String, CredentialsError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| CredentialsError::Hash {
            detail: e.to_string(),
        })
}

/// How an identity proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Username and password in CONNECT.
    Password,
    /// TLS client certificate (subject CN = username).
    Certificate,
}

/// One validated identity.
#[derive(Debug)]
pub struct Identity {
    /// Username (= client-certificate CN).
    pub username: Arc<str>,
    /// Its tenant.
    pub tenant: Arc<str>,
    /// The device glob as written.
    pub devices: String,
    matcher: GlobMatcher,
    password_hash: Option<String>,
    /// Whether a client certificate logs in.
    pub client_cert: bool,
    /// Changes whenever the entry changes (tenant, devices, hash, cert).
    pub fingerprint: u64,
}

impl Identity {
    /// Whether it may publish as `device` (the glob only; the ACL adds
    /// the tenant and topic shape).
    pub fn may_be(&self, device: &str) -> bool {
        self.matcher.is_match(device)
    }

    /// Whether password login is configured.
    pub fn has_password(&self) -> bool {
        self.password_hash.is_some()
    }

    /// The slow check: argon2 over `password` with the hash's own
    /// parameters. Run it off the async runtime.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let Some(phc) = &self.password_hash else {
            return false;
        };
        match PasswordHash::new(phc) {
            Ok(h) => Argon2::default().verify_password(password, &h).is_ok(),
            Err(_) => false,
        }
    }
}

/// A validated, immutable snapshot of the credentials file.
#[derive(Debug, Default)]
pub struct Credentials {
    /// Increases with every successful reload.
    pub generation: u64,
    by_username: HashMap<String, Arc<Identity>>,
}

impl Credentials {
    /// Builds the snapshot (the file must have validated).
    pub fn from_file(file: &CredentialsFile, generation: u64) -> Credentials {
        let mut by_username = HashMap::with_capacity(file.identity.len());
        for e in &file.identity {
            let Ok(matcher) = compile_glob(&e.devices) else {
                continue; // unreachable after validation; never widen access
            };
            let mut h = DefaultHasher::new();
            (&e.tenant, &e.devices, &e.password_hash, e.client_cert).hash(&mut h);
            by_username.insert(
                e.username.clone(),
                Arc::new(Identity {
                    username: Arc::from(e.username.as_str()),
                    tenant: Arc::from(e.tenant.as_str()),
                    devices: e.devices.clone(),
                    matcher,
                    password_hash: e.password_hash.clone(),
                    client_cert: e.client_cert,
                    fingerprint: h.finish(),
                }),
            );
        }
        Credentials {
            generation,
            by_username,
        }
    }

    /// Parses and validates `text` into a snapshot.
    pub fn parse(text: &str, path: &str, generation: u64) -> Result<Credentials, CredentialsError> {
        CredentialsFile::parse(text, path).map(|f| Credentials::from_file(&f, generation))
    }

    /// The identity named `username`.
    pub fn get(&self, username: &str) -> Option<&Arc<Identity>> {
        self.by_username.get(username)
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.by_username.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_username.is_empty()
    }

    /// Whether `id` is still granted exactly as it was when it logged in
    /// (not removed, password, tenant, devices and cert flag unchanged).
    pub fn still_grants(&self, id: &Identity) -> bool {
        self.get(&id.username)
            .is_some_and(|now| now.fingerprint == id.fingerprint)
    }
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
