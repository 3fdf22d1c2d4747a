//! Device authentication and ACLs over real sockets, with real
//! `mosquitto_pub` / `mosquitto_sub` where a client we did not write makes
//! the point: wrong and right credentials, tenant-confined wildcards,
//! client-id takeover, revocation by rewriting the file, client
//! certificates over TLS, anonymous access.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::auth::{ClientCerts, IdentityEntry};
use super::test_util::{
    good_payload, identity, write_credentials, Got, Harness, Proto, RawClient, TestSink, PASSWORD,
    USER,
};
use super::IngressConfig;

fn require(bin: &str) -> String {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let p = format!("{dir}/{bin}");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    panic!("`{bin}` not found: install it with `apt-get install -y mosquitto-clients`");
}

/// Runs a mosquitto client to completion (bounded): (success, stderr+stdout).
async fn run(bin: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new(require(bin))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{bin} {args:?} hung"))
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), text)
}

fn pub_args<'a>(port: &'a str, version: &'a str, topic: &'a str, msg: &'a str) -> Vec<&'a str> {
    vec![
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-V",
        version,
        "-q",
        "1",
        "-t",
        topic,
        "-m",
        msg,
    ]
}

const TOPIC: &str = "strata/acme/dev-7/telemetry";

#[tokio::test]
async fn mosquitto_pub_needs_the_right_password() {
    let h = Harness::default_open().await;
    let port = h.addr.port().to_string();
    let msg = String::from_utf8(good_payload(1)).unwrap();
    for version in ["mqttv311", "mqttv5"] {
        let base = pub_args(&port, version, TOPIC, &msg);
        let (ok, out) = run(
            "mosquitto_pub",
            &[&base[..], &["-u", USER, "-P", "wrong"]].concat(),
        )
        .await;
        assert!(!ok, "{version}: wrong password accepted: {out}");
        assert!(out.to_lowercase().contains("password"), "{version}: {out}");
        let (ok, out) = run(
            "mosquitto_pub",
            &[&base[..], &["-u", "nobody", "-P", PASSWORD]].concat(),
        )
        .await;
        assert!(!ok, "{version}: unknown user accepted: {out}");
        let (ok, out) = run("mosquitto_pub", &base).await;
        assert!(!ok, "{version}: anonymous accepted: {out}");
        assert!(out.to_lowercase().contains("authori"), "{version}: {out}");
        let (ok, out) = run(
            "mosquitto_pub",
            &[&base[..], &["-u", USER, "-P", PASSWORD]].concat(),
        )
        .await;
        assert!(ok, "{version}: right password refused: {out}");
    }
    h.sink.wait_records(2).await;
    assert_eq!(
        h.sink.records().len(),
        2,
        "only the authenticated publishes are stored"
    );
    assert_eq!(h.metrics.rejects_for("auth_bad_password"), 2);
    assert_eq!(h.metrics.rejects_for("auth_unknown_user"), 2);
    assert_eq!(h.metrics.rejects_for("auth_anonymous"), 2);
}

#[tokio::test]
async fn raw_refusal_codes_for_v4_and_v5() {
    let h = Harness::default_open().await;
    for (proto, bad, anon) in [(Proto::V5, 0x86, 0x87), (Proto::V4, 4, 5)] {
        let (_, ack) = RawClient::connect_as(h.addr, proto, "c", 30, Some((USER, "nope"))).await;
        assert_eq!(ack, Some(Got::ConnAck(bad)), "{proto:?}");
        let (mut c, ack) = RawClient::connect_as(h.addr, proto, "c", 30, None).await;
        assert_eq!(ack, Some(Got::ConnAck(anon)), "{proto:?}");
        assert_eq!(c.recv().await, None, "closed after the refusal");
    }
}

#[tokio::test]
async fn anonymous_is_the_lab_mode_only_when_allowed() {
    let mut cfg = IngressConfig::default();
    cfg.auth.allow_anonymous = true;
    let h = Harness::start(cfg, TestSink::new()).await;
    let (mut c, ack) = RawClient::connect_as(h.addr, Proto::V5, "lab", 30, None).await;
    assert_eq!(ack, Some(Got::ConnAck(0)));
    // No identity, no ACLs: today's behaviour, for labs.
    c.publish("strata/anyone/dev-1/telemetry", 1, 1, &good_payload(1))
        .await;
    assert_eq!(c.recv().await, Some(Got::PubAck(1, 0)));
    // Credentials that are sent are still checked.
    let (_, ack) = RawClient::connect_as(h.addr, Proto::V5, "x", 30, Some((USER, "nope"))).await;
    assert_eq!(ack, Some(Got::ConnAck(0x86)));
    let mut id = RawClient::connect(h.addr, Proto::V5, "acme-dev", 30).await;
    id.publish("strata/anyone/dev-1/telemetry", 1, 2, &good_payload(2))
        .await;
    assert_eq!(id.recv().await, Some(Got::PubAck(2, 0x87)));
}

/// Two tenants on one edge: `acme`'s subscriber sees only `acme`; its
/// attempts to read `beta` or everything are refused; beta's publish
/// reaches nobody of acme.
#[tokio::test]
async fn wildcard_subscriptions_stay_inside_the_tenant() {
    let h = Harness::with_identities(vec![identity("beta-fleet", "beta", "*", "beta-pw")]).await;

    // Raw: the refusal codes of every escaping filter.
    for (proto, no) in [(Proto::V5, 0x87), (Proto::V4, 0x80)] {
        let mut c = RawClient::connect(h.addr, proto, "escaper", 30).await;
        for (pid, f) in [
            (1, "#"),
            (2, "+/beta/#"),
            (3, "strata/+/dev-1/telemetry"),
            (4, "strata/beta/#"),
            (5, "$SYS/#"),
        ] {
            c.subscribe(pid, f, 1).await;
            assert_eq!(
                c.recv().await,
                Some(Got::SubAck(pid, vec![no])),
                "{proto:?} {f}"
            );
        }
    }

    let port = h.addr.port().to_string();
    // mosquitto_sub of acme asking for beta's data is refused.
    let (ok, out) = run(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-u",
            USER,
            "-P",
            PASSWORD,
            "-t",
            "strata/beta/#",
            "-C",
            "1",
            "-W",
            "3",
        ],
    )
    .await;
    // mosquitto_sub exits 0 after saying so; what matters is the denial.
    assert!(
        out.contains("All subscription requests were denied"),
        "subscription to another tenant was granted (exit ok = {ok}): {out}"
    );

    // acme's own wildcard subscriber.
    let mut sub = Command::new(require("mosquitto_sub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv311",
            "-u",
            USER,
            "-P",
            PASSWORD,
        ])
        .args([
            "-t",
            "strata/acme/#",
            "-v",
            "-C",
            "1",
            "-W",
            "9",
            "-i",
            "acme-sub",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    let m = h.metrics.clone();
    tokio::time::timeout(Duration::from_secs(8), async move {
        while m.subscribers.get() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("mosquitto_sub never subscribed");
    let beta_msg = String::from_utf8(good_payload(1)).unwrap();
    let acme_msg = String::from_utf8(good_payload(2)).unwrap();
    let (ok, out) = run(
        "mosquitto_pub",
        &[
            &pub_args(&port, "mqttv5", "strata/beta/dev-1/telemetry", &beta_msg)[..],
            &["-u", "beta-fleet", "-P", "beta-pw"],
        ]
        .concat(),
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = run(
        "mosquitto_pub",
        &[
            &pub_args(&port, "mqttv5", TOPIC, &acme_msg)[..],
            &["-u", USER, "-P", PASSWORD],
        ]
        .concat(),
    )
    .await;
    assert!(ok, "{out}");
    let line = tokio::time::timeout(Duration::from_secs(8), lines.next_line())
        .await
        .expect("acme's subscriber got nothing")
        .unwrap()
        .unwrap();
    assert_eq!(
        line,
        format!("{TOPIC} {acme_msg}"),
        "the first (only) message is acme's own"
    );
    assert!(h.metrics.rejects_for("subscribe_not_authorized") >= 11);
}

#[tokio::test]
async fn a_client_id_can_be_taken_over_only_by_the_same_identity() {
    let h = Harness::with_identities(vec![identity("other", "other", "*", "other-pw")]).await;
    let mut holder = RawClient::connect(h.addr, Proto::V5, "dev-7", 30).await;
    let (mut thief, ack) =
        RawClient::connect_as(h.addr, Proto::V5, "dev-7", 30, Some(("other", "other-pw"))).await;
    assert_eq!(ack, Some(Got::ConnAck(0x85)), "another identity is refused");
    assert_eq!(thief.recv().await, None);
    let (_, ack) =
        RawClient::connect_as(h.addr, Proto::V4, "dev-7", 30, Some(("other", "other-pw"))).await;
    assert_eq!(ack, Some(Got::ConnAck(2)), "v3.1.1: identifier rejected");
    // The holder was not disturbed.
    holder.publish(TOPIC, 1, 1, &good_payload(1)).await;
    assert_eq!(holder.recv().await, Some(Got::PubAck(1, 0)));
    assert_eq!(h.metrics.rejects_for("client_id_in_use"), 2);
    // The same identity takes over, as MQTT says.
    let mut again = RawClient::connect(h.addr, Proto::V5, "dev-7", 30).await;
    assert_eq!(holder.recv().await, Some(Got::Disconnect(0x8e)));
    again.publish(TOPIC, 1, 2, &good_payload(2)).await;
    assert_eq!(again.recv().await, Some(Got::PubAck(2, 0)));
}

/// Rewriting the file (removing one identity, changing another's
/// password) disconnects exactly those within the reload interval.
#[tokio::test]
async fn revoked_identities_are_disconnected_and_others_stay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.toml");
    let keep = identity("keeper", "acme", "*", "k");
    write_credentials(
        &path,
        vec![
            keep.clone(),
            identity("gone", "acme", "*", "g"),
            identity("changed", "acme", "*", "c"),
        ],
    );
    let mut cfg = IngressConfig::default();
    cfg.auth.credentials = Some(path.clone());
    cfg.auth.reload_interval = Duration::from_millis(200);
    let h = Harness::start(cfg, TestSink::new()).await;
    let login = |u: &'static str, p: &'static str| Some((u, p));
    let (mut keeper, a1) =
        RawClient::connect_as(h.addr, Proto::V5, "k", 30, login("keeper", "k")).await;
    let (mut gone5, a2) =
        RawClient::connect_as(h.addr, Proto::V5, "g5", 30, login("gone", "g")).await;
    let (mut gone4, a3) =
        RawClient::connect_as(h.addr, Proto::V4, "g4", 30, login("gone", "g")).await;
    let (mut changed, a4) =
        RawClient::connect_as(h.addr, Proto::V5, "c", 30, login("changed", "c")).await;
    assert!([a1, a2, a3, a4].iter().all(|a| *a == Some(Got::ConnAck(0))));

    write_credentials(
        &path,
        vec![keep, identity("changed", "acme", "*", "new-password")],
    );
    assert_eq!(gone5.recv().await, Some(Got::Disconnect(0x87)));
    assert_eq!(gone5.recv().await, None);
    assert_eq!(gone4.recv().await, None, "v3.1.1: closed");
    assert_eq!(changed.recv().await, Some(Got::Disconnect(0x87)));
    keeper.publish(TOPIC, 1, 1, &good_payload(1)).await;
    assert_eq!(keeper.recv().await, Some(Got::PubAck(1, 0)));
    assert_eq!(h.metrics.rejects_for("revoked"), 3);
    let (_, ack) = RawClient::connect_as(h.addr, Proto::V5, "g5", 30, login("gone", "g")).await;
    assert_eq!(ack, Some(Got::ConnAck(0x86)));
    let (_, ack) =
        RawClient::connect_as(h.addr, Proto::V5, "c", 30, login("changed", "new-password")).await;
    assert_eq!(ack, Some(Got::ConnAck(0)));
}

/// MQTT over TLS with real mosquitto_pub: a client certificate whose CN is
/// in the file logs in as that identity (its ACL applies), an unknown CN is
/// refused, and username/password still works over TLS.
#[tokio::test]
async fn tls_client_certificates_name_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let pki = strata_net::Pki::ensure(&dir.path().join("pki")).unwrap();
    // A server certificate for "localhost", so the client verifies the name.
    let server = pki.node("localhost").unwrap();
    let known = pki.device("pump-7").unwrap();
    let unknown = pki.device("stranger").unwrap();
    let creds = dir.path().join("devices.toml");
    write_credentials(
        &creds,
        vec![
            IdentityEntry {
                username: "pump-7".into(),
                tenant: "acme".into(),
                devices: "pump-7".into(),
                password_hash: None,
                client_cert: true,
            },
            identity(USER, "acme", "*", PASSWORD),
        ],
    );
    let mut cfg = IngressConfig::default();
    cfg.auth.credentials = Some(creds);
    cfg.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.tls.cert = Some(server.cert.clone());
    cfg.tls.key = Some(server.key.clone());
    cfg.tls.client_ca = Some(pki.device_ca_path());
    cfg.tls.client_certs = ClientCerts::Optional;
    let h = Harness::start(cfg, TestSink::new()).await;
    let port = h.tls_addr.unwrap().port().to_string();
    let ca = known.ca.display().to_string();
    let tls = |f: &strata_net::TlsFiles| {
        vec![
            "--cert".to_owned(),
            f.cert.display().to_string(),
            "--key".to_owned(),
            f.key.display().to_string(),
        ]
    };
    let msg = String::from_utf8(good_payload(1)).unwrap();
    let base = |topic: &'static str| -> Vec<String> {
        [
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            &ca,
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            &msg,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let go = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run("mosquitto_pub", &refs).await
    };
    let (ok, out) = go([base("strata/acme/pump-7/telemetry"), tls(&known)].concat()).await;
    assert!(ok, "known CN refused: {out}");
    let (ok, out) = go([
        base("strata/acme/pump-8/telemetry"),
        tls(&known),
        vec!["-V".into(), "mqttv5".into()],
    ]
    .concat())
    .await;
    assert!(
        ok,
        "mosquitto_pub reports a refused v5 QoS 1 publish only in its log: {out}"
    );
    let (ok, out) = go([base("strata/acme/pump-7/telemetry"), tls(&unknown)].concat()).await;
    assert!(!ok, "unknown CN accepted: {out}");
    let pw: Vec<String> = ["-u", USER, "-P", PASSWORD]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (ok, out) = go([base("strata/acme/dev-1/telemetry"), pw].concat()).await;
    assert!(ok, "password over TLS refused: {out}");
    h.sink.wait_records(2).await;
    let mut devices: Vec<String> = h.sink.records().into_iter().map(|r| r.device).collect();
    devices.sort();
    assert_eq!(devices, vec!["dev-1", "pump-7"]);
    assert_eq!(h.metrics.rejects_for("auth_unknown_certificate"), 1);
    assert_eq!(h.metrics.rejects_for("publish_not_authorized"), 1);
}

#[tokio::test]
async fn required_client_certificates_refuse_the_handshake_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = strata_net::Pki::ensure(&dir.path().join("pki")).unwrap();
    let server = pki.node("localhost").unwrap();
    let known = pki.device("pump-7").unwrap();
    let cfg = IngressConfig {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls: super::auth::TlsConfig {
            cert: Some(server.cert),
            key: Some(server.key),
            client_ca: Some(pki.device_ca_path()),
            client_certs: ClientCerts::Required,
        },
        ..Default::default()
    };
    let h = Harness::start(cfg, TestSink::new()).await;
    let port = h.tls_addr.unwrap().port().to_string();
    let ca = known.ca.display().to_string();
    let msg = String::from_utf8(good_payload(1)).unwrap();
    let (ok, out) = run(
        "mosquitto_pub",
        &[
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            &ca,
            "-t",
            TOPIC,
            "-m",
            &msg,
            "-u",
            USER,
            "-P",
            PASSWORD,
        ],
    )
    .await;
    assert!(
        !ok,
        "handshake without a client certificate succeeded: {out}"
    );
    let m = h.metrics.clone();
    tokio::time::timeout(Duration::from_secs(8), async move {
        while m.rejects_for("tls_handshake_failed") < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("handshake failure not counted");
}
