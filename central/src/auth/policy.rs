//! Who may do what: the [`Principal`] a request authenticated as, the
//! [`Action`] a route needs, and the pure [`Policy::authorize`] check.
//!
//! Today there is one real principal, the operator, who may do everything;
//! [`Principal::Anonymous`] is a request without a token, admitted only
//! where the policy opens an action (`/metrics`) or the whole API
//! (`auth.allow-anonymous`). Tenant-scoped tokens (a later issue) add a
//! `Principal::Tenant { tenant }` whose grants come from
//! [`Action::tenant_scoped`]; the routes and their guard do not change.

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The holder of the operator token: every action.
    Operator,
    /// A request without a token.
    Anonymous,
}

impl Principal {
    /// For logs and error messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            Principal::Operator => "operator",
            Principal::Anonymous => "anonymous",
        }
    }
}

/// What a route does, as the policy sees it. Each API route declares
/// exactly one (in [`crate::http::app`]'s route table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Region and replica status (`GET /regions`, `/regions/{region}`).
    ReadCluster,
    /// Add or remove a Raft replica.
    ChangeMembership,
    /// Edge nodes and their reports (`GET /edges`).
    ReadEdges,
    /// Devices and their record counts (`GET /devices`).
    ReadDevices,
    /// Telemetry readings (`GET /telemetry/{tenant}/{device}`).
    ReadTelemetry,
    /// Upload a monitor module.
    UploadArtifact,
    /// Create, update or delete a monitor.
    WriteMonitors,
    /// List and inspect monitors.
    ReadMonitors,
    /// Alerts raised by monitors.
    ReadAlerts,
    /// Prometheus metrics (`GET /metrics`).
    ReadMetrics,
    /// The region event log (`GET /regions/{region}/events`, and its
    /// stream).
    ReadEvents,
    /// Change central's replicated registry: tenants (`PUT`/`DELETE
    /// /tenants/{tenant}`).
    WriteCluster,
}

impl Action {
    /// Every action, for tests and documentation.
    pub const ALL: [Action; 12] = [
        Action::ReadCluster,
        Action::ChangeMembership,
        Action::ReadEdges,
        Action::ReadDevices,
        Action::ReadTelemetry,
        Action::UploadArtifact,
        Action::WriteMonitors,
        Action::ReadMonitors,
        Action::ReadAlerts,
        Action::ReadMetrics,
        Action::ReadEvents,
        Action::WriteCluster,
    ];

    /// Stable kebab-case name (logs, error messages).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ReadCluster => "read-cluster",
            Action::ChangeMembership => "change-membership",
            Action::ReadEdges => "read-edges",
            Action::ReadDevices => "read-devices",
            Action::ReadTelemetry => "read-telemetry",
            Action::UploadArtifact => "upload-artifact",
            Action::WriteMonitors => "write-monitors",
            Action::ReadMonitors => "read-monitors",
            Action::ReadAlerts => "read-alerts",
            Action::ReadMetrics => "read-metrics",
            Action::ReadEvents => "read-events",
            Action::WriteCluster => "write-cluster",
        }
    }

    /// True when the action concerns one tenant's data, so a tenant token
    /// could be granted it for its own tenant; false for cluster-wide
    /// actions that stay the operator's.
    pub fn tenant_scoped(self) -> bool {
        matches!(
            self,
            Action::ReadDevices
                | Action::ReadTelemetry
                | Action::UploadArtifact
                | Action::WriteMonitors
                | Action::ReadMonitors
                | Action::ReadAlerts
        )
    }
}

/// Why a principal may not do an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No token, and the action is not open to anonymous callers (401).
    #[error("{action} needs a bearer token", action = .action.as_str())]
    Unauthenticated {
        /// The refused action.
        action: Action,
    },
    /// Authenticated, but not allowed (403). Unused while the operator is
    /// the only authenticated principal; tenant tokens will need it.
    #[error("{principal} may not {action}", principal = .principal.as_str(), action = .action.as_str())]
    Forbidden {
        /// Who asked.
        principal: Principal,
        /// The refused action.
        action: Action,
    },
}

/// The authorization rules, from `[auth]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Anonymous callers may do everything (`auth.allow-anonymous`).
    pub allow_anonymous: bool,
    /// Actions open to anonymous callers (`ReadMetrics` when
    /// `auth.open-metrics`).
    pub public: Vec<Action>,
}

impl Policy {
    /// The policy of an `[auth]` table.
    pub fn new(allow_anonymous: bool, open_metrics: bool) -> Policy {
        Policy {
            allow_anonymous,
            public: if open_metrics {
                vec![Action::ReadMetrics]
            } else {
                Vec::new()
            },
        }
    }

    /// May `principal` do `action`? Pure: no clock, no I/O.
    pub fn authorize(&self, principal: &Principal, action: Action) -> Result<(), Denied> {
        match principal {
            Principal::Operator => Ok(()),
            Principal::Anonymous if self.allow_anonymous || self.public.contains(&action) => Ok(()),
            Principal::Anonymous => Err(Denied::Unauthenticated { action }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_may_do_everything() {
        for policy in [Policy::new(false, false), Policy::new(true, true)] {
            for a in Action::ALL {
                assert_eq!(policy.authorize(&Principal::Operator, a), Ok(()), "{a:?}");
            }
        }
    }

    #[test]
    fn anonymous_callers_get_only_what_is_opened() {
        let closed = Policy::new(false, false);
        for a in Action::ALL {
            assert_eq!(
                closed.authorize(&Principal::Anonymous, a),
                Err(Denied::Unauthenticated { action: a })
            );
        }
        let default = Policy::new(false, true);
        for a in Action::ALL {
            let got = default.authorize(&Principal::Anonymous, a);
            assert_eq!(got.is_ok(), a == Action::ReadMetrics, "{a:?}: {got:?}");
        }
        let lab = Policy::new(true, false);
        for a in Action::ALL {
            assert_eq!(lab.authorize(&Principal::Anonymous, a), Ok(()), "{a:?}");
        }
    }

    #[test]
    fn names_are_unique_and_cluster_actions_are_not_tenant_scoped() {
        let names: std::collections::BTreeSet<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names.len(), Action::ALL.len());
        for a in [
            Action::ReadCluster,
            Action::ChangeMembership,
            Action::ReadEdges,
            Action::ReadMetrics,
            Action::ReadEvents,
            Action::WriteCluster,
        ] {
            assert!(!a.tenant_scoped(), "{a:?}");
        }
        assert!(Action::ReadTelemetry.tenant_scoped());
        assert_eq!(
            Denied::Unauthenticated {
                action: Action::ReadAlerts
            }
            .to_string(),
            "read-alerts needs a bearer token"
        );
    }
}
