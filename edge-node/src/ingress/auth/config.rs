//! `[ingress.auth]` and `[ingress.tls]`: who may connect, and the optional
//! MQTT-over-TLS listener.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Device authentication (`[ingress.auth]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthConfig {
    /// The credentials file (see docs/config/devices.toml), hot-reloaded.
    /// Default: `<data-dir>/devices.toml` of the edge. A missing file means
    /// "no identities yet": the edge starts and refuses every device.
    pub credentials: Option<PathBuf>,
    /// Accept clients that send no username and no certificate, with no
    /// topic restrictions (today's lab behaviour; logged as a warning at
    /// start). Clients that do send credentials are still checked.
    /// Default false.
    pub allow_anonymous: bool,
    /// How often the credentials file is checked for changes; a revoked
    /// identity is disconnected within about this long. Default "2s".
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Password verifications (argon2, deliberately slow) running at once;
    /// further CONNECTs wait, so a flood of bad passwords cannot take every
    /// core. Default 2.
    pub max_concurrent_verifications: usize,
    /// Successful verifications remembered, keyed by username and a keyed
    /// digest of the password, so a fleet reconnecting with one shared
    /// credential costs one hash. Default 10000.
    pub verified_cache_entries: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            credentials: None,
            allow_anonymous: false,
            reload_interval: Duration::from_secs(2),
            max_concurrent_verifications: 2,
            verified_cache_entries: 10_000,
        }
    }
}

impl AuthConfig {
    /// Every problem, one line each, prefixed `auth.`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.reload_interval < Duration::from_millis(100)
            || self.reload_interval > Duration::from_secs(3600)
        {
            p.push(format!(
                "auth.reload-interval = {} must be between 100ms and 1h",
                humantime::format_duration(self.reload_interval)
            ));
        }
        if self.max_concurrent_verifications == 0 {
            p.push("auth.max-concurrent-verifications must be at least 1".into());
        }
        if self
            .credentials
            .as_ref()
            .is_some_and(|c| c.as_os_str().is_empty())
        {
            p.push("auth.credentials must not be empty (omit it for the default)".into());
        }
        p
    }
}

/// Whether the TLS listener asks devices for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCerts {
    /// Never ask; devices log in with username and password over TLS.
    None,
    /// Ask; a device without one logs in with username and password.
    Optional,
    /// Ask and refuse the handshake without a certificate from `client-ca`.
    Required,
}

/// The MQTT-over-TLS listener (`[ingress.tls]`), active when
/// `ingress.tls-listen` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsConfig {
    /// Server certificate chain (PEM). Default: the edge's own cluster
    /// certificate (`tls.cert`).
    pub cert: Option<PathBuf>,
    /// Server private key (PEM). Default: the edge's own key (`tls.key`).
    pub key: Option<PathBuf>,
    /// CA (PEM, may hold several) that signs device client certificates,
    /// e.g. `strata pki --device`'s `devices-ca.pem` or a tenant CA. The
    /// certificate's subject CN is the username looked up in the
    /// credentials file. Default: none (no client certificates).
    pub client_ca: Option<PathBuf>,
    /// `none`, `optional` or `required`. Default `optional` (only
    /// meaningful with `client-ca`).
    pub client_certs: ClientCerts,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            client_ca: None,
            client_certs: ClientCerts::Optional,
        }
    }
}

impl TlsConfig {
    /// Every problem, one line each, prefixed `tls.`; `enabled` when
    /// `tls-listen` is set.
    pub fn problems(&self, enabled: bool) -> Vec<String> {
        let mut p = Vec::new();
        if !enabled {
            return p;
        }
        for (name, path) in [
            ("cert", &self.cert),
            ("key", &self.key),
            ("client-ca", &self.client_ca),
        ] {
            match path {
                None if name != "client-ca" => p.push(format!(
                    "tls.{name} is required with tls-listen (the edge fills in its own by default)"
                )),
                Some(f) if !f.exists() => {
                    p.push(format!("tls.{name}: {} does not exist", f.display()))
                }
                _ => {}
            }
        }
        if self.client_certs == ClientCerts::Required && self.client_ca.is_none() {
            p.push("tls.client-certs = \"required\" needs tls.client-ca".into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        let a: AuthConfig = toml::from_str("").unwrap();
        assert_eq!(a, AuthConfig::default());
        assert!(a.problems().is_empty());
        let a: AuthConfig =
            toml::from_str("reload-interval = \"500ms\"\nallow-anonymous = true").unwrap();
        assert_eq!(a.reload_interval, Duration::from_millis(500));
        assert!(toml::from_str::<AuthConfig>("allow_anonymous = true").is_err());
        let t: TlsConfig = toml::from_str("client-certs = \"required\"").unwrap();
        assert_eq!(t.client_certs, ClientCerts::Required);
        assert!(t.problems(false).is_empty());
        let p = t.problems(true);
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn every_auth_problem_at_once() {
        let a = AuthConfig {
            reload_interval: Duration::from_millis(1),
            max_concurrent_verifications: 0,
            credentials: Some(PathBuf::new()),
            ..Default::default()
        };
        assert_eq!(a.problems().len(), 3);
    }
}
