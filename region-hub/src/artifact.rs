//! Monitor modules (artifacts) as the hub accepts them: validated with
//! wasmparser (the version wasmtime uses on the edges) against the host ABI
//! in `docs/monitor-abi.md`, and named by their sha256.
//!
//! Checked here, so a bad module is refused at upload with a clear message
//! rather than faulting on every edge later:
//! - the bytes are a valid core wasm module (not a component);
//! - it exports a 32-bit unshared `memory` and the ABI functions with their
//!   exact signatures ([`REQUIRED_EXPORTS`]);
//! - it imports only functions of module `strata` named in the ABI, with
//!   their exact signatures ([`HOST_IMPORTS`]), and nothing else.
//!
//! Every problem found is reported, joined in one message on field
//! `artifact`.

use strata_protocol::workload::{FieldError, SpecErrors, MAX_ARTIFACT_BYTES};
use wasmparser::types::EntityType;
use wasmparser::{CompositeInnerType, ExternalKind, Parser, Payload, TypeRef, ValType, Validator};

/// The import module of every host function.
pub const IMPORT_MODULE: &str = "strata";

use ValType::{F64, I32};

/// Host functions a module may import: `(name, params, results)`.
pub const HOST_IMPORTS: &[(&str, &[ValType], &[ValType])] = &[
    ("emit_alert", &[I32, I32, I32, I32, I32, I32, I32], &[]),
    ("emit_metric", &[I32, I32, I32, I32, F64], &[]),
    ("kv_get", &[I32, I32, I32, I32], &[I32]),
    ("kv_set", &[I32, I32, I32, I32], &[I32]),
    ("kv_delete", &[I32, I32], &[]),
    ("log", &[I32, I32, I32], &[]),
];

/// Functions a module must export: `(name, params, results)`.
pub const REQUIRED_EXPORTS: &[(&str, &[ValType], &[ValType])] = &[
    ("strata_abi_version", &[], &[I32]),
    ("strata_alloc", &[I32], &[I32]),
    ("strata_init", &[I32, I32], &[I32]),
    ("strata_on_batch", &[I32, I32], &[I32]),
];

/// The sha256 of `bytes` as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn invalid(message: String) -> SpecErrors {
    SpecErrors(vec![FieldError {
        field: "artifact".to_owned(),
        message,
    }])
}

fn sig(params: &[ValType], results: &[ValType]) -> String {
    let list = |v: &[ValType]| {
        v.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(params), list(results))
}

/// Validates a module against the host ABI. See the module docs.
pub fn validate_module(bytes: &[u8]) -> Result<(), SpecErrors> {
    if bytes.is_empty() || bytes.len() as u64 > MAX_ARTIFACT_BYTES {
        return Err(invalid(format!(
            "module is {} bytes; it must be 1 to {MAX_ARTIFACT_BYTES}",
            bytes.len()
        )));
    }
    if !Parser::is_core_wasm(bytes) {
        return Err(invalid(
            "not a WebAssembly core module (bad magic or version; components are not supported)"
                .to_owned(),
        ));
    }
    let owned_types = Validator::new()
        .validate_all(bytes)
        .map_err(|e| invalid(format!("invalid WebAssembly module: {e}")))?;
    let types = owned_types.as_ref();
    let func_sig = |ty: Option<EntityType>| -> Option<(Vec<ValType>, Vec<ValType>)> {
        match ty? {
            EntityType::Func(id) | EntityType::FuncExact(id) => {
                match &types[id].composite_type.inner {
                    CompositeInnerType::Func(f) => {
                        Some((f.params().to_vec(), f.results().to_vec()))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    };
    let mut problems = Vec::new();
    let mut exported = Vec::new();
    let mut memory_ok = None;
    for payload in Parser::new(0).parse_all(bytes) {
        // The validator accepted the module, so parsing cannot fail; any
        // error is still reported rather than unwrapped.
        let payload = payload.map_err(|e| invalid(format!("unreadable module: {e}")))?;
        match payload {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| invalid(format!("unreadable import: {e}")))?;
                    let what = format!("import `{}`.`{}`", import.module, import.name);
                    if import.module != IMPORT_MODULE {
                        problems.push(format!(
                            "{what}: only module `{IMPORT_MODULE}` may be imported"
                        ));
                        continue;
                    }
                    let Some((_, want_p, want_r)) =
                        HOST_IMPORTS.iter().find(|(n, _, _)| *n == import.name)
                    else {
                        problems.push(format!("{what} is not a host function of the ABI"));
                        continue;
                    };
                    if !matches!(import.ty, TypeRef::Func(_) | TypeRef::FuncExact(_)) {
                        problems.push(format!("{what} must be a function"));
                        continue;
                    }
                    match func_sig(types.entity_type_from_import(&import)) {
                        Some((p, r)) if p == *want_p && r == *want_r => {}
                        Some((p, r)) => problems.push(format!(
                            "{what} has type {}, the ABI's is {}",
                            sig(&p, &r),
                            sig(want_p, want_r)
                        )),
                        None => problems.push(format!("{what} has no function type")),
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| invalid(format!("unreadable export: {e}")))?;
                    if export.name == "memory" {
                        memory_ok = Some(match export.kind {
                            ExternalKind::Memory => {
                                let m = types.memory_at(export.index);
                                !m.memory64 && !m.shared
                            }
                            _ => false,
                        });
                    }
                    if let Some((_, want_p, want_r)) =
                        REQUIRED_EXPORTS.iter().find(|(n, _, _)| *n == export.name)
                    {
                        exported.push(export.name.to_owned());
                        match func_sig(types.entity_type_from_export(&export)) {
                            Some((p, r)) if p == *want_p && r == *want_r => {}
                            Some((p, r)) => problems.push(format!(
                                "export `{}` has type {}, the ABI's is {}",
                                export.name,
                                sig(&p, &r),
                                sig(want_p, want_r)
                            )),
                            None => problems
                                .push(format!("export `{}` must be a function", export.name)),
                        }
                    }
                }
            }
            _ => {}
        }
    }
    match memory_ok {
        None => problems.push("missing export `memory`".to_owned()),
        Some(false) => problems.push("export `memory` must be a 32-bit unshared memory".to_owned()),
        Some(true) => {}
    }
    for (name, p, r) in REQUIRED_EXPORTS {
        if !exported.iter().any(|e| e == name) {
            problems.push(format!("missing export `{name}` {}", sig(p, r)));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(invalid(format!(
            "module does not follow the Strata monitor ABI (docs/monitor-abi.md): {}",
            problems.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"(module
      (import "strata" "emit_alert" (func (param i32 i32 i32 i32 i32 i32 i32)))
      (import "strata" "emit_metric" (func (param i32 i32 i32 i32 f64)))
      (import "strata" "kv_get" (func (param i32 i32 i32 i32) (result i32)))
      (import "strata" "log" (func (param i32 i32 i32)))
      (memory (export "memory") 1)
      (func (export "strata_abi_version") (result i32) (i32.const 1))
      (func (export "strata_alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "strata_init") (param i32 i32) (result i32) (i32.const 0))
      (func (export "strata_on_batch") (param i32 i32) (result i32) (i32.const 0)))"#;

    fn message(wat: &str) -> String {
        let bytes = wat::parse_str(wat).unwrap();
        let e = validate_module(&bytes).unwrap_err();
        assert_eq!(e.fields(), vec!["artifact"]);
        e.0[0].message.clone()
    }

    #[test]
    fn a_module_following_the_abi_is_accepted() {
        validate_module(&wat::parse_str(GOOD).unwrap()).unwrap();
    }

    #[test]
    fn each_abi_violation_is_named() {
        let cases = [
            (
                GOOD.replace("(memory (export \"memory\") 1)", "(memory 1)"),
                "missing export `memory`",
            ),
            (
                GOOD.replace("(export \"strata_on_batch\")", ""),
                "missing export `strata_on_batch`",
            ),
            (
                GOOD.replace(
                    "(func (export \"strata_alloc\") (param i32) (result i32) (i32.const 1024))",
                    "(func (export \"strata_alloc\") (param i64) (result i32) (i32.const 1024))",
                ),
                "export `strata_alloc` has type (i64) -> (i32)",
            ),
            (
                GOOD.replace("\"strata\" \"log\"", "\"env\" \"log\""),
                "import `env`.`log`: only module `strata`",
            ),
            (
                GOOD.replace("\"strata\" \"log\"", "\"strata\" \"exec\""),
                "import `strata`.`exec` is not a host function",
            ),
            (
                GOOD.replace(
                    "(func (param i32 i32 i32 i32) (result i32))",
                    "(func (param i32 i32 i32 i32) (result i64))",
                ),
                "import `strata`.`kv_get` has type (i32, i32, i32, i32) -> (i64)",
            ),
        ];
        for (wat, want) in cases {
            let m = message(&wat);
            assert!(m.contains(want), "want {want:?} in {m:?}");
        }
    }

    #[test]
    fn garbage_and_invalid_modules_are_refused() {
        let e = validate_module(b"not wasm at all").unwrap_err();
        assert!(
            e.0[0].message.contains("not a WebAssembly core module"),
            "{e}"
        );
        let e = validate_module(&[]).unwrap_err();
        assert!(e.0[0].message.contains("0 bytes"), "{e}");
        // Valid header, type-incorrect body.
        let m = message(r#"(module (func (export "f") (result i32) (i64.const 1)))"#);
        assert!(m.contains("invalid WebAssembly module"), "{m}");
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    /// The real sample monitors, when `monitors/build.sh` has built them.
    #[test]
    fn built_sample_monitors_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/monitors/wasm");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!(
                "skipped: {} is absent (run monitors/build.sh)",
                dir.display()
            );
            return;
        };
        let mut n = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wasm") {
                let bytes = std::fs::read(&path).unwrap();
                validate_module(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        eprintln!("validated {n} sample monitors in {}", dir.display());
    }
}
