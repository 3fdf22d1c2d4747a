//! Who may call central's API: authentication (the operator token in an
//! `Authorization: Bearer` header) and authorization (a pure policy over a
//! principal and the action a route declares).
//!
//! # Layout
//! - [`policy`]: [`Principal`], [`Action`], [`Denied`] and the pure
//!   [`Policy::authorize`]. Tenant-scoped tokens (later) add a principal
//!   and rules there.
//! - [`token`]: the token's text form, `Bearer` header parsing, and the
//!   token file (0600 in a 0700 data dir, created on first start).
//! - this file: [`Access`], which turns a request's headers into a
//!   [`Principal`] or a [`Refusal`] for one [`Action`] — pure, so the HTTP
//!   guard ([`crate::http::guard`]) only adds the response and the metric —
//!   and [`setup`], which reads the config and the token file at start.

use std::path::PathBuf;

use axum::http::{header, HeaderMap, StatusCode};

pub mod policy;
pub mod token;

pub use policy::{Action, Denied, Policy, Principal};
pub use token::{Token, TokenDigest, TokenError, TokenOrigin, TOKEN_FILE_NAME};

use crate::config::CentralConfig;
use token::BearerError;

/// Why a request was refused before its handler ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token where one is needed (401).
    Missing {
        /// The action the route needs.
        action: Action,
    },
    /// An `Authorization` header that is not one `Bearer <token>` (401).
    Malformed(BearerError),
    /// A well-formed token that is not valid (401). Says nothing about how
    /// close it was.
    BadToken,
    /// Authenticated but not allowed (403).
    Forbidden(Denied),
}

impl Refusal {
    /// Label of `strata_central_auth_failures_total{reason=...}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing { .. } => "missing",
            Refusal::Malformed(BearerError::Malformed) => "malformed",
            Refusal::Malformed(BearerError::Repeated) => "repeated",
            Refusal::BadToken => "bad-token",
            Refusal::Forbidden(_) => "forbidden",
        }
    }

    /// 401, or 403 for an authenticated principal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The error body's `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Forbidden(_) => "forbidden",
            _ => "unauthorized",
        }
    }

    /// The error body's message: how to fix the request, no internals.
    pub fn message(&self) -> String {
        match self {
            Refusal::Missing { action } => format!(
                "{} needs central's operator token: send `Authorization: Bearer <token>` \
                 (the token is in the file operator.token in central's data dir)",
                action.as_str()
            ),
            Refusal::Malformed(e) => e.to_string(),
            Refusal::BadToken => "the bearer token is not valid".to_owned(),
            Refusal::Forbidden(d) => d.to_string(),
        }
    }
}

/// Where the operator token's digest comes from.
#[derive(Debug, Clone, Default)]
enum Operator {
    /// No token is valid.
    #[default]
    None,
    /// A fixed digest.
    Fixed(TokenDigest),
    /// The digest central's replicas agreed on; this replica's own token
    /// file's digest only until the replicated one is known (a brand-new
    /// group, before its first leader bootstrapped it).
    Replicated {
        local: TokenDigest,
        published: tokio::sync::watch::Receiver<crate::replica::Published>,
    },
}

/// The tokens central knows and its policy: everything needed to decide a
/// request, without I/O.
#[derive(Debug, Clone, Default)]
pub struct Access {
    operator: Operator,
    policy: Policy,
}

impl Access {
    /// Access with the operator `token` (none: no token is valid) under
    /// `policy`.
    pub fn new(token: Option<&Token>, policy: Policy) -> Access {
        Access {
            operator: token.map_or(Operator::None, |t| Operator::Fixed(t.digest())),
            policy,
        }
    }

    /// Access with the operator digest of central's replicated state,
    /// falling back to `local` until one is replicated.
    pub fn replicated(
        local: &Token,
        published: tokio::sync::watch::Receiver<crate::replica::Published>,
        policy: Policy,
    ) -> Access {
        Access {
            operator: Operator::Replicated {
                local: local.digest(),
                published,
            },
            policy,
        }
    }

    /// The operator digest in force now.
    fn operator_digest(&self) -> Option<TokenDigest> {
        match &self.operator {
            Operator::None => None,
            Operator::Fixed(d) => Some(d.clone()),
            Operator::Replicated { local, published } => Some(
                published
                    .borrow()
                    .operator
                    .map_or_else(|| local.clone(), TokenDigest::from_bytes),
            ),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The principal of a request's headers: anonymous without an
    /// `Authorization` header, else the token's owner or a refusal.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Refusal> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Ok(Principal::Anonymous);
        };
        if values.next().is_some() {
            return Err(Refusal::Malformed(BearerError::Repeated));
        }
        let presented = token::parse_bearer(value.as_bytes()).map_err(Refusal::Malformed)?;
        let digest = TokenDigest::of(presented.as_bytes());
        match self.operator_digest() {
            Some(op) if op.matches(&digest) => Ok(Principal::Operator),
            _ => Err(Refusal::BadToken),
        }
    }

    /// [`Self::authenticate`], then [`Policy::authorize`] for `action`.
    pub fn check(&self, headers: &HeaderMap, action: Action) -> Result<Principal, Refusal> {
        let principal = self.authenticate(headers)?;
        match self.policy.authorize(&principal, action) {
            Ok(()) => Ok(principal),
            Err(Denied::Unauthenticated { action }) => Err(Refusal::Missing { action }),
            Err(d) => Err(Refusal::Forbidden(d)),
        }
    }
}

/// What [`setup`] found or made on disk.
#[derive(Debug)]
pub struct AuthSetup {
    /// The access rules with the operator token.
    pub access: Access,
    /// The token of this replica's token file.
    pub token: Token,
    /// Where the operator token is.
    pub token_file: PathBuf,
    /// Whether the token was created at this start.
    pub origin: TokenOrigin,
}

/// Creates central's data dir (0700) and reads or creates the operator
/// token file (0600). Fails loudly on loose permissions.
pub fn setup(cfg: &CentralConfig) -> Result<AuthSetup, TokenError> {
    token::ensure_private_dir(&cfg.data_dir)?;
    let token_file = cfg.token_file();
    let (token, origin) = token::load_or_create(&token_file, Token::generate()?)?;
    let policy = Policy::new(cfg.auth.allow_anonymous, cfg.auth.open_metrics);
    Ok(AuthSetup {
        access: Access::new(Some(&token), policy),
        token,
        token_file,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn requests_authenticate_as_operator_or_are_refused_by_reason() {
        let token = Token::parse(&"t".repeat(40)).unwrap();
        let access = Access::new(Some(&token), Policy::new(false, true));
        let good = format!("Bearer {}", "t".repeat(40));
        assert_eq!(
            access.check(&headers(&[&good]), Action::WriteMonitors),
            Ok(Principal::Operator)
        );
        let cases: [(Vec<String>, &str); 5] = [
            (vec![], "missing"),
            (vec!["Bearer wrong".to_owned()], "bad-token"),
            (vec!["Bearer ".to_owned() + &"t".repeat(39)], "bad-token"),
            (vec!["Basic dTpw".to_owned()], "malformed"),
            (vec![good.clone(), good.clone()], "repeated"),
        ];
        for (values, reason) in cases {
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            let r = access
                .check(&headers(&refs), Action::ReadTelemetry)
                .unwrap_err();
            assert_eq!(r.reason(), reason, "{values:?}");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert!(!r.message().contains("tttt"), "{}", r.message());
        }
        // Metrics are open by default, to anyone without a token.
        assert_eq!(
            access.check(&headers(&[]), Action::ReadMetrics),
            Ok(Principal::Anonymous)
        );
        // ... but a wrong token is refused even there.
        assert_eq!(
            access.check(&headers(&["Bearer nope"]), Action::ReadMetrics),
            Err(Refusal::BadToken)
        );
    }

    #[test]
    fn without_a_token_configured_nothing_authenticates() {
        let access = Access::default();
        let r = access
            .check(&headers(&["Bearer anything-at-all"]), Action::ReadCluster)
            .unwrap_err();
        assert_eq!(r, Refusal::BadToken);
    }

    #[test]
    fn setup_creates_the_data_dir_and_token_then_reads_them_back() {
        let root = tempfile::tempdir().unwrap();
        let cfg = CentralConfig {
            data_dir: root.path().join("central"),
            ..CentralConfig::default()
        };
        let first = setup(&cfg).unwrap();
        assert_eq!(first.origin, TokenOrigin::Created);
        assert_eq!(first.token_file, root.path().join("central/operator.token"));
        let again = setup(&cfg).unwrap();
        assert_eq!(again.origin, TokenOrigin::Loaded);
        let text = std::fs::read_to_string(&first.token_file).unwrap();
        let h = headers(&[&format!("Bearer {}", text.trim())]);
        assert_eq!(again.access.authenticate(&h), Ok(Principal::Operator));
    }
}
