//! The CONNECT decision, pure: from the credentials snapshot, the login in
//! the CONNECT and the TLS client certificate (if any) to accept, refuse,
//! or "verify this password first" (the slow part the driver runs off the
//! runtime, then reports with [`finish`]).
//!
//! | presented                     | outcome                                     |
//! | ----------------------------- | ------------------------------------------- |
//! | client cert, CN in file, `client-cert = true` | accepted as that identity (a CONNECT username is ignored, as Mosquitto's `use_identity_as_username`) |
//! | client cert, CN unknown / not allowed | refused, Not authorized (v5 0x87, v3 5) |
//! | username + password           | verify → accepted, or Bad username or password (v5 0x86, v3 4) |
//! | username without password, unknown username | Bad username or password |
//! | known username without password login | Not authorized                 |
//! | nothing                       | anonymous if `allow-anonymous`, else Not authorized |

use std::sync::Arc;

use super::credentials::{AuthMethod, Credentials, Identity};
use crate::ingress::codec::{ConnAckCode, Login};

/// An authenticated client.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Who it is (from the snapshot it logged in with).
    pub identity: Arc<Identity>,
    /// How it proved it.
    pub method: AuthMethod,
}

/// A refused CONNECT: the CONNACK code, the counter label and a log line
/// (never sent to the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// CONNACK code.
    pub code: ConnAckCode,
    /// `strata_ingress_rejects_total{reason}` label.
    pub reason: &'static str,
    /// Log detail.
    pub detail: String,
}

/// Every refusal label, for pre-created counters.
pub const REFUSAL_REASONS: [&str; 8] = [
    "auth_anonymous",
    "auth_unknown_user",
    "auth_bad_password",
    "auth_missing_password",
    "auth_password_not_allowed",
    "auth_unknown_certificate",
    "auth_certificate_not_allowed",
    "auth_busy",
];

/// What to do with a CONNECT.
#[derive(Debug)]
pub enum Plan {
    /// Accept: `None` is an anonymous client (only with allow-anonymous).
    Accept(Option<Principal>),
    /// Verify `password` against `identity`'s hash, then call [`finish`].
    Verify {
        /// The identity named by the username.
        identity: Arc<Identity>,
        /// The password sent.
        password: bytes::Bytes,
    },
    /// Refuse with this CONNACK.
    Refuse(Refused),
}

fn refuse(code: ConnAckCode, reason: &'static str, detail: String) -> Plan {
    Plan::Refuse(Refused {
        code,
        reason,
        detail,
    })
}

/// The TLS client certificate's identity: `Some(cn)`, or `None` when the
/// certificate has no subject CN.
pub type CertIdentity = Option<String>;

/// Decides a CONNECT. `cert` is `Some` when the TLS handshake verified a
/// client certificate.
pub fn plan(
    creds: &Credentials,
    allow_anonymous: bool,
    login: Option<&Login>,
    cert: Option<&CertIdentity>,
) -> Plan {
    if let Some(cert) = cert {
        let Some(cn) = cert else {
            return refuse(
                ConnAckCode::NotAuthorized,
                "auth_unknown_certificate",
                "client certificate has no subject CN".into(),
            );
        };
        return match creds.get(cn) {
            Some(id) if id.client_cert => Plan::Accept(Some(Principal {
                identity: id.clone(),
                method: AuthMethod::Certificate,
            })),
            Some(_) => refuse(
                ConnAckCode::NotAuthorized,
                "auth_certificate_not_allowed",
                format!("identity {cn:?} does not allow client-certificate login"),
            ),
            None => refuse(
                ConnAckCode::NotAuthorized,
                "auth_unknown_certificate",
                format!("client certificate CN {cn:?} is not in the credentials file"),
            ),
        };
    }
    let Some(login) = login else {
        return if allow_anonymous {
            Plan::Accept(None)
        } else {
            refuse(
                ConnAckCode::NotAuthorized,
                "auth_anonymous",
                "no username or client certificate (allow-anonymous is false)".into(),
            )
        };
    };
    let Some(id) = creds.get(&login.username) else {
        return refuse(
            ConnAckCode::BadUsernameOrPassword,
            "auth_unknown_user",
            format!("unknown username {:?}", login.username),
        );
    };
    if !id.has_password() {
        return refuse(
            ConnAckCode::NotAuthorized,
            "auth_password_not_allowed",
            format!("identity {:?} has no password login", login.username),
        );
    }
    match &login.password {
        Some(password) => Plan::Verify {
            identity: id.clone(),
            password: password.clone(),
        },
        None => refuse(
            ConnAckCode::BadUsernameOrPassword,
            "auth_missing_password",
            format!("username {:?} without a password", login.username),
        ),
    }
}

/// Outcome of a password verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The password matches the hash.
    Ok,
    /// It does not.
    Wrong,
    /// No verification slot became free before the CONNECT deadline.
    Busy,
}

/// Completes a [`Plan::Verify`].
pub fn finish(identity: Arc<Identity>, verified: Verified) -> Result<Principal, Refused> {
    match verified {
        Verified::Ok => Ok(Principal {
            identity,
            method: AuthMethod::Password,
        }),
        Verified::Wrong => Err(Refused {
            code: ConnAckCode::BadUsernameOrPassword,
            reason: "auth_bad_password",
            detail: format!("wrong password for {:?}", identity.username),
        }),
        Verified::Busy => Err(Refused {
            code: ConnAckCode::ServerUnavailable,
            reason: "auth_busy",
            detail: "too many password verifications queued".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::credentials::{hash_password_with, CredentialsFile, IdentityEntry};
    use super::*;

    fn creds() -> Credentials {
        let cheap = argon2::Params::new(8, 1, 1, None).unwrap();
        let hash = hash_password_with(b"s3cret", cheap).unwrap();
        let entry = |u: &str, pw: bool, cert: bool| IdentityEntry {
            username: u.into(),
            tenant: "demo".into(),
            devices: "*".into(),
            password_hash: pw.then(|| hash.clone()),
            client_cert: cert,
        };
        let f = CredentialsFile {
            identity: vec![
                entry("pw", true, false),
                entry("cert", false, true),
                entry("both", true, true),
            ],
        };
        Credentials::from_file(&f, 1)
    }

    fn login(u: &str, p: Option<&str>) -> Login {
        Login {
            username: u.into(),
            password: p.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes())),
        }
    }

    fn refused(p: Plan) -> (ConnAckCode, &'static str) {
        match p {
            Plan::Refuse(r) => (r.code, r.reason),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn anonymous_only_when_allowed() {
        let c = creds();
        assert!(matches!(plan(&c, true, None, None), Plan::Accept(None)));
        assert_eq!(
            refused(plan(&c, false, None, None)),
            (ConnAckCode::NotAuthorized, "auth_anonymous")
        );
    }

    #[test]
    fn password_logins() {
        let c = creds();
        for allow in [false, true] {
            assert_eq!(
                refused(plan(&c, allow, Some(&login("nobody", Some("x"))), None)),
                (ConnAckCode::BadUsernameOrPassword, "auth_unknown_user")
            );
            assert_eq!(
                refused(plan(&c, allow, Some(&login("pw", None)), None)),
                (ConnAckCode::BadUsernameOrPassword, "auth_missing_password")
            );
            assert_eq!(
                refused(plan(&c, allow, Some(&login("cert", Some("s3cret"))), None)),
                (ConnAckCode::NotAuthorized, "auth_password_not_allowed")
            );
        }
        let Plan::Verify { identity, password } =
            plan(&c, false, Some(&login("pw", Some("s3cret"))), None)
        else {
            panic!("expected verify");
        };
        assert!(identity.verify_password(&password));
        assert!(!identity.verify_password(b"s3cre"));
        let p = finish(identity.clone(), Verified::Ok).unwrap();
        assert_eq!(
            (&*p.identity.username, p.method),
            ("pw", AuthMethod::Password)
        );
        let r = finish(identity.clone(), Verified::Wrong).unwrap_err();
        assert_eq!(
            (r.code, r.reason),
            (ConnAckCode::BadUsernameOrPassword, "auth_bad_password")
        );
        let r = finish(identity, Verified::Busy).unwrap_err();
        assert_eq!(
            (r.code, r.reason),
            (ConnAckCode::ServerUnavailable, "auth_busy")
        );
    }

    #[test]
    fn certificate_logins_ignore_the_username() {
        let c = creds();
        for cn in ["cert", "both"] {
            let cert = Some(cn.to_owned());
            match plan(&c, false, Some(&login("pw", Some("wrong"))), Some(&cert)) {
                Plan::Accept(Some(p)) => {
                    assert_eq!(
                        (&*p.identity.username, p.method),
                        (cn, AuthMethod::Certificate)
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            refused(plan(&c, true, None, Some(&Some("pw".into())))),
            (ConnAckCode::NotAuthorized, "auth_certificate_not_allowed")
        );
        assert_eq!(
            refused(plan(&c, true, None, Some(&Some("stranger".into())))),
            (ConnAckCode::NotAuthorized, "auth_unknown_certificate")
        );
        assert_eq!(
            refused(plan(&c, true, None, Some(&None))),
            (ConnAckCode::NotAuthorized, "auth_unknown_certificate")
        );
    }
}
