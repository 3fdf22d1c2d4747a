//! The credentials file: parsing, validation naming each entry, editing,
//! and the snapshot's revocation fingerprints.

use super::*;

fn cheap() -> Params {
    Params::new(8, 1, 1, None).unwrap()
}

fn entry(username: &str, tenant: &str, devices: &str) -> IdentityEntry {
    IdentityEntry {
        username: username.into(),
        tenant: tenant.into(),
        devices: devices.into(),
        password_hash: Some(hash_password_with(b"pw", cheap()).unwrap()),
        client_cert: false,
    }
}

#[test]
fn the_documented_reference_parses_and_validates() {
    let text = include_str!("../../../../docs/config/devices.toml");
    let f = CredentialsFile::parse(text, "docs/config/devices.toml").unwrap();
    assert!(!f.identity.is_empty());
    let c = Credentials::from_file(&f, 1);
    assert_eq!(c.len(), f.identity.len());
    // The password its comment names is the real one.
    assert!(c
        .get("demo-fleet")
        .unwrap()
        .verify_password(b"demo-password"));
    assert!(c.get("pump-7").unwrap().client_cert);
}

#[test]
fn render_round_trips() {
    let mut f = CredentialsFile::default();
    f.add(entry("demo-fleet", "demo", "*")).unwrap();
    f.add(IdentityEntry {
        client_cert: true,
        password_hash: None,
        ..entry("pump-7", "acme", "pump-7")
    })
    .unwrap();
    let text = f.render();
    assert!(text.starts_with("# Strata device credentials"), "{text}");
    assert_eq!(CredentialsFile::parse(&text, "x").unwrap(), f);
    assert!(matches!(
        f.add(entry("demo-fleet", "demo", "*")),
        Err(CredentialsError::Exists { .. })
    ));
}

#[test]
fn unknown_keys_and_bad_toml_are_refused() {
    let err = CredentialsFile::parse(
        "[[identity]]\nusername = \"a\"\ntenant = \"t\"\ndevices = \"*\"\nclient-cert = true\npasword-hash = \"x\"\n",
        "f.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("pasword-hash") && err.contains("f.toml"),
        "{err}"
    );
    assert!(CredentialsFile::parse("[[identity]\n", "f").is_err());
    assert!(CredentialsFile::parse("identity = 3\n", "f").is_err());
}

#[test]
fn every_bad_entry_is_reported_at_once_by_name() {
    let good_hash = hash_password_with(b"pw", cheap()).unwrap();
    let argon2i = {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::new(Algorithm::Argon2i, Version::V0x13, cheap())
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string()
    };
    let greedy = good_hash.replace("m=8,", "m=4194304,");
    let f = CredentialsFile {
        identity: vec![
            IdentityEntry {
                username: String::new(),
                ..entry("x", "demo", "*")
            },
            entry("dup", "demo", "*"),
            entry("dup", "demo", "*"),
            entry("bad-tenant", "de mo", "*"),
            entry("bad-glob", "demo", "dev-[0-"),
            entry("empty-glob", "demo", ""),
            IdentityEntry {
                password_hash: Some("plaintext".into()),
                ..entry("plain", "demo", "*")
            },
            IdentityEntry {
                password_hash: Some(argon2i),
                ..entry("argon2i", "demo", "*")
            },
            IdentityEntry {
                password_hash: Some(greedy),
                ..entry("greedy", "demo", "*")
            },
            IdentityEntry {
                password_hash: None,
                client_cert: false,
                ..entry("nothing", "demo", "*")
            },
            IdentityEntry {
                username: "ctl\u{7}".into(),
                ..entry("x", "demo", "*")
            },
            entry("fine", "demo", "*"),
        ],
    };
    let p = f.problems();
    for needle in [
        "identity[0] \"\": username",
        "identity[2] \"dup\": username appears more than once",
        "identity[3] \"bad-tenant\": tenant",
        "identity[4] \"bad-glob\": devices",
        "identity[5] \"empty-glob\": devices",
        "identity[6] \"plain\": password-hash",
        "identity[7] \"argon2i\": password-hash: algorithm argon2i",
        "identity[8] \"greedy\": password-hash: costs",
        "identity[9] \"nothing\": has neither",
        "identity[10] \"ctl\\u{7}\": username",
    ] {
        assert!(
            p.iter().any(|l| l.starts_with(needle)),
            "{needle:?} not in {p:#?}"
        );
    }
    assert_eq!(p.len(), 10, "{p:#?}");
    let err = CredentialsFile::parse(&f.render(), "devices.toml").unwrap_err();
    assert!(matches!(err, CredentialsError::Invalid { ref problems, .. } if problems.len() == 10));
}

#[test]
fn hashes_verify_with_their_own_parameters() {
    let h = hash_password(b"correct horse").unwrap();
    assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
    let f = CredentialsFile {
        identity: vec![IdentityEntry {
            password_hash: Some(h),
            ..entry("u", "demo", "*")
        }],
    };
    let c = Credentials::from_file(&f, 1);
    let id = c.get("u").unwrap();
    assert!(id.verify_password(b"correct horse"));
    assert!(!id.verify_password(b"correct horse "));
    assert!(!id.verify_password(b""));
}

#[test]
fn any_change_to_an_entry_revokes_it_and_others_stay() {
    let base = CredentialsFile {
        identity: vec![entry("a", "demo", "*"), entry("b", "demo", "dev-*")],
    };
    let before = Credentials::from_file(&base, 1);
    let a = before.get("a").unwrap().clone();
    let b = before.get("b").unwrap().clone();
    let unchanged = Credentials::from_file(&base, 2);
    assert!(unchanged.still_grants(&a) && unchanged.still_grants(&b));
    let changes: [fn(&mut IdentityEntry); 4] = [
        |e| e.tenant = "other".into(),
        |e| e.devices = "dev-1".into(),
        |e| e.password_hash = Some(hash_password_with(b"pw", cheap()).unwrap()),
        |e| e.client_cert = true,
    ];
    for change in changes {
        let mut f = base.clone();
        change(&mut f.identity[0]);
        let after = Credentials::from_file(&f, 2);
        assert!(!after.still_grants(&a));
        assert!(after.still_grants(&b));
    }
    let mut removed = base.clone();
    removed.remove("a").unwrap();
    assert!(!Credentials::from_file(&removed, 2).still_grants(&a));
}

#[test]
fn globs_match_whole_device_names() {
    let f = CredentialsFile {
        identity: vec![
            entry("one", "demo", "dev-7"),
            entry("set", "demo", "{pump,valve}-[0-9]*"),
        ],
    };
    let c = Credentials::from_file(&f, 1);
    let one = c.get("one").unwrap();
    assert!(one.may_be("dev-7"));
    assert!(!one.may_be("dev-70") && !one.may_be("xdev-7"));
    let set = c.get("set").unwrap();
    assert!(set.may_be("pump-1") && set.may_be("valve-42"));
    assert!(!set.may_be("pump-") && !set.may_be("fan-1"));
}
