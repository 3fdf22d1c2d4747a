//! Pure input handling of the monitor CLI: reading a spec file (TOML or
//! JSON by extension), filling its `artifact` from an uploaded module,
//! resolving the API address and parsing `--since` durations. No sockets
//! here, so every rule is unit-tested; `monitor_cli.rs` drives the HTTP.

use std::path::Path;

use strata_protocol::workload::{ArtifactRef, MonitorSpec, ValidationContext};

/// Where `strata up` serves central's API by default (its `--http`).
pub const DEFAULT_API: &str = "http://127.0.0.1:8080";
/// Environment variable naming the API when `--api` is not given.
pub const API_ENV: &str = "STRATA_API";

/// Stand-in hash used to shape-check a spec whose artifact will come from
/// `--module`; replaced by the uploaded module's hash before submitting.
const PLACEHOLDER_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A failed command. [`CliError::exit_code`] maps it to the process status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// A bad argument, file or spec, found before asking central (exit 2).
    Input(String),
    /// Central answered with an error (exit 2 for 4xx: the request must
    /// change; 1 for 5xx: retry later).
    Api {
        /// HTTP status.
        status: u16,
        /// The error body's `code` (`invalid-spec`, `unknown-region`, …).
        code: String,
        /// The error body's message.
        message: String,
        /// `(field, message)` of an invalid spec.
        fields: Vec<(String, String)>,
    },
    /// Central could not be reached or sent something unreadable (exit 1).
    Transport(String),
}

impl CliError {
    /// 2 when the input must change, 1 when a retry may succeed.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) => 2,
            CliError::Api { status, .. } if (400..500).contains(status) => 2,
            CliError::Api { .. } | CliError::Transport(_) => 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Input(m) | CliError::Transport(m) => f.write_str(m),
            CliError::Api {
                status,
                code,
                message,
                fields,
            } => {
                // An invalid-spec message already lists its fields.
                write!(f, "{message} (HTTP {status} {code})")?;
                if !message.contains('\n') {
                    for (field, msg) in fields {
                        write!(f, "\n  - {field}: {msg}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Spec file syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    /// `.toml`
    Toml,
    /// `.json`
    Json,
}

/// The syntax a spec file's extension names.
pub fn format_of(path: &Path) -> Result<SpecFormat, CliError> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
    {
        Some(e) if e == "toml" => Ok(SpecFormat::Toml),
        Some(e) if e == "json" => Ok(SpecFormat::Json),
        _ => Err(CliError::Input(format!(
            "{}: cannot tell the spec format: name the file *.toml or *.json",
            path.display()
        ))),
    }
}

/// A spec read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedSpec {
    /// The spec; its artifact is a placeholder when the file had none.
    pub spec: MonitorSpec,
    /// The artifact the file named, if any.
    pub file_artifact: Option<ArtifactRef>,
}

/// Parses and checks (offline) the spec text read from `path`.
///
/// With `module_size` (the size of the `--module` file) the spec may omit
/// `artifact`: a placeholder is used for the checks and
/// [`fill_artifact`] sets the real one after the upload. Without it the spec
/// must carry `artifact`. Errors name the file, and the line and column
/// where the parser gives them.
pub fn parse_spec(
    path: &Path,
    text: &str,
    module_size: Option<u64>,
) -> Result<LoadedSpec, CliError> {
    let file = path.display();
    let format = format_of(path)?;
    let has_artifact = match format {
        SpecFormat::Toml => text
            .parse::<toml::Table>()
            .map_err(|e| {
                CliError::Input(format!(
                    "{file}: invalid TOML: {}",
                    e.to_string().trim_end()
                ))
            })?
            .contains_key("artifact"),
        SpecFormat::Json => {
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| CliError::Input(format!("{file}: invalid JSON: {e}")))?;
            let obj = v.as_object().ok_or_else(|| {
                CliError::Input(format!("{file}: a monitor spec must be a JSON object"))
            })?;
            obj.contains_key("artifact")
        }
    };
    let shape = |e: String| CliError::Input(format!("{file}: {e}"));
    let spec = match (has_artifact, module_size, format) {
        (false, None, _) => {
            return Err(CliError::Input(format!(
                "{file}: the spec has no `artifact` (sha256 and size-bytes of an uploaded \
                 module); pass --module FILE.wasm to upload the module and fill it in"
            )))
        }
        (true, _, SpecFormat::Toml) => toml::from_str::<MonitorSpec>(text)
            .map_err(|e| shape(e.to_string().trim_end().to_owned()))?,
        (true, _, SpecFormat::Json) => {
            serde_json::from_str::<MonitorSpec>(text).map_err(|e| shape(e.to_string()))?
        }
        // Appending the table keeps the parser's line numbers right for
        // every line the user wrote.
        (false, Some(size), SpecFormat::Toml) => toml::from_str::<MonitorSpec>(&format!(
            "{text}\n[artifact]\nsha256 = \"{PLACEHOLDER_SHA256}\"\nsize-bytes = {size}\n"
        ))
        .map_err(|e| shape(e.to_string().trim_end().to_owned()))?,
        (false, Some(size), SpecFormat::Json) => {
            let mut v: serde_json::Value =
                serde_json::from_str(text).map_err(|e| shape(e.to_string()))?;
            v["artifact"] = serde_json::json!({ "sha256": PLACEHOLDER_SHA256, "size-bytes": size });
            serde_json::from_value::<MonitorSpec>(v).map_err(|e| shape(e.to_string()))?
        }
    };
    let file_artifact = has_artifact.then(|| spec.artifact.clone());
    let mut checked = spec.clone();
    if let Some(size) = module_size {
        // The module replaces whatever the file said: check with it.
        checked.artifact = ArtifactRef {
            sha256: PLACEHOLDER_SHA256.to_owned(),
            size_bytes: size,
        };
    }
    checked
        .validate(&ValidationContext::default())
        .map_err(|e| CliError::Input(format!("{file}: {e}")))?;
    Ok(LoadedSpec {
        spec,
        file_artifact,
    })
}

/// Sets the spec's artifact to the uploaded module. Returns a note when it
/// replaced a different artifact written in the file (`file_artifact`).
pub fn fill_artifact(
    spec: &mut MonitorSpec,
    file_artifact: Option<&ArtifactRef>,
    sha256: String,
    size_bytes: u64,
) -> Option<String> {
    let new = ArtifactRef { sha256, size_bytes };
    let note = match file_artifact {
        Some(old) if *old != new => Some(format!(
            "the spec's artifact {} ({} bytes) was replaced by the uploaded module {} ({} bytes)",
            old.sha256, old.size_bytes, new.sha256, new.size_bytes
        )),
        _ => None,
    };
    spec.artifact = new;
    note
}

/// The API base URL from `--api`, else `$STRATA_API`, else
/// [`DEFAULT_API`]. `host:port` gets `http://`; only http is supported
/// (central serves plain HTTP).
pub fn resolve_api(arg: Option<&str>, env: Option<&str>) -> Result<reqwest::Url, CliError> {
    let (source, raw) = match (arg, env.filter(|e| !e.trim().is_empty())) {
        (Some(a), _) => ("--api", a.trim()),
        (None, Some(e)) => (API_ENV, e.trim()),
        (None, None) => ("default", DEFAULT_API),
    };
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| CliError::Input(format!("{source} {raw:?} is not a URL: {e}")))?;
    if url.scheme() != "http" {
        return Err(CliError::Input(format!(
            "{source} {raw:?}: scheme {:?} is not supported; central serves http://",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(CliError::Input(format!("{source} {raw:?} has no host")));
    }
    Ok(url)
}

/// `--since`: a whole number with a unit, `ms`, `s`, `m`, `h` or `d`
/// (`90s`, `10m`, `2h`), as milliseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 10m, 2h or 1d"))?;
    let per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("{s:?} needs a unit: ms, s, m, h or d (e.g. 10m)")),
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?}; use ms, s, m, h or d (e.g. 10m)"
            ))
        }
    };
    match n.checked_mul(per) {
        Some(0) => Err(format!("{s:?} must be longer than zero")),
        Some(ms) => Ok(ms),
        None => Err(format!("{s:?} is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_protocol::workload::MAX_ARTIFACT_BYTES;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn toml_spec(with_artifact: bool) -> String {
        let artifact = if with_artifact {
            format!("[artifact]\nsha256 = \"{SHA}\"\nsize-bytes = 100\n")
        } else {
            String::new()
        };
        format!(
            "name = \"boiler\"\ntenant = \"acme\"\nparams = {{ threshold = 80.0 }}\n\
             [selector]\ntenant = \"acme\"\ndevice-globs = [\"boiler-*\"]\n\
             [resources]\nmemory-mib = 16\ncpu-millicores = 50\n{artifact}"
        )
    }

    fn json_spec(with_artifact: bool) -> String {
        let mut v = serde_json::json!({
            "name": "boiler", "tenant": "acme",
            "selector": {"tenant": "acme", "tags": {"site": "plant-1"}},
            "resources": {"memory-mib": 16, "cpu-millicores": 50}
        });
        if with_artifact {
            v["artifact"] = serde_json::json!({"sha256": SHA, "size-bytes": 100});
        }
        serde_json::to_string_pretty(&v).unwrap()
    }

    fn input(e: CliError) -> String {
        assert_eq!(e.exit_code(), 2, "{e}");
        match e {
            CliError::Input(m) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn toml_and_json_specs_with_an_artifact() {
        for (file, text) in [("m.toml", toml_spec(true)), ("m.JSON", json_spec(true))] {
            let l = parse_spec(Path::new(file), &text, None).unwrap();
            let s = &l.spec;
            assert_eq!(
                (s.name.as_str(), s.artifact.sha256.as_str()),
                ("boiler", SHA)
            );
            assert_eq!(s.artifact.size_bytes, 100);
            assert_eq!(l.file_artifact.as_ref(), Some(&s.artifact));
        }
        let s = parse_spec(Path::new("m.toml"), &toml_spec(true), None).unwrap();
        assert_eq!(s.spec.params, r#"{"threshold":80.0}"#);
    }

    #[test]
    fn module_fills_a_missing_artifact() {
        for (file, text) in [("m.toml", toml_spec(false)), ("m.json", json_spec(false))] {
            let l = parse_spec(Path::new(file), &text, Some(4242)).unwrap();
            assert_eq!(l.file_artifact, None, "{file}");
            let mut s = l.spec;
            let note = fill_artifact(&mut s, None, SHA.into(), 4242);
            assert_eq!(note, None);
            assert_eq!(
                s.artifact,
                ArtifactRef {
                    sha256: SHA.into(),
                    size_bytes: 4242
                }
            );
            s.validate(&ValidationContext::default()).unwrap();
        }
        // A file artifact that differs from the module is replaced, with a note.
        let l = parse_spec(Path::new("m.toml"), &toml_spec(true), Some(7)).unwrap();
        let mut s = l.spec;
        let note = fill_artifact(&mut s, l.file_artifact.as_ref(), "ab".repeat(32), 7).unwrap();
        assert!(note.contains(SHA) && note.contains("replaced"), "{note}");
        assert_eq!(s.artifact.size_bytes, 7);
        // A module above the limit is refused before anything is sent.
        let m = input(
            parse_spec(
                Path::new("m.toml"),
                &toml_spec(false),
                Some(MAX_ARTIFACT_BYTES + 1),
            )
            .unwrap_err(),
        );
        assert!(m.contains("artifact.size-bytes"), "{m}");
    }

    /// The README's example specs work with `--module` as documented.
    #[test]
    fn shipped_example_specs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitors");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains("\n[global]") {
                // A global workload (`strata workload submit`), not a monitor.
                continue;
            }
            let l = parse_spec(&path, &text, Some(1000))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(l.file_artifact, None, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 4, "examples in {}", dir.display());
    }

    #[test]
    fn missing_artifact_without_module_names_the_file_and_the_flag() {
        for (file, text) in [
            ("a/m.toml", toml_spec(false)),
            ("a/m.json", json_spec(false)),
        ] {
            let m = input(parse_spec(Path::new(file), &text, None).unwrap_err());
            assert!(m.starts_with(file) && m.contains("--module"), "{m}");
        }
    }

    #[test]
    fn syntax_and_shape_errors_name_file_line_and_key() {
        let bad = toml_spec(true).replace("tenant = \"acme\"\nparams", "tenant = acme\nparams");
        let m = input(parse_spec(Path::new("s.toml"), &bad, None).unwrap_err());
        assert!(
            m.starts_with("s.toml: invalid TOML") && m.contains("line 2"),
            "{m}"
        );

        let unknown = toml_spec(true).replace("[selector]", "priorty = 3\n[selector]");
        let m = input(parse_spec(Path::new("s.toml"), &unknown, None).unwrap_err());
        assert!(
            m.contains("unknown field `priorty`") && m.contains("line 4"),
            "{m}"
        );
        // Line numbers stay right when the artifact is appended.
        let m = input(
            parse_spec(
                Path::new("s.toml"),
                &unknown.replace(
                    &format!("[artifact]\nsha256 = \"{SHA}\"\nsize-bytes = 100\n"),
                    "",
                ),
                Some(5),
            )
            .unwrap_err(),
        );
        assert!(
            m.contains("unknown field `priorty`") && m.contains("line 4"),
            "{m}"
        );

        let m = input(parse_spec(Path::new("s.json"), "{\"name\": ", None).unwrap_err());
        assert!(
            m.starts_with("s.json: invalid JSON") && m.contains("line 1"),
            "{m}"
        );
        let m = input(parse_spec(Path::new("s.json"), "[1]", None).unwrap_err());
        assert!(m.contains("JSON object"), "{m}");
        let typo = json_spec(true).replace("\"resources\"", "\"resource\"");
        let m = input(parse_spec(Path::new("s.json"), &typo, None).unwrap_err());
        assert!(m.contains("unknown field `resource`"), "{m}");
        let m = input(parse_spec(Path::new("s.yaml"), "name: x", None).unwrap_err());
        assert!(
            m.contains("s.yaml") && m.contains("*.toml or *.json"),
            "{m}"
        );
    }

    #[test]
    fn offline_field_errors_are_listed_with_the_file() {
        let bad = toml_spec(true)
            .replace("memory-mib = 16", "memory-mib = 0")
            .replace("name = \"boiler\"", "name = \"bad name\"");
        let m = input(parse_spec(Path::new("s.toml"), &bad, None).unwrap_err());
        assert!(m.starts_with("s.toml: invalid monitor spec"), "{m}");
        assert!(
            m.contains("  - name:") && m.contains("  - resources.memory-mib:"),
            "{m}"
        );
    }

    #[test]
    fn api_address_precedence_and_errors() {
        let url = |a: Option<&str>, e: Option<&str>| resolve_api(a, e).map(|u| u.to_string());
        assert_eq!(url(None, None).unwrap(), "http://127.0.0.1:8080/");
        assert_eq!(
            url(None, Some("10.0.0.1:9000")).unwrap(),
            "http://10.0.0.1:9000/"
        );
        assert_eq!(url(None, Some(" ")).unwrap(), "http://127.0.0.1:8080/");
        assert_eq!(
            url(Some("http://h:1/base"), Some("x:2")).unwrap(),
            "http://h:1/base"
        );
        let m = input(resolve_api(Some("https://h:1"), None).unwrap_err());
        assert!(m.contains("--api") && m.contains("https"), "{m}");
        let m = input(resolve_api(None, Some("http://[::1")).unwrap_err());
        assert!(m.contains(API_ENV), "{m}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(600_000));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        for bad in ["10", "m", "10x", "-5m", "0s", "99999999999999999999d", ""] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("10").unwrap_err().contains("needs a unit"));
    }

    #[test]
    fn api_errors_print_fields_and_pick_exit_codes() {
        let e = CliError::Api {
            status: 404,
            code: "unknown-region".into(),
            message: "region \"mars\" is not configured".into(),
            fields: vec![],
        };
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("HTTP 404 unknown-region"));
        let e = CliError::Api {
            status: 422,
            code: "invalid-spec".into(),
            message: "artifact rejected".into(),
            fields: vec![("artifact".into(), "no memory export".into())],
        };
        assert!(
            e.to_string().ends_with("\n  - artifact: no memory export"),
            "{e}"
        );
        let e = CliError::Api {
            status: 503,
            code: "no-leader".into(),
            message: "m".into(),
            fields: vec![],
        };
        assert_eq!(e.exit_code(), 1);
        assert_eq!(CliError::Transport("x".into()).exit_code(), 1);
    }
}
