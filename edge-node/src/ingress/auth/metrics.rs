//! Authentication metrics, under `strata_ingress_*` beside the server's.
//! Refusals themselves are counted in `strata_ingress_rejects_total{reason}`
//! (labels in [`super::connect::REFUSAL_REASONS`] and [`ACL_REASONS`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::ingress::metrics::ReasonLabel;

/// Reject labels of the ACLs, revocation, client-id takeover and TLS.
pub const ACL_REASONS: [&str; 5] = [
    "publish_not_authorized",
    "subscribe_not_authorized",
    "revoked",
    "client_id_in_use",
    "tls_handshake_failed",
];

/// Label of the login and reload counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `password`, `certificate`, `anonymous`; or `ok`, `error`.
    pub kind: &'static str,
}

/// Counters of authentication. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    /// Accepted logins by method.
    pub logins: Family<KindLabel, Counter>,
    /// argon2 verifications run.
    pub hashes: Counter,
    /// Logins that reused a cached verification.
    pub cache_hits: Counter,
    /// Credentials file reloads by result (`ok`, `error`).
    pub reloads: Family<KindLabel, Counter>,
    /// Identities in the credentials in force.
    pub identities: Gauge,
}

impl AuthMetrics {
    /// Registers the counters; pre-creates the auth labels of `rejects`
    /// (the server's reject family) so dashboards see zeros.
    pub fn register(
        registry: &mut Registry,
        rejects: Option<&Family<ReasonLabel, Counter>>,
    ) -> Self {
        let m = AuthMetrics::default();
        for kind in ["password", "certificate", "anonymous"] {
            let _ = m.logins.get_or_create(&KindLabel { kind });
        }
        for kind in ["ok", "error"] {
            let _ = m.reloads.get_or_create(&KindLabel { kind });
        }
        if let Some(rejects) = rejects {
            for reason in super::connect::REFUSAL_REASONS
                .into_iter()
                .chain(ACL_REASONS)
            {
                let _ = rejects.get_or_create(&ReasonLabel { reason });
            }
        }
        let reg = registry.sub_registry_with_prefix("strata_ingress");
        reg.register(
            "logins",
            "MQTT logins accepted, by method",
            m.logins.clone(),
        );
        reg.register(
            "password_hashes",
            "argon2 password verifications run (cached successes excluded)",
            m.hashes.clone(),
        );
        reg.register(
            "password_cache_hits",
            "Logins that reused a cached password verification",
            m.cache_hits.clone(),
        );
        reg.register(
            "credentials_reloads",
            "Credentials file (re)loads by result; an error keeps the previous credentials",
            m.reloads.clone(),
        );
        reg.register(
            "credentials_identities",
            "Identities in the credentials in force",
            m.identities.clone(),
        );
        m
    }
}
