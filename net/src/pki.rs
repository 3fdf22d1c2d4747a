//! Cluster PKI: a CA and per-node certificates.
//!
//! `strata up` and the test harness call [`Pki::ensure`] to create the CA and
//! node certificates on first start and reuse them afterwards, so nobody has
//! to run an external CA to try Strata. Production deployments point
//! [`TlsFiles`] at certificates from their own CA instead.
//!
//! Node certificates are valid for [`NODE_CERT_VALIDITY`] (a year) from
//! issue, not for ever: a stolen one stops working. [`Pki::node`] renews a
//! certificate within [`RENEW_BEFORE`] of its end (same key, new
//! certificate, replaced atomically), so `strata up` and the test harness
//! renew on any start; operators see every node's expiry in the console and
//! `GET /api/v1/edges` / `/api/v1/regions`.
//!
//! Keys are created 0600 (certificates too, so everything Strata writes is
//! 0600) in a directory created 0700, and a key file that other users can
//! read is refused at load with the command that fixes it (see
//! [`crate::files`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::files::{check_private_file, create_private_dir, write_private};
use crate::{NetError, CLUSTER_SERVER_NAME};

/// Paths to one node's TLS material (PEM). Used in every binary's config as
/// `tls = { ca = "...", cert = "...", key = "..." }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA certificate that issued every cluster certificate (PEM). Required.
    pub ca: PathBuf,
    /// This node's certificate chain (PEM). Required.
    pub cert: PathBuf,
    /// This node's private key (PEM). Required.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Problems with the paths, for a config's `validate()`.
    pub fn problems(&self, field: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (name, p) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
            if p.as_os_str().is_empty() {
                out.push(format!("{field}.{name}: path is required"));
            } else if !p.exists() {
                out.push(format!("{field}.{name}: {} does not exist", p.display()));
            }
        }
        out
    }
}

/// Loaded TLS material for one node.
#[derive(Debug)]
pub struct NodeTls {
    /// Trusted CA certificate(s).
    pub ca: Vec<CertificateDer<'static>>,
    /// Our certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// Our private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for NodeTls {
    fn clone(&self) -> Self {
        NodeTls {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, NetError> {
    std::fs::read(path).map_err(|e| NetError::TlsFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn certs_from_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    use rustls_pki_types::pem::PemObject;
    let pem = read_pem(path)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    let certs = certs.map_err(|e| NetError::TlsFile {
        path: path.display().to_string(),
        reason: format!("bad certificate PEM: {e:?}"),
    })?;
    if certs.is_empty() {
        return Err(NetError::TlsFile {
            path: path.display().to_string(),
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

impl NodeTls {
    /// Loads the three PEM files, naming the file in any error.
    pub fn load(files: &TlsFiles) -> Result<Arc<NodeTls>, NetError> {
        use rustls_pki_types::pem::PemObject;
        let ca = certs_from_pem(&files.ca)?;
        let chain = certs_from_pem(&files.cert)?;
        check_private_file(&files.key)?;
        let key_pem = read_pem(&files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| NetError::TlsFile {
            path: files.key.display().to_string(),
            reason: format!("bad private key PEM: {e:?}"),
        })?;
        Ok(Arc::new(NodeTls { ca, chain, key }))
    }

    /// When this node's own certificate (the chain's first) stops being
    /// valid, ms since the Unix epoch; `None` if it cannot be read. Shown
    /// to operators, so an expiry is seen coming rather than met as a
    /// refused handshake.
    pub fn expires_ms(&self) -> Option<i64> {
        self.chain.first().and_then(|c| not_after_ms(c))
    }
}

/// A DER certificate's `notAfter`, ms since the Unix epoch.
pub fn not_after_ms(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let secs = parsed.validity().not_after.timestamp();
    secs.checked_mul(1000)
}

/// The cluster CA, able to issue node certificates.
pub struct Pki {
    dir: PathBuf,
    ca_key: KeyPair,
    ca_cert: rcgen::Certificate,
}

fn gen_err(name: &str, e: impl std::fmt::Display) -> NetError {
    NetError::CertGen {
        name: name.to_owned(),
        reason: e.to_string(),
    }
}

fn ca_params() -> Result<CertificateParams, NetError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| gen_err("ca", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Strata cluster CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// How long a node certificate is valid from its issue.
pub const NODE_CERT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);
/// [`Pki::node`] renews a certificate this close to its end.
pub const RENEW_BEFORE: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);
/// Back-dating of `notBefore`, for peers whose clocks run behind.
const CLOCK_SKEW: time::Duration = time::Duration::hours(1);

/// Writes a new PEM file, 0600 from its creation.
fn write_pem(path: &Path, data: &str) -> Result<(), NetError> {
    Ok(write_private(path, data.as_bytes())?)
}

impl Pki {
    /// Opens the CA in `dir`, creating it on first use.
    pub fn ensure(dir: &Path) -> Result<Pki, NetError> {
        create_private_dir(dir)?;
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let params = ca_params()?;
        let ca_key = if key_path.exists() {
            check_private_file(&key_path)?;
            let pem = String::from_utf8_lossy(&read_pem(&key_path)?).into_owned();
            KeyPair::from_pem(&pem).map_err(|e| NetError::TlsFile {
                path: key_path.display().to_string(),
                reason: e.to_string(),
            })?
        } else {
            let key = KeyPair::generate().map_err(|e| gen_err("ca", e))?;
            write_pem(&key_path, &key.serialize_pem())?;
            key
        };
        // Re-deriving the CA certificate from the same key and subject keeps
        // already-issued certificates valid: issuers match by name and key.
        let ca_cert = params.self_signed(&ca_key).map_err(|e| gen_err("ca", e))?;
        if !cert_path.exists() {
            write_pem(&cert_path, &ca_cert.pem())?;
        }
        Ok(Pki {
            dir: dir.to_owned(),
            ca_key,
            ca_cert,
        })
    }

    /// Path of the CA certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Returns the TLS files of node `name`, issuing them on first use and
    /// renewing the certificate (same key) when it ends within
    /// [`RENEW_BEFORE`] or cannot be read.
    pub fn node(&self, name: &str) -> Result<TlsFiles, NetError> {
        self.node_at(name, time::OffsetDateTime::now_utc())
    }

    /// [`Pki::node`] at time `now`.
    fn node_at(&self, name: &str, now: time::OffsetDateTime) -> Result<TlsFiles, NetError> {
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}.key"));
        if !cert.exists() || !key.exists() {
            let k = KeyPair::generate().map_err(|e| gen_err(name, e))?;
            write_pem(&key, &k.serialize_pem())?;
            write_pem(&cert, &self.sign(name, &k, now)?)?;
        } else if needs_renewal(&cert, now) {
            check_private_file(&key)?;
            let pem = String::from_utf8_lossy(&read_pem(&key)?).into_owned();
            let k = KeyPair::from_pem(&pem).map_err(|e| NetError::TlsFile {
                path: key.display().to_string(),
                reason: e.to_string(),
            })?;
            // Written beside and renamed over: a crash leaves the old
            // certificate or the new one, never half of one.
            let tmp = self.dir.join(format!("{name}.pem.new"));
            write_pem(&tmp, &self.sign(name, &k, now)?)?;
            std::fs::rename(&tmp, &cert).map_err(|e| NetError::TlsFile {
                path: cert.display().to_string(),
                reason: format!("renewing: {e}"),
            })?;
            tracing::info!(node = name, path = %cert.display(), "renewed node certificate");
        }
        Ok(TlsFiles {
            ca: self.ca_path(),
            cert,
            key,
        })
    }

    /// Issues a certificate for `name` and returns (cert PEM, key PEM)
    /// without writing anything.
    pub fn issue(&self, name: &str) -> Result<(String, String), NetError> {
        let key = KeyPair::generate().map_err(|e| gen_err(name, e))?;
        let cert = self.sign(name, &key, time::OffsetDateTime::now_utc())?;
        Ok((cert, key.serialize_pem()))
    }

    /// A certificate for `name` over `key`, valid from `now` (less the
    /// clock skew) for [`NODE_CERT_VALIDITY`].
    fn sign(
        &self,
        name: &str,
        key: &KeyPair,
        now: time::OffsetDateTime,
    ) -> Result<String, NetError> {
        let mut p = CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_owned(), name.to_owned()])
            .map_err(|e| gen_err(name, e))?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = now - CLOCK_SKEW;
        p.not_after = now + time::Duration::seconds(NODE_CERT_VALIDITY.as_secs() as i64);
        let cert = p
            .signed_by(key, &self.ca_cert, &self.ca_key)
            .map_err(|e| gen_err(name, e))?;
        Ok(cert.pem())
    }
}

/// Whether the certificate at `path` ends within [`RENEW_BEFORE`] of
/// `now` (or cannot be read: then a new one is better than a node that
/// cannot start).
fn needs_renewal(path: &Path, now: time::OffsetDateTime) -> bool {
    let Ok(certs) = certs_from_pem(path) else {
        return true;
    };
    let Some(end_ms) = certs.first().and_then(|c| not_after_ms(c)) else {
        return true;
    };
    let renew_from_ms = (now.unix_timestamp() + RENEW_BEFORE.as_secs() as i64) * 1000;
    end_ms <= renew_from_ms
}

#[path = "pki_device.rs"]
mod device;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_is_idempotent_and_issues_loadable_certs() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::ensure(dir.path()).unwrap();
        let files = pki.node("edge-1").unwrap();
        let ca_before = std::fs::read(pki.ca_path()).unwrap();
        let pki2 = Pki::ensure(dir.path()).unwrap();
        assert_eq!(std::fs::read(pki2.ca_path()).unwrap(), ca_before);
        let again = pki2.node("edge-1").unwrap();
        assert_eq!(files, again);
        let tls = NodeTls::load(&files).unwrap();
        assert_eq!(tls.chain.len(), 1);
        // The expiry operators see is read from the certificate itself.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let expires = tls.expires_ms().expect("a readable expiry");
        assert!(expires > now_ms, "{expires} is not after {now_ms}");
        assert_eq!(not_after_ms(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    /// Node certificates end a year after issue, and `node` renews one
    /// (same key, file replaced) only once it is within 30 days of its end.
    #[test]
    fn node_certificates_expire_in_a_year_and_are_renewed_before() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::ensure(dir.path()).unwrap();
        let t0 = time::OffsetDateTime::now_utc();
        let day: time::Duration = time::Duration::days(1);
        let files = pki.node_at("edge-1", t0).unwrap();
        let expiry = |f: &TlsFiles| NodeTls::load(f).unwrap().expires_ms().unwrap();
        let end = expiry(&files);
        let year_ms = (t0 + day * 365i32).unix_timestamp() * 1000;
        assert!((end - year_ms).abs() <= 1000, "{end} vs {year_ms}");
        let key = std::fs::read(&files.key).unwrap();
        // 300 days on: nothing to do.
        pki.node_at("edge-1", t0 + day * 300i32).unwrap();
        assert_eq!(expiry(&files), end);
        // 340 days on: renewed over the same key, a year from then.
        let renewed = pki.node_at("edge-1", t0 + day * 340i32).unwrap();
        assert_eq!(renewed, files);
        let later = expiry(&files);
        assert!(later >= end + 339 * 86_400_000, "{later} vs {end}");
        assert_eq!(std::fs::read(&files.key).unwrap(), key, "same key");
        assert!(!dir.path().join("edge-1.pem.new").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.cert).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // An unreadable certificate is replaced rather than left to fail.
        std::fs::write(&files.cert, "not a certificate").unwrap();
        pki.node_at("edge-1", t0).unwrap();
        assert!(NodeTls::load(&files).unwrap().expires_ms().is_some());
    }

    #[test]
    fn keys_are_private_from_creation_and_open_keys_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let pki = Pki::ensure(&pki_dir).unwrap();
        let files = pki.node("hub-1").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pki_dir), 0o700);
        for p in [&files.key, &files.cert, &files.ca, &pki_dir.join("ca.key")] {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeTls::load(&files).unwrap_err().to_string();
        assert!(
            err.contains(&files.key.display().to_string()) && err.contains("chmod 600"),
            "{err}"
        );
        let ca_key = pki_dir.join("ca.key");
        std::fs::set_permissions(&ca_key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Pki::ensure(&pki_dir).err().unwrap().to_string();
        assert!(err.contains("ca.key") && err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let files = TlsFiles {
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
        };
        let err = NodeTls::load(&files).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        assert_eq!(files.problems("tls").len(), 3);
    }
}
