//! Handler tests through `app(..).oneshot(req)` with in-memory regions:
//! every route's happy path and JSON shape, and every 4xx/5xx path answering
//! with the JSON error body.

use axum::http::StatusCode;
use serde_json::json;
use strata_protocol::{MembershipRefusal, PeerProgress, ReplicaInfo, TelemetryQuery};

use super::test_support::*;
use crate::region::RegionError;

#[tokio::test]
async fn health_is_json() {
    let h = healthy();
    assert_eq!(
        get(&h.state, "/health").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
}

#[tokio::test]
async fn regions_list_every_replica() {
    let h = healthy();
    let (status, body) = get(&h.state, "/api/v1/regions").await;
    assert_eq!(status, StatusCode::OK);
    let regions = body["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2);
    let west = &regions[0];
    assert_eq!(west["name"], "west");
    assert_eq!(west["leader"], 1);
    assert_eq!(west["healthy"], true);
    assert_eq!(west["status"], "healthy");
    assert_eq!(west["problems"], json!([]));
    assert_eq!(west["reachable-replicas"], 2);
    assert_eq!(
        west["replicas"][0],
        json!({
            "addr": "h1:7000", "reachable": true, "id": 1, "role": "leader", "term": 3,
            "leader": 1, "commit-index": 100, "applied-index": 99, "last-index": 101,
            "stored-records": 5000, "cert-expires-ms": NOW + 365 * 86_400_000
        })
    );
    assert_eq!(west["replicas"][1]["role"], "follower");
    let dead = &west["replicas"][2];
    assert_eq!(dead["reachable"], false);
    assert!(
        dead["error"].as_str().unwrap().contains("h3:7000"),
        "{dead}"
    );
}

#[tokio::test]
async fn a_region_with_an_unreachable_voter_is_degraded_naming_it() {
    let h = healthy();
    *h.west.members.lock().unwrap() = (1..=3)
        .map(|id| ReplicaInfo {
            id,
            peer_addr: format!("p{id}:7001"),
            client_addr: format!("h{id}:7000"),
            voter: true,
        })
        .collect();
    let peer = |id: u64, reachable: bool, silent_ms: u64| PeerProgress {
        id,
        voter: true,
        reachable,
        silent_ms,
        matched: 101,
        lag: 0,
        lagging: false,
        joining: false,
    };
    *h.west.peers.lock().unwrap() =
        vec![peer(1, true, 0), peer(2, true, 150), peer(3, false, 4000)];
    let (status, body) = get(&h.state, "/api/v1/regions/west").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["healthy"], false);
    assert_eq!(
        body["problems"],
        json!([
            "replica 3 (h3:7000) unreachable for 4 s (the leader has not heard from it); \
             does not answer central: connect to h3:7000: no answer within 2000 ms"
        ])
    );
    assert_eq!(
        body["members"][2],
        json!({"id": 3, "client-addr": "h3:7000", "voter": true, "reachable": false,
               "silent-ms": 4000, "matched": 101, "lag": 0, "lagging": false, "joining": false})
    );
    // The list says the same.
    let (_, all) = get(&h.state, "/api/v1/regions").await;
    assert_eq!(all["regions"][0]["status"], "degraded");
    assert_eq!(all["regions"][1]["status"], "healthy");
}

#[tokio::test]
async fn refused_membership_changes_are_4xx_with_the_reason() {
    let ok = r#"{"id": 4, "peer-addr": "a:1", "client-addr": "b:2"}"#;
    let url = "/api/v1/regions/east/replicas";
    let cases = [
        (
            MembershipRefusal::NoAnswer {
                id: 4,
                peer_addr: "a:1".into(),
                waited_ms: 30_000,
            },
            StatusCode::CONFLICT,
            "replica-unreachable",
            "replica 4 (a:1) never answered the leader within 30.0 s",
        ),
        (
            MembershipRefusal::Behind {
                id: 4,
                peer_addr: "a:1".into(),
                matched: 7,
                last_index: 700,
                silent_ms: 100,
                waited_ms: 30_000,
            },
            StatusCode::CONFLICT,
            "replica-behind",
            "matched 7 of 700",
        ),
        (
            MembershipRefusal::LeaderChanged { id: 4 },
            StatusCode::SERVICE_UNAVAILABLE,
            "leader-changed",
            "retry the same request",
        ),
    ];
    for (refusal, want, code, needle) in cases {
        let h = harness(Fake::new("east", &[]).failing(RegionError::Refused {
            region: "east".into(),
            refusal,
        }));
        let (status, resp) = send(&h.state, "POST", url, Some(ok)).await;
        let msg = error(status, &resp, want, code);
        assert!(msg.contains(needle) && msg.contains("region east"), "{msg}");
    }
}

#[tokio::test]
async fn one_region_and_unknown_region() {
    let h = healthy();
    let (status, body) = get(&h.state, "/api/v1/regions/east").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "east");
    let (status, body) = get(&h.state, "/api/v1/regions/mars").await;
    let msg = error(status, &body, StatusCode::NOT_FOUND, "unknown-region");
    assert!(
        msg.contains("\"mars\"") && msg.contains("west, east"),
        "{msg}"
    );
}

#[tokio::test]
async fn edges_with_ages_and_partial_failure() {
    let h = healthy();
    let (status, body) = get(&h.state, "/api/v1/edges").await;
    assert_eq!(status, StatusCode::OK);
    let e = &body["edges"][0];
    let mut plain = e.clone();
    for k in [
        "monitor-capacity",
        "monitor-reserved",
        "node",
        "instances",
        "liveness",
        "leases",
        "renewing-leases",
    ] {
        plain.as_object_mut().unwrap().remove(k);
    }
    // The leases of its replace-after instances, and whether they are
    // renewed now.
    assert_eq!(
        (e["leases"].clone(), e["renewing-leases"].clone()),
        (
            json!([{"tenant": "acme", "workload": "boiler", "slot": 0,
                    "allocation": format!("{:032x}", 0xb01e), "fencing-token": 3,
                    "expires-ms": NOW + 2_000}]),
            json!(true)
        )
    );
    assert_eq!(
        plain,
        json!({
            "region": "west", "name": "west-edge-1", "last-seen-ms": NOW - 1500,
            "age-ms": 1500, "spool-records": 7, "spool-bytes": 700, "ingest-rate": 12.5,
            "sync-lag-ms": 250, "cert-expires-ms": NOW + 90 * 86_400_000,
            "connected-clients": 3, "records-stored": 900, "resends-dropped": 12,
            "uptime-ms": 60_000
        })
    );
    // Measured use and monitor capacity, as the edge's heartbeat said.
    assert_eq!(
        (e["monitor-capacity"].clone(), e["monitor-reserved"].clone()),
        (
            json!({"memory-mib": 256, "cpu-millicores": 1000}),
            json!({"memory-mib": 16, "cpu-millicores": 100})
        )
    );
    assert_eq!(e["node"]["cpu-used-millicores"], 400);
    assert_eq!(e["node"]["disk-total-bytes"], 20u64 << 30);
    assert_eq!(e["node"]["process-rss-bytes"], 12 << 20);
    assert_eq!(e["instances"][0]["name"], "boiler");
    assert_eq!(e["instances"][0]["records-dropped"], 4);
    // What the region's failure detector thinks of it.
    assert_eq!(
        e["liveness"],
        json!({
            "state": "up", "classification": "partition", "evidence": ["same-boot-id"],
            "boot-id": 0xfeed, "since-ms": NOW - 30_000, "last-heartbeat-ms": NOW - 1500,
            "detection-ms": null, "event-seq": 4
        })
    );
    assert_eq!(body["edges"].as_array().unwrap().len(), 2);
    assert_eq!(
        (body["stale"].clone(), body["errors"].clone()),
        (json!(false), json!([]))
    );

    let (_, body) = get(&h.state, "/api/v1/edges?region=east").await;
    assert_eq!(body["edges"].as_array().unwrap().len(), 1);
    assert_eq!(body["edges"][0]["region"], "east");

    // One region down: the others still answer, the failure is listed.
    let h = harness(Fake::new("east", &[]).failing(down("east")));
    let (status, body) = get(&h.state, "/api/v1/edges").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["edges"].as_array().unwrap().len(), 1);
    assert_eq!(body["errors"][0]["region"], "east");
    assert_eq!(body["errors"][0]["code"], "region-unreachable");
    // Asking for the failed region alone fails the request.
    let (status, body) = get(&h.state, "/api/v1/edges?region=east").await;
    let msg = error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "region-unreachable",
    );
    assert!(msg.contains("region east"), "{msg}");
}

#[tokio::test]
async fn edges_and_devices_reject_bad_params() {
    let h = healthy();
    let (status, body) = get(&h.state, "/api/v1/edges?region=mars").await;
    error(status, &body, StatusCode::NOT_FOUND, "unknown-region");
    let (status, body) = get(&h.state, "/api/v1/edges?regoin=west").await;
    let msg = error(status, &body, StatusCode::BAD_REQUEST, "invalid-parameter");
    assert!(msg.contains("`regoin`"), "{msg}");
    let (status, body) = get(&h.state, "/api/v1/devices?tenant=a&tenant=b").await;
    let msg = error(status, &body, StatusCode::BAD_REQUEST, "invalid-parameter");
    assert!(msg.contains("`tenant`"), "{msg}");
}

#[tokio::test]
async fn devices_filtered_by_tenant_and_region() {
    let mut east = Fake::new("east", &[("acme", "d2")]);
    east.stale = true;
    let h = harness(east);
    let (status, body) = get(&h.state, "/api/v1/devices?tenant=acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["devices"],
        json!([
            {"region": "west", "tenant": "acme", "device": "d1", "records": 42,
             "first-ts-ms": NOW - 10_000, "last-ts-ms": NOW - 1000,
             "retransmissions-dropped": 3, "seq-reuses": 1, "edge": "edge-1"},
            {"region": "east", "tenant": "acme", "device": "d2", "records": 42,
             "first-ts-ms": NOW - 10_000, "last-ts-ms": NOW - 1000,
             "retransmissions-dropped": 3, "seq-reuses": 1, "edge": "edge-1"},
        ])
    );
    assert_eq!(body["total"], 2);
    assert_eq!(body["stale"], true);
    let (_, body) = get(&h.state, "/api/v1/devices?region=west").await;
    assert_eq!(body["devices"].as_array().unwrap().len(), 2);
    assert_eq!(body["stale"], false);
}

/// A console's device list at 100,000 devices: searched (tenant, id or
/// edge, ignoring case) and paged by central, with the match count.
#[tokio::test]
async fn devices_are_searched_and_paged() {
    let names: Vec<String> = (0..250).map(|i| format!("Pump-{i:03}")).collect();
    let devices: Vec<(&str, &str)> = names.iter().map(|n| ("acme", n.as_str())).collect();
    let h = harness(Fake::new("east", &devices));
    let page = |q: &'static str| {
        let state = h.state.clone();
        async move {
            let (status, body) = get(&state, &format!("/api/v1/devices?{q}")).await;
            assert_eq!(status, StatusCode::OK, "{q}: {body}");
            let ids: Vec<String> = body["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["device"].as_str().unwrap().to_owned())
                .collect();
            (body["total"].as_u64().unwrap(), ids)
        }
    };
    // West holds acme/d1 and other/x; east the 250 pumps.
    let (total, ids) = page("search=pump-1&limit=5").await;
    assert_eq!(total, 100, "Pump-1xx");
    assert_eq!(
        ids,
        ["Pump-100", "Pump-101", "Pump-102", "Pump-103", "Pump-104"]
    );
    let (total, ids) = page("search=PUMP-24&limit=5&offset=8").await;
    assert_eq!(
        (total, ids),
        (10, vec!["Pump-248".to_owned(), "Pump-249".to_owned()])
    );
    let (total, ids) = page("limit=2").await;
    assert_eq!((total, ids), (252, vec!["d1".to_owned(), "x".to_owned()]));
    let (total, ids) = page("offset=251").await;
    assert_eq!((total, ids), (252, vec!["Pump-249".to_owned()]));
    let (total, _) = page("search=edge-1&limit=1").await;
    assert_eq!(total, 252, "the edge a device reports through matches");
    let (total, ids) = page("search=nothing-like-it").await;
    assert_eq!((total, ids.len()), (0, 0));
    for (q, field) in [
        ("search=", "search"),
        ("limit=0", "limit"),
        ("limit=100001", "limit"),
        ("offset=-1", "offset"),
        ("offset=9223372036854775808", "offset"),
        ("sort=name", "sort"),
    ] {
        let (status, body) = get(&h.state, &format!("/api/v1/devices?{q}")).await;
        let msg = error(status, &body, StatusCode::BAD_REQUEST, "invalid-parameter");
        assert!(msg.contains(&format!("`{field}`")), "{q}: {msg}");
    }
}

#[tokio::test]
async fn retention_per_tenant_and_reason() {
    let h = healthy();
    let (status, body) = get(&h.state, "/api/v1/regions/west/retention").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "region": "west", "served-by": "west-hub-1:7000", "stale": false,
            "retention-ms": 604_800_000, "retained-from-ms": NOW - 604_800_000,
            "tenants": [
                {"tenant": "acme", "expired-on-arrival": 2, "expired": 40},
                {"tenant": "globex", "expired-on-arrival": 0, "expired": 7},
            ]
        })
    );
    let (_, body) = get(&h.state, "/api/v1/regions/west/retention?tenant=globex").await;
    assert_eq!(body["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(body["tenants"][0]["tenant"], "globex");
    let (status, body) = get(&h.state, "/api/v1/regions/mars/retention").await;
    error(status, &body, StatusCode::NOT_FOUND, "unknown-region");
    let (status, body) = get(&h.state, "/api/v1/regions/west/retention?tenat=x").await;
    error(status, &body, StatusCode::BAD_REQUEST, "invalid-parameter");
    let h = harness(Fake::new("east", &[]).failing(down("east")));
    let (status, body) = get(&h.state, "/api/v1/regions/east/retention").await;
    assert!(status.is_server_error(), "{status} {body}");
}

#[tokio::test]
async fn telemetry_raw_with_defaults_finds_the_region() {
    let h = healthy();
    let (status, body) = get(&h.state, "/api/v1/telemetry/acme/d1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "region": "west", "tenant": "acme", "device": "d1",
            "from-ms": NOW - 3_600_000, "to-ms": NOW, "step-ms": null, "limit": 10_000,
            "count": 1, "truncated": false, "stale": false, "served-by": "west-hub-1:7000",
            "kind": "raw",
            "records": [{"ts-ms": NOW - 3_600_000 + 1, "seq": 9, "metrics": {"temp": 21.5},
                         "tags": {"site": "a"}}]
        })
    );
    let q = h.west.queries.lock().unwrap().clone();
    assert_eq!(
        q,
        vec![TelemetryQuery {
            tenant: "acme".into(),
            device: "d1".into(),
            from_ms: NOW - 3_600_000,
            to_ms: NOW,
            step_ms: None,
            limit: 10_000,
        }]
    );
}

#[tokio::test]
async fn telemetry_downsampled_with_rfc3339() {
    let h = healthy();
    let uri =
        "/api/v1/telemetry/acme/d2?from=2023-11-14T22:00:00Z&to=1700000000000&step=60000&limit=5";
    let (status, body) = get(&h.state, uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["region"], "east");
    assert_eq!(body["kind"], "downsampled");
    assert_eq!(body["from-ms"], 1_699_999_200_000i64);
    assert_eq!(body["step-ms"], 60_000);
    assert_eq!(
        body["buckets"],
        json!([{"metric": "temp", "start-ms": 1_699_999_200_000i64, "min": 1.0, "max": 3.0,
                "avg": 2.0, "count": 4}])
    );
}

#[tokio::test]
async fn telemetry_errors_name_the_parameter() {
    let h = healthy();
    for (query, param) in [
        ("from=2000&to=1000", "`from`"),
        ("from=1000&to=1000", "`from`"),
        ("step=0", "`step`"),
        ("step=fast", "`step`"),
        ("limit=100001", "`limit`"),
        ("limit=-1", "`limit`"),
        ("to=noon", "`to`"),
        ("frm=1", "`frm`"),
    ] {
        let (status, body) = get(&h.state, &format!("/api/v1/telemetry/acme/d1?{query}")).await;
        let msg = error(status, &body, StatusCode::BAD_REQUEST, "invalid-parameter");
        assert!(msg.contains(param), "{query}: {msg}");
    }
    let (status, body) = get(&h.state, "/api/v1/telemetry/acme/nope").await;
    let msg = error(status, &body, StatusCode::NOT_FOUND, "unknown-device");
    assert!(msg.contains("acme/nope"), "{msg}");
    let (status, body) = get(&h.state, "/api/v1/telemetry/acme/d1?region=mars").await;
    error(status, &body, StatusCode::NOT_FOUND, "unknown-region");
}

#[tokio::test]
async fn telemetry_unknown_device_with_a_region_down_is_unavailable() {
    let h = harness(Fake::new("east", &[]).failing(down("east")));
    let (status, body) = get(&h.state, "/api/v1/telemetry/acme/d9").await;
    let msg = error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "region-unreachable",
    );
    assert!(
        msg.contains("acme/d9") && msg.contains("region east"),
        "{msg}"
    );
    // A device in the healthy region is still readable.
    let (status, _) = get(&h.state, "/api/v1/telemetry/acme/d1").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn add_and_remove_replicas() {
    let h = healthy();
    let body = r#"{"id": 4, "peer-addr": "10.0.0.4:7001", "client-addr": "10.0.0.4:7000"}"#;
    let (status, resp) = send(
        &h.state,
        "POST",
        "/api/v1/regions/west/replicas",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["region"], "west");
    assert_eq!(
        resp["replicas"][1],
        json!({"id": 4, "peer-addr": "10.0.0.4:7001", "client-addr": "10.0.0.4:7000", "voter": true})
    );
    let (status, resp) = send(&h.state, "DELETE", "/api/v1/regions/west/replicas/4", None).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["replicas"].as_array().unwrap().len(), 1);
    assert_eq!(*h.west.changes.lock().unwrap(), vec!["add 4", "remove 4"]);
}

#[tokio::test]
async fn replica_changes_reject_bad_input() {
    let h = healthy();
    let url = "/api/v1/regions/west/replicas";
    let cases = [
        (
            r#"{"id": 4, "peer-addr": "a:1""#,
            "invalid-body",
            "request body",
        ),
        (
            r#"{"id": 4, "peer-addr": "a:1"}"#,
            "invalid-body",
            "client-addr",
        ),
        (
            r#"{"id": 4, "peer-addr": "a:1", "client-addr": "b:2", "x": 1}"#,
            "invalid-body",
            "x",
        ),
        (
            r#"{"id": 0, "peer-addr": "a:1", "client-addr": "b:2"}"#,
            "invalid-body",
            "`id`",
        ),
        (
            r#"{"id": 4, "peer-addr": "a", "client-addr": "b:2"}"#,
            "invalid-body",
            "`peer-addr`",
        ),
    ];
    for (body, code, needle) in cases {
        let (status, resp) = send(&h.state, "POST", url, Some(body)).await;
        let msg = error(status, &resp, StatusCode::BAD_REQUEST, code);
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let ok = r#"{"id": 4, "peer-addr": "a:1", "client-addr": "b:2"}"#;
    let (status, resp) = send(&h.state, "POST", "/api/v1/regions/mars/replicas", Some(ok)).await;
    error(status, &resp, StatusCode::NOT_FOUND, "unknown-region");
    let (status, resp) = send(
        &h.state,
        "DELETE",
        "/api/v1/regions/west/replicas/two",
        None,
    )
    .await;
    let msg = error(status, &resp, StatusCode::BAD_REQUEST, "invalid-parameter");
    assert!(msg.contains("`id`"), "{msg}");
    assert!(h.west.changes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn conflicting_replica_changes_are_refused_with_4xx() {
    let h = healthy();
    let url = "/api/v1/regions/west/replicas";
    let four = r#"{"id": 4, "peer-addr": "10.0.0.4:7001", "client-addr": "10.0.0.4:7000"}"#;
    let (status, _) = send(&h.state, "POST", url, Some(four)).await;
    assert_eq!(status, StatusCode::OK);
    // The same replica again is a retry: forwarded, answered 200.
    let (status, resp) = send(&h.state, "POST", url, Some(four)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    // Id 4 at other addresses would re-address a live member.
    let other = r#"{"id": 4, "peer-addr": "10.0.0.5:7001", "client-addr": "10.0.0.5:7000"}"#;
    let (status, resp) = send(&h.state, "POST", url, Some(other)).await;
    let msg = error(status, &resp, StatusCode::CONFLICT, "replica-exists");
    assert!(
        msg.contains("replica 4 is already a member of region west"),
        "{msg}"
    );
    assert!(msg.contains("10.0.0.4:7001"), "{msg}");
    // The leader (replica 1) cannot remove itself.
    let (status, resp) = send(&h.state, "DELETE", &format!("{url}/1"), None).await;
    let msg = error(status, &resp, StatusCode::CONFLICT, "replica-is-leader");
    assert!(
        msg.contains("replica 1 is the leader of region west"),
        "{msg}"
    );
    // A stranger is not found; the message lists the members.
    let (status, resp) = send(&h.state, "DELETE", &format!("{url}/9"), None).await;
    let msg = error(status, &resp, StatusCode::NOT_FOUND, "unknown-replica");
    assert!(
        msg.contains("replica 9") && msg.contains("members: 1, 4"),
        "{msg}"
    );
    assert_eq!(*h.west.changes.lock().unwrap(), vec!["add 4", "add 4"]);
}

#[tokio::test]
async fn hub_errors_map_to_502_and_503() {
    let ok = r#"{"id": 4, "peer-addr": "a:1", "client-addr": "b:2"}"#;
    let url = "/api/v1/regions/east/replicas";
    let hub = RegionError::Hub {
        region: "east".into(),
        addr: "h1:7000".into(),
        message: "replica 4 already exists".into(),
    };
    let h = harness(Fake::new("east", &[]).failing(hub));
    let (status, resp) = send(&h.state, "POST", url, Some(ok)).await;
    let msg = error(status, &resp, StatusCode::BAD_GATEWAY, "hub-error");
    assert!(msg.contains("replica 4 already exists"), "{msg}");

    let h = harness(Fake::new("east", &[]).failing(RegionError::NoLeader {
        region: "east".into(),
    }));
    let (status, resp) = send(&h.state, "DELETE", "/api/v1/regions/east/replicas/3", None).await;
    error(status, &resp, StatusCode::SERVICE_UNAVAILABLE, "no-leader");
    let h = harness(Fake::new("east", &[]).failing(RegionError::Timeout {
        region: "east".into(),
        timeout_ms: 5000,
    }));
    let (status, resp) = get(&h.state, "/api/v1/devices?region=east").await;
    let msg = error(
        status,
        &resp,
        StatusCode::SERVICE_UNAVAILABLE,
        "hub-timeout",
    );
    assert!(msg.contains("5000 ms"), "{msg}");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let h = healthy();
    let (status, body) = get(&h.state, "/api/v2/nothing").await;
    let msg = error(status, &body, StatusCode::NOT_FOUND, "not-found");
    assert!(msg.contains("/api/v2/nothing"), "{msg}");
    let (status, body) = send(&h.state, "DELETE", "/api/v1/regions", None).await;
    error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let h = healthy();
    get(&h.state, "/api/v1/regions/west").await;
    get(&h.state, "/api/v1/regions/mars").await;
    get(&h.state, "/nowhere").await;
    let (status, body) = get(&h.state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    for line in [
        r#"strata_central_http_requests_total{method="GET",route="/api/v1/regions/{region}",status="200"} 1"#,
        r#"strata_central_http_requests_total{method="GET",route="/api/v1/regions/{region}",status="404"} 1"#,
        r#"strata_central_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
}
