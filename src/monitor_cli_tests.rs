//! The monitor commands against a scripted in-test HTTP server: which
//! requests they send (paths, query, content types, the filled-in spec),
//! what they print, and how errors map to exit codes. Argument parsing is
//! checked through clap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clap::Parser;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A request the fake central received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query, as sent.
    target: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Vec<u8>,
}

type Script = HashMap<(&'static str, &'static str), (u16, Value)>;

/// A fake central answering `(method, path)` from `script` (404 JSON
/// otherwise); returns its base URL and the requests log.
async fn fake_central(script: Script) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            // Headers, then Content-Length bytes of body.
            let (head, body_start) = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed early");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (String::from_utf8_lossy(&buf[..i]).into_owned(), i + 4);
                }
            };
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
            };
            let len: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
            while buf.len() < body_start + len {
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let mut first = head.lines().next().unwrap().split(' ');
            let (method, target) = (
                first.next().unwrap().to_owned(),
                first.next().unwrap().to_owned(),
            );
            let path = target.split('?').next().unwrap().to_owned();
            log.lock().unwrap().push(Seen {
                method: method.clone(),
                target,
                content_type: header("content-type"),
                authorization: header("authorization"),
                body: buf[body_start..body_start + len].to_vec(),
            });
            let (status, body) = script
                .iter()
                .find(|((m, p), _)| *m == method && *p == path)
                .map(|(_, r)| r.clone())
                .unwrap_or((404, json!({"error": {"code": "not-found", "message": format!("no route for {method} {path}")}})));
            let body = body.to_string();
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
        }
    });
    (base, seen)
}

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

const SPEC_TOML: &str = r#"name = "boiler"
tenant = "acme"
[selector]
tenant = "acme"
device-globs = ["boiler-*"]
[resources]
memory-mib = 16
cpu-millicores = 50
"#;

/// A token the tests send.
const TOKEN: &str = "cli-test-token-0123456789abcdef0123";

fn api(base: &str) -> ApiArgs {
    ApiArgs {
        api: Some(base.to_owned()),
        json: false,
        token: Some(TOKEN.to_owned()),
        data_dir: "/nonexistent/strata-data".into(),
    }
}

/// A monitor as central answers it: every field of a `MonitorView`, so the
/// CLI's typed decoding accepts it.
fn stored_doc() -> Value {
    json!({"region": "west", "tenant": "acme", "name": "boiler", "edge": "edge-1",
           "generation": 1, "created-ms": 0, "updated-ms": 0,
           "spec": {"name": "boiler", "tenant": "acme", "generation": 1,
                    "artifact": {"sha256": "ab".repeat(32), "size-bytes": 1},
                    "selector": {"tenant": "acme", "device-globs": ["*"]},
                    "resources": {"memory-mib": 8, "cpu-millicores": 10}},
           "status": null, "wanted": 1, "placed": 0, "allocations": [], "evaluations": []})
}

/// Runs a monitor command, returning (result, stdout, stderr).
async fn run(cmd: MonitorCmd) -> (Result<(), CliError>, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let r = run_monitor(cmd, &CliEnv::default(), &mut out, &mut err).await;
    (
        r,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test]
async fn submit_uploads_the_module_and_fills_the_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("boiler.toml");
    std::fs::write(&spec, SPEC_TOML).unwrap();
    let module = dir.path().join("m.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let script: Script = [
        (
            ("POST", "/api/v1/regions/west/artifacts"),
            (
                201,
                json!({"region": "west", "sha256": SHA, "size-bytes": 8, "created": true}),
            ),
        ),
        (
            ("POST", "/api/v1/regions/west/monitors"),
            (201, stored_doc()),
        ),
    ]
    .into();
    let (base, seen) = fake_central(script).await;
    let (r, out, err) = run(MonitorCmd::Submit {
        api: api(&base),
        region: "west".into(),
        module: Some(module.clone()),
        spec,
    })
    .await;
    r.unwrap();
    assert_eq!(
        out,
        "created monitor acme/boiler in region west: generation 1, assigned to edge edge-1\n"
    );
    assert!(
        err.contains("uploaded module") && err.contains(SHA),
        "{err}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].content_type.as_deref(), Some("application/wasm"));
    assert_eq!(seen[0].body, b"\0asm\x01\0\0\0");
    assert_eq!(seen[1].content_type.as_deref(), Some("application/json"));
    let sent: Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(sent["artifact"], json!({"sha256": SHA, "size-bytes": 8}));
    assert_eq!(sent["selector"]["device-globs"], json!(["boiler-*"]));
}

#[tokio::test]
async fn submit_refuses_bad_input_before_sending_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (base, seen) = fake_central(Script::new()).await;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, SPEC_TOML.replace("memory-mib = 16", "memory-mib = 0")).unwrap();
    let module = dir.path().join("m.wasm");
    std::fs::write(&module, b"\0asm").unwrap();
    let submit = |spec: &Path, module: Option<&Path>| MonitorCmd::Submit {
        api: api(&base),
        region: "west".into(),
        module: module.map(Path::to_path_buf),
        spec: spec.to_path_buf(),
    };
    let cases: Vec<(MonitorCmd, Vec<String>)> = vec![
        // Field error, named with the file.
        (
            submit(&bad, Some(&module)),
            vec![bad.display().to_string(), "resources.memory-mib".into()],
        ),
        // No artifact and no module.
        (
            submit(&bad.with_file_name("ok.toml"), None),
            vec!["ok.toml".into(), "--module".into()],
        ),
        // Missing files are named.
        (
            submit(&dir.path().join("nope.toml"), None),
            vec!["cannot read monitor spec".into(), "nope.toml".into()],
        ),
        (
            submit(&bad, Some(&dir.path().join("nope.wasm"))),
            vec!["cannot read module".into(), "nope.wasm".into()],
        ),
    ];
    std::fs::write(dir.path().join("ok.toml"), SPEC_TOML).unwrap();
    for (cmd, needles) in cases {
        let (r, out, _) = run(cmd).await;
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        let msg = e.to_string();
        for n in needles {
            assert!(msg.contains(&n), "missing {n:?} in {msg}");
        }
        assert!(out.is_empty());
    }
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn api_errors_keep_code_message_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("s.json");
    let text = json!({"name": "m", "tenant": "ghost",
        "artifact": {"sha256": SHA, "size-bytes": 8},
        "selector": {"tenant": "ghost", "device-globs": ["*"]},
        "resources": {"memory-mib": 1, "cpu-millicores": 1}});
    std::fs::write(&spec, text.to_string()).unwrap();
    let script: Script = [(
        ("POST", "/api/v1/regions/west/monitors"),
        (
            422,
            json!({"error": {"code": "invalid-spec", "message": "region west: invalid monitor spec",
                   "fields": [{"field": "tenant", "message": "unknown tenant \"ghost\""}]}}),
        ),
    )]
    .into();
    let (base, seen) = fake_central(script).await;
    let (r, _, _) = run(MonitorCmd::Submit {
        api: api(&base),
        region: "west".into(),
        module: None,
        spec,
    })
    .await;
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(
        msg.contains("HTTP 422 invalid-spec") && msg.contains("  - tenant: unknown tenant"),
        "{msg}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "no upload without --module");

    // Unknown monitor: the route's 404 comes back as is.
    let (r, _, _) = run(MonitorCmd::Inspect {
        api: api(&base),
        region: "west".into(),
        tenant: "acme".into(),
        name: "nope".into(),
    })
    .await;
    let e = r.unwrap_err();
    assert!(matches!(&e, CliError::Api { status: 404, .. }), "{e}");
}

#[tokio::test]
async fn list_inspect_delete_send_the_right_requests() {
    let script: Script = [
        (
            ("GET", "/api/v1/monitors"),
            (
                200,
                json!({"monitors": [stored_doc()], "stale": false,
                       "errors": [{"region": "east", "code": "region-unreachable", "message": "down"}]}),
            ),
        ),
        (("GET", "/api/v1/regions/west/monitors/acme/boiler"), (200, stored_doc())),
        (
            ("DELETE", "/api/v1/regions/west/monitors/acme/boiler"),
            (200, json!({"deleted": true})),
        ),
    ]
    .into();
    let (base, seen) = fake_central(script).await;
    let (r, out, err) = run(MonitorCmd::List {
        api: api(&base),
        tenant: Some("acme".into()),
        region: None,
    })
    .await;
    r.unwrap();
    assert!(out.starts_with("REGION") && out.contains("boiler"), "{out}");
    assert!(out.ends_with('\n'), "a table ends its last line: {out:?}");
    assert!(err.contains("region east did not answer"), "{err}");
    let (r, out, _) = run(MonitorCmd::Inspect {
        api: ApiArgs {
            json: true,
            ..api(&base)
        },
        region: "west".into(),
        tenant: "acme".into(),
        name: "boiler".into(),
    })
    .await;
    r.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), stored_doc());
    let (r, out, _) = run(MonitorCmd::Delete {
        api: api(&base),
        region: "west".into(),
        tenant: "acme".into(),
        name: "boiler".into(),
    })
    .await;
    r.unwrap();
    assert_eq!(out, "deleted monitor acme/boiler from region west\n");
    let targets: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert_eq!(
        targets,
        vec![
            "GET /api/v1/monitors?tenant=acme",
            "GET /api/v1/regions/west/monitors/acme/boiler",
            "DELETE /api/v1/regions/west/monitors/acme/boiler",
        ]
    );
}

#[tokio::test]
async fn alerts_send_every_filter_and_print_a_table() {
    let script: Script = [(
        ("GET", "/api/v1/alerts"),
        (
            200,
            json!({"alerts": [{"ts-ms": 1000, "severity": "warning", "region": "west",
                    "tenant": "acme", "device": "d1", "monitor": "z", "edge": "e",
                    "code": "anomaly", "message": "z=4"}], "count": 1, "truncated": false,
                    "from-ms": 400000, "to-ms": 1060000, "stale": false, "errors": []}),
        ),
    )]
    .into();
    let (base, seen) = fake_central(script).await;
    let args = AlertsArgs {
        api: api(&base),
        tenant: Some("acme".into()),
        device: Some("d 1".into()),
        monitor: Some("z".into()),
        severity: Some(Severity::Warning),
        since: Some(600_000),
        limit: Some(5),
        region: Some("west".into()),
        follow: false,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    run_alerts(args, &CliEnv::default(), 1_000_000, &mut out, &mut err)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("1970-01-01T00:00:01Z  warning"), "{out}");
    assert_eq!(
        seen.lock().unwrap()[0].target,
        "/api/v1/alerts?tenant=acme&device=d+1&monitor=z&severity=warning&from=400000&limit=5&region=west"
    );
}

#[tokio::test]
async fn unreachable_central_is_exit_1_and_says_where() {
    // Bound then dropped: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (r, _, _) = run(MonitorCmd::List {
        api: api(&addr.to_string()),
        tenant: None,
        region: None,
    })
    .await;
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), 1);
    let msg = e.to_string();
    assert!(
        msg.contains(&addr.to_string()) && msg.contains(API_ENV),
        "{msg}"
    );
    // The OS reason, not only reqwest's summary.
    assert!(msg.contains("refused"), "{msg}");
}

#[tokio::test]
async fn the_token_comes_from_the_data_dir_and_a_401_says_how_to_send_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("central")).unwrap();
    std::fs::write(
        dir.path().join("central/operator.token"),
        format!("{TOKEN}\n"),
    )
    .unwrap();
    let script: Script = [(
        ("GET", "/api/v1/monitors"),
        (
            401,
            json!({"error": {"code": "unauthorized", "message": "the bearer token is not valid"}}),
        ),
    )]
    .into();
    let (base, seen) = fake_central(script).await;
    let args = ApiArgs {
        token: None,
        data_dir: dir.path().to_owned(),
        ..api(&base)
    };
    let (r, _, _) = run(MonitorCmd::List {
        api: args.clone(),
        tenant: None,
        region: None,
    })
    .await;
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    for needle in [
        "HTTP 401 unauthorized",
        "not valid",
        "--token",
        "$STRATA_TOKEN",
        "operator.token",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }
    assert!(!msg.contains(TOKEN), "the token was printed: {msg}");
    assert_eq!(
        seen.lock().unwrap()[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    // $STRATA_TOKEN (passed in) wins over the file; --token over both.
    let env = CliEnv {
        api: None,
        token: Some("env-token-0123456789abcdef0123456789".into()),
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let cmd = MonitorCmd::List {
        api: args.clone(),
        tenant: None,
        region: None,
    };
    assert!(run_monitor(cmd, &env, &mut out, &mut err).await.is_err());
    assert_eq!(
        seen.lock().unwrap()[1].authorization.as_deref(),
        Some("Bearer env-token-0123456789abcdef0123456789")
    );
    // No token anywhere: nothing sent, and the message says so.
    let nowhere = ApiArgs {
        data_dir: dir.path().join("missing"),
        ..args
    };
    let (r, _, _) = run(MonitorCmd::List {
        api: nowhere,
        tenant: None,
        region: None,
    })
    .await;
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("sent no token"), "{msg}");
    assert_eq!(seen.lock().unwrap()[2].authorization, None);
}

/// clap's view of the arguments.
#[derive(Debug, Parser)]
struct T {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
    #[command(subcommand)]
    Monitor(MonitorCmd),
    Alerts(AlertsArgs),
}

#[test]
fn arguments_parse_and_bad_ones_are_refused() {
    let t = T::try_parse_from([
        "strata", "monitor", "submit", "--api", "h:1", "--region", "west", "--module", "m.wasm",
        "s.toml",
    ])
    .unwrap();
    let Top::Monitor(MonitorCmd::Submit {
        api,
        region,
        module,
        spec,
    }) = t.cmd
    else {
        panic!("not submit");
    };
    assert_eq!(
        (api.api.as_deref(), region.as_str(), module, spec),
        (
            Some("h:1"),
            "west",
            Some(PathBuf::from("m.wasm")),
            PathBuf::from("s.toml")
        )
    );
    let t = T::try_parse_from([
        "strata",
        "alerts",
        "--since",
        "10m",
        "--severity",
        "critical",
    ])
    .unwrap();
    let Top::Alerts(a) = t.cmd else {
        panic!("not alerts")
    };
    assert_eq!(
        (a.since, a.severity),
        (Some(600_000), Some(Severity::Critical))
    );
    for (args, needle) in [
        (
            vec!["strata", "alerts", "--severity", "fatal"],
            "expected info, warning or critical",
        ),
        (vec!["strata", "alerts", "--since", "10"], "needs a unit"),
        (vec!["strata", "alerts", "--limit", "0"], "--limit"),
        (vec!["strata", "monitor", "submit", "s.toml"], "--region"),
        (
            vec!["strata", "monitor", "inspect", "west", "acme"],
            "<NAME>",
        ),
    ] {
        let e = T::try_parse_from(&args).unwrap_err().to_string();
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}
