//! Topic ACLs: pure functions over an [`Identity`] and a topic or filter.
//!
//! - Publish: only `strata/<its tenant>/<a device its glob matches>/…`.
//!   Names compare byte for byte (no case folding, no Unicode
//!   normalisation), a device level is never empty, `.` or `..`, and a
//!   topic name with `+` or `#` is refused. Whether a permitted device
//!   name is well-formed is the payload decoder's call (`bad_name`, v5
//!   0x90), so that refusal keeps its own reason.
//! - Subscribe: only filters that begin with the literal
//!   `strata/<its tenant>/`. So `#`, `+/…`, `strata/+/…`, `strata/#` and
//!   every `$…` filter are refused: a wildcard can never reach another
//!   tenant's topics, because the tenant level is never a wildcard.

use super::credentials::Identity;

/// Why an ACL refused; the text goes into a v5 reason string and the log.
pub type Denied = String;

/// Whether `id` may publish to `topic`.
pub fn may_publish(id: &Identity, topic: &str) -> Result<(), Denied> {
    if topic.contains(['+', '#', '\0']) {
        return Err(format!("topic {topic:?} contains a wildcard"));
    }
    let mut levels = topic.split('/');
    let (root, tenant, device, rest) = (levels.next(), levels.next(), levels.next(), levels.next());
    let (Some("strata"), Some(tenant), Some(device), Some(_)) = (root, tenant, device, rest) else {
        return Err(format!(
            "{} may publish only under strata/{}/<device>/…",
            id.username, id.tenant
        ));
    };
    if tenant != &*id.tenant {
        return Err(format!(
            "{} may not publish for tenant {tenant:?}",
            id.username
        ));
    }
    if !valid_device(device) || !id.may_be(device) {
        return Err(format!(
            "{} may not publish as device {device:?} (allowed: {:?})",
            id.username, id.devices
        ));
    }
    Ok(())
}

/// Whether `id` may subscribe to `filter`.
pub fn may_subscribe(id: &Identity, filter: &str) -> Result<(), Denied> {
    let prefix_ok = filter
        .strip_prefix("strata/")
        .and_then(|rest| rest.strip_prefix(&*id.tenant))
        .is_some_and(|rest| rest.starts_with('/'));
    if prefix_ok {
        Ok(())
    } else {
        Err(format!(
            "{} may subscribe only to filters starting with strata/{}/",
            id.username, id.tenant
        ))
    }
}

fn valid_device(s: &str) -> bool {
    !matches!(s, "" | "." | "..")
}

#[cfg(test)]
mod tests {
    use super::super::credentials::{Credentials, CredentialsFile, IdentityEntry};
    use super::*;

    fn identity(tenant: &str, devices: &str) -> std::sync::Arc<Identity> {
        let file = CredentialsFile {
            identity: vec![IdentityEntry {
                username: "u".into(),
                tenant: tenant.into(),
                devices: devices.into(),
                password_hash: None,
                client_cert: true,
            }],
        };
        assert!(file.problems().is_empty(), "{:?}", file.problems());
        Credentials::from_file(&file, 1).get("u").unwrap().clone()
    }

    #[test]
    fn publish_table() {
        let all = identity("demo", "*");
        let some = identity("demo", "dev-[0-4]");
        let cases: &[(&Identity, &str, bool)] = &[
            (&all, "strata/demo/dev-7/telemetry", true),
            (&all, "strata/demo/dev-7/status", true),
            (&all, "strata/demo/dev-7/telemetry/extra", true),
            (&all, "strata/other/dev-7/telemetry", false),
            (&all, "strata/Demo/dev-7/telemetry", false),
            (&all, "strata/démo/dev-7/telemetry", false),
            // Allowed by `*`; the decoder then refuses the name (bad_name).
            (&all, "strata/demo/dév-7/telemetry", true),
            (&all, "strata/demo/bad name/telemetry", true),
            (&all, "strata/demo/dev-7", false),
            (&all, "strata/demo", false),
            (&all, "strata", false),
            (&all, "", false),
            (&all, "/strata/demo/dev-7/telemetry", false),
            (&all, "strata//dev-7/telemetry", false),
            (&all, "strata/demo//telemetry", false),
            (&all, "strata/demo/../x", false),
            (&all, "strata/demo/./telemetry", false),
            (&all, "strata/+/dev-7/telemetry", false),
            (&all, "strata/demo/+/telemetry", false),
            (&all, "strata/demo/#", false),
            (&all, "strata/demo/dev-7/\0", false),
            (&all, "$SYS/strata/demo/dev-7/telemetry", false),
            (&all, "other/demo/dev-7/telemetry", false),
            (&some, "strata/demo/dev-3/telemetry", true),
            (&some, "strata/demo/dev-7/telemetry", false),
            (&some, "strata/demo/dev-33/telemetry", false),
        ];
        for (id, topic, want) in cases {
            assert_eq!(
                may_publish(id, topic).is_ok(),
                *want,
                "{} {:?} publish {topic:?}",
                id.tenant,
                id.devices
            );
        }
    }

    #[test]
    fn subscribe_table() {
        let a = identity("demo", "*");
        let cases = [
            ("strata/demo/#", true),
            ("strata/demo/+/telemetry", true),
            ("strata/demo/dev-1/telemetry", true),
            ("strata/demo/", true),
            ("strata/demo", false),
            ("strata/demonstration/#", false),
            ("strata/demo+/#", false),
            ("strata/+/#", false),
            ("strata/+/dev-1/telemetry", false),
            ("strata/#", false),
            ("#", false),
            ("+/demo/#", false),
            ("+/+/+/+", false),
            ("$SYS/#", false),
            ("$share/g/strata/demo/#", false),
            ("strata/other/#", false),
            ("strata/Demo/#", false),
            ("strata/démo/#", false),
            ("", false),
        ];
        for (filter, want) in cases {
            assert_eq!(may_subscribe(&a, filter).is_ok(), want, "{filter:?}");
        }
    }

    proptest::proptest! {
        /// No filter an identity may hold matches a topic of another tenant.
        #[test]
        fn a_granted_filter_never_matches_another_tenant(
            filter in "(strata|\\+|#|[a-z]{1,3})(/(demo|other|\\+|#|[a-z]{1,3})){0,4}",
            device in "[a-z0-9-]{1,6}",
        ) {
            let a = identity("demo", "*");
            if may_subscribe(&a, &filter).is_ok() && crate::ingress::topic::valid_filter(&filter) {
                for t in ["other", "demo2", "dem", "+"] {
                    let topic = format!("strata/{t}/{device}/telemetry");
                    proptest::prop_assert!(!crate::ingress::topic::matches(&topic, &filter), "{filter} matched {topic}");
                }
            }
        }
    }
}
