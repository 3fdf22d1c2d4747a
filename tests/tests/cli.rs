//! Bad configs and arguments get a clear error naming the problem and exit
//! code 2, from every binary, without starting anything.

#![allow(clippy::unwrap_used)] // a test: unwrapping is the assertion

use std::process::Command;

use strata_tests::proc::bin_path;

fn run(bin: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin_path(bin).unwrap())
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn unknown_keys_are_named_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (bin, valid) in [
        ("edge-node", "region = \"r\""),
        ("region-hub", "region = \"r\""),
        ("central", "listen = \"127.0.0.1:0\""),
    ] {
        let f = write(&dir, "x.toml", &format!("{valid}\nhubz = 1\n"));
        let (code, err) = run(bin, &["--config", &f]);
        assert_eq!(code, 2, "{bin}: {err}");
        assert!(
            err.contains("hubz") && err.contains("x.toml"),
            "{bin}: {err}"
        );
        assert!(
            !err.contains("backtrace"),
            "{bin} printed a backtrace: {err}"
        );
    }
}

#[test]
fn every_invalid_value_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let edge = write(
        &dir,
        "edge.toml",
        "name = \"bad name\"\nhubs = [\"nowhere\"]\n[uplink]\nmax-inflight = 0\n",
    );
    let (code, err) = run("edge-node", &["--config", &edge]);
    assert_eq!(code, 2, "{err}");
    for needle in ["name:", "hubs:", "tls.ca", "uplink.max-inflight"] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    let hub = write(&dir, "hub.toml", "region = \"\"\nid = 0\n");
    let (code, err) = run("region-hub", &["--config", &hub]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("region") && err.contains("id"), "{err}");
}

#[test]
fn a_missing_config_file_is_named() {
    let (code, err) = run("edge-node", &["--config", "/nonexistent/edge.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/edge.toml"), "{err}");
}

#[test]
fn firmware_sim_rejects_bad_arguments_with_exit_2() {
    let (code, err) = run(
        "firmware-sim",
        &["--devices", "0", "--endpoint", "127.0.0.1:1"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("devices"), "{err}");
}
