use super::*;

fn region(name: &str, hubs: &[&str]) -> Command {
    Command::PutRegion {
        name: name.into(),
        hubs: hubs.iter().map(|h| h.to_string()).collect(),
        now_ms: 10,
    }
}

#[test]
fn the_first_operator_digest_wins_unless_replaced() {
    let mut s = CentralState::default();
    let set = |d: u8, replace| Command::SetOperator {
        digest: [d; 32],
        replace,
    };
    assert_eq!(s.apply(1, set(1, false)), Outcome::Applied);
    // A second replica bootstrapping with its own token file changes nothing.
    assert_eq!(s.apply(1, set(2, false)), Outcome::Unchanged);
    assert_eq!(s.operator(), Some([1; 32]));
    assert_eq!(s.apply(1, set(1, false)), Outcome::Unchanged);
    assert_eq!(s.apply(1, set(3, true)), Outcome::Applied);
    assert_eq!(s.operator(), Some([3; 32]));
    assert_eq!(s.changes(), 2);
}

#[test]
fn regions_register_update_and_retry_idempotently() {
    let mut s = CentralState::default();
    assert_eq!(
        s.apply(1, region("north", &["10.0.0.1:7001"])),
        Outcome::Applied
    );
    assert_eq!(
        s.apply(1, region("north", &["10.0.0.1:7001"])),
        Outcome::Unchanged
    );
    let moved = Command::PutRegion {
        name: "north".into(),
        hubs: vec!["10.0.0.2:7001".into()],
        now_ms: 20,
    };
    assert_eq!(s.apply(1, moved), Outcome::Applied);
    let r = &s.regions()["north"];
    assert_eq!((r.registered_ms, r.updated_ms), (10, 20));
    assert_eq!(
        s.apply(
            1,
            Command::DeleteRegion {
                name: "south".into()
            }
        ),
        Outcome::NotFound {
            what: "region south".into()
        }
    );
}

#[test]
fn a_bad_region_is_refused_with_every_field_named_and_nothing_changes() {
    let mut s = CentralState::default();
    let before = s.clone();
    let Outcome::Refused { reason } = s.apply(1, region("no/slash", &["nohost", "h:1", "h:1"]))
    else {
        panic!("accepted");
    };
    for field in ["name:", "hubs[0]:", "hubs[2]:"] {
        assert!(reason.contains(field), "{field} missing in {reason}");
    }
    assert_eq!(s.regions(), before.regions());
    assert_eq!(s.changes(), before.changes());
    assert!(matches!(
        s.apply(1, region("east", &[])),
        Outcome::Refused { reason } if reason.contains("hubs:")
    ));
}

#[test]
fn tenants_are_created_described_and_deleted() {
    let mut s = CentralState::default();
    let put = |d: &str| Command::PutTenant {
        name: "acme".into(),
        description: d.into(),
        now_ms: 5,
    };
    assert_eq!(s.apply(1, put("")), Outcome::Applied);
    assert_eq!(s.apply(1, put("")), Outcome::Unchanged);
    assert_eq!(s.apply(1, put("pumps")), Outcome::Applied);
    assert_eq!(s.tenants()["acme"].description, "pumps");
    assert!(matches!(
        s.apply(1, put(&"x".repeat(MAX_DESCRIPTION + 1))),
        Outcome::Refused { .. }
    ));
    assert_eq!(
        s.apply(
            1,
            Command::DeleteTenant {
                name: "acme".into()
            }
        ),
        Outcome::Applied
    );
    assert!(s.tenants().is_empty());
}

#[test]
fn commands_and_state_round_trip_and_refuse_unknown_formats() {
    let cmd = region("north", &["h:1"]);
    assert_eq!(Command::decode(&cmd.encode()), Ok(cmd.clone()));
    let mut s = CentralState::default();
    s.apply(1, cmd);
    assert_eq!(CentralState::decode(&s.encode()), Ok(s));
    assert_eq!(Command::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(Command::decode(&[9, 0]), Err(DecodeError::Format(9)));
}
