//! The wasmtime driver: one [`Engine`] (fuel + epoch interruption), a
//! bounded in-memory module cache keyed by hash, an optional disk cache of
//! compiled modules ([`super::cache`]), one [`Store`] per instance.
//!
//! CPU is bounded twice per callback: fuel (deterministic work, derived from
//! millicores x the callback time budget) and an epoch deadline (wall clock,
//! for time spent where fuel does not tick, and slow machines). One ticker
//! thread per driver advances the epoch. Memory is bounded by the store's
//! [`ResourceLimiter`](wasmtime::ResourceLimiter). A fault kills only its
//! instance: stores share nothing mutable but the engine's epoch counter.
//!
//! # The one `unsafe` call
//! Loading a compiled module is `unsafe` in wasmtime (the bytes become
//! native code). [`load_verified`] is the one audited `unsafe` exception
//! of the node's library code (the workspace denies `unsafe_code`): it
//! only accepts a [`VerifiedCompiled`], which only the disk cache makes
//! after its checks (see its `SAFETY` comment and the cache's module
//! docs); `cache_tests.rs` tests each condition.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use strata_protocol::workload::RuntimeKind;
use wasmtime::{Config, Engine, Linker, Module};

use super::abi::{self, HostState};
use super::cache::{DiskCache, Lookup, VerifiedCompiled, FINGERPRINT_LEN};
use super::wasm_instance::{Compiled, WasmInstance};
use super::{Cached, InstanceConfig, PreparedModule, RuntimeError, SandboxDriver, SandboxInstance};

/// Driver-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WasmDriverConfig {
    /// Compiled modules kept in the cache (least recently prepared evicted).
    /// Default 64.
    pub module_cache_entries: usize,
    /// Epoch tick, ms: the granularity of wall-clock deadlines. Default 10.
    pub epoch_tick_ms: u64,
    /// Keep compiled modules in `<data-dir>/monitors/cache` so a restarted
    /// edge loads them instead of compiling (files are verified before they
    /// are loaded; a bad one is deleted and the module compiled again).
    /// Default true.
    pub disk_cache: bool,
}

impl Default for WasmDriverConfig {
    fn default() -> Self {
        WasmDriverConfig {
            module_cache_entries: 64,
            epoch_tick_ms: 10,
            disk_cache: true,
        }
    }
}

impl WasmDriverConfig {
    /// Every problem at once, as `field: message` lines.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.module_cache_entries == 0 {
            errs.push("module-cache-entries: must be at least 1".to_owned());
        }
        if !(1..=1000).contains(&self.epoch_tick_ms) {
            errs.push(format!(
                "epoch-tick-ms: {} must be 1-1000",
                self.epoch_tick_ms
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

struct CacheEntry {
    module: PreparedModule,
    last_used: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, CacheEntry>,
    clock: u64,
}

/// The wasmtime [`SandboxDriver`].
pub struct WasmDriver {
    engine: Engine,
    linker: Linker<HostState>,
    cfg: WasmDriverConfig,
    cache: Mutex<Cache>,
    /// Compiled modules on disk, when enabled.
    disk: Option<DiskCache>,
    /// Dropping the sender stops the ticker.
    ticker_stop: Option<mpsc::Sender<()>>,
    ticker: Option<JoinHandle<()>>,
}

impl WasmDriver {
    /// Builds the engine and starts the epoch ticker thread.
    pub fn new(cfg: WasmDriverConfig) -> Result<Self, RuntimeError> {
        cfg.validate()
            .map_err(|p| RuntimeError::Setup(format!("wasm driver config: {}", p.join("; "))))?;
        let mut c = Config::new();
        c.consume_fuel(true);
        c.epoch_interruption(true);
        let engine = Engine::new(&c).map_err(|e| RuntimeError::Setup(format!("engine: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        abi::add_to_linker(&mut linker)
            .map_err(|e| RuntimeError::Setup(format!("linker: {e:#}")))?;
        let (tx, rx) = mpsc::channel::<()>();
        let tick = Duration::from_millis(cfg.epoch_tick_ms);
        let eng = engine.clone();
        let ticker = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || loop {
                match rx.recv_timeout(tick) {
                    Err(RecvTimeoutError::Timeout) => eng.increment_epoch(),
                    _ => return,
                }
            })
            .map_err(|e| RuntimeError::Setup(format!("epoch ticker thread: {e}")))?;
        Ok(WasmDriver {
            engine,
            linker,
            cfg,
            cache: Mutex::new(Cache::default()),
            disk: None,
            ticker_stop: Some(tx),
            ticker: Some(ticker),
        })
    }

    /// Keeps compiled modules in `dir` (created 0700) so a restarted node
    /// loads them instead of compiling. Files of another engine
    /// configuration or wasmtime version are deleted.
    pub fn with_disk_cache(mut self, dir: &Path) -> Result<Self, RuntimeError> {
        let disk = DiskCache::open(dir, &self.fingerprint())
            .map_err(|e| RuntimeError::Setup(e.to_string()))?;
        self.disk = Some(disk);
        Ok(self)
    }

    /// The engine's compatibility fingerprint: 16 hex digits of the sha256
    /// of wasmtime's own precompile compatibility hash (target, compiler
    /// flags, tunables, features, wasmtime version). Compiled modules are
    /// only ever loaded by an engine with the same fingerprint.
    pub fn fingerprint(&self) -> String {
        /// Feeds `Hash` output into a sha256: stable across processes,
        /// unlike `DefaultHasher`'s unspecified algorithm.
        struct Sha(ring::digest::Context);
        impl Hasher for Sha {
            fn write(&mut self, bytes: &[u8]) {
                self.0.update(bytes);
            }
            fn finish(&self) -> u64 {
                0
            }
        }
        let mut h = Sha(ring::digest::Context::new(&ring::digest::SHA256));
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let d = h.0.finish();
        d.as_ref()
            .iter()
            .take(FINGERPRINT_LEN / 2)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Modules currently cached in memory.
    pub fn cached_modules(&self) -> usize {
        self.lock_cache().entries.len()
    }

    /// Remembers a prepared module in the in-memory cache, evicting the
    /// least recently used beyond its bound.
    fn remember(&self, module: &PreparedModule) {
        let mut c = self.lock_cache();
        c.clock += 1;
        let now = c.clock;
        while c.entries.len() >= self.cfg.module_cache_entries {
            let Some(victim) = c
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            c.entries.remove(&victim);
        }
        c.entries.insert(
            module.sha256.clone(),
            CacheEntry {
                module: module.clone(),
                last_used: now,
            },
        );
    }

    /// The module from the in-memory cache, marked as just used.
    fn recall(&self, sha256: &str) -> Option<PreparedModule> {
        let mut c = self.lock_cache();
        c.clock += 1;
        let now = c.clock;
        c.entries.get_mut(sha256).map(|e| {
            e.last_used = now;
            e.module.clone()
        })
    }

    /// Resolves imports and checks the ABI exports of a module however it
    /// was obtained.
    fn link(&self, sha256: &str, module: &Module) -> Result<Compiled, RuntimeError> {
        let invalid = |reason: String| RuntimeError::InvalidArtifact {
            sha256: sha256.to_owned(),
            reason,
        };
        check_exports(module).map_err(invalid)?;
        let pre = self
            .linker
            .instantiate_pre(module)
            .map_err(|e| invalid(format!("imports: {e:#}")))?;
        Ok(Compiled { pre })
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds no invariant a panicking holder could break
        // (insert/remove are single calls), so a poisoned lock is usable.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn compile(&self, sha256: &str, artifact: &[u8]) -> Result<Compiled, RuntimeError> {
        let invalid = |reason: String| RuntimeError::InvalidArtifact {
            sha256: sha256.to_owned(),
            reason,
        };
        // Binary modules start with "\0asm"; the text format is accepted too
        // (it is the same module), anything else gets a plain answer.
        if !artifact.starts_with(b"\0asm") && std::str::from_utf8(artifact).is_err() {
            return Err(invalid(
                "not a WebAssembly module (no \\0asm header and not text format)".to_owned(),
            ));
        }
        let module = Module::new(&self.engine, artifact)
            .map_err(|e| invalid(format!("does not validate: {e:#}")))?;
        self.link(sha256, &module)
    }
}

/// Loads a compiled module that the disk cache verified.
///
/// The one `unsafe` exception of the node's library code (the workspace
/// denies `unsafe_code`).
#[allow(unsafe_code)]
fn load_verified(engine: &Engine, compiled: &VerifiedCompiled) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize` requires bytes that `Module::serialize`
    // produced, unmodified. A `VerifiedCompiled` can only come from
    // `DiskCache::get`, which returns the exact bytes it checked: read from
    // a 0600 file in a 0700 directory only this process's user can write,
    // written whole by `DiskCache::put` (tmp + fsync + rename) with the
    // payload of `Module::serialize`, carrying that module's sha256, this
    // engine's compatibility fingerprint, and the payload's length and
    // sha256, all of which matched. So the payload is what this engine
    // configuration serialized for this module. wasmtime's own header
    // check (version and config) runs inside `deserialize` as well and
    // turns a mismatch into an `Err`, never into loaded code. Loading the
    // checked bytes from memory (not `deserialize_file`, which maps the
    // file by path again after the check and keeps reading it for as long
    // as the module lives) leaves no window in which the file could change
    // between the check and the code that runs.
    unsafe { Module::deserialize(engine, compiled.payload()) }
}

impl Drop for WasmDriver {
    fn drop(&mut self) {
        self.ticker_stop.take();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// Checks the ABI's required exports and their types.
fn check_exports(module: &Module) -> Result<(), String> {
    use wasmtime::ValType::I32;
    let want: [(&str, &[wasmtime::ValType], &[wasmtime::ValType]); 4] = [
        ("strata_abi_version", &[], &[I32]),
        ("strata_alloc", &[I32], &[I32]),
        ("strata_init", &[I32, I32], &[I32]),
        ("strata_on_batch", &[I32, I32], &[I32]),
    ];
    let mut problems = Vec::new();
    match module.get_export("memory") {
        Some(wasmtime::ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
        Some(_) => problems.push("export `memory` is not a 32-bit unshared memory".to_owned()),
        None => problems.push("missing export `memory`".to_owned()),
    }
    for (name, params, results) in want {
        match module.get_export(name) {
            Some(wasmtime::ExternType::Func(f)) => {
                let p: Vec<_> = f.params().collect();
                let r: Vec<_> = f.results().collect();
                let same = |a: &[wasmtime::ValType], b: &[wasmtime::ValType]| {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| wasmtime::ValType::eq(x, y))
                };
                if !same(&p, params) || !same(&r, results) {
                    problems.push(format!(
                        "export `{name}` has type ({p:?}) -> ({r:?}), ABI wants ({params:?}) -> ({results:?})"
                    ));
                }
            }
            Some(_) => problems.push(format!("export `{name}` is not a function")),
            None => problems.push(format!("missing export `{name}`")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

impl SandboxDriver for WasmDriver {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Wasm
    }

    fn prepare(&self, sha256: &str, artifact: &[u8]) -> Result<PreparedModule, RuntimeError> {
        if let Some(m) = self.recall(sha256) {
            return Ok(m);
        }
        let actual = super::sha256_hex(artifact);
        if actual != sha256 {
            return Err(RuntimeError::HashMismatch {
                sha256: sha256.to_owned(),
                actual,
            });
        }
        // Compile outside the lock: it takes milliseconds to seconds. Two
        // concurrent prepares of one new hash both compile; the last wins.
        let compiled = self.compile(sha256, artifact)?;
        if let Some(disk) = &self.disk {
            // Best effort: without the file the next boot compiles again.
            match compiled.pre.module().serialize() {
                Ok(bytes) => {
                    if let Err(e) = disk.put(sha256, &bytes) {
                        tracing::warn!(module = %sha256, error = %e, "compiled module not cached on disk");
                    }
                }
                Err(e) => {
                    tracing::warn!(module = %sha256, error = %format!("{e:#}"), "compiled module not serializable")
                }
            }
        }
        let module = PreparedModule::new(
            sha256.to_owned(),
            RuntimeKind::Wasm,
            artifact.len() as u64,
            Arc::new(compiled),
        );
        self.remember(&module);
        Ok(module)
    }

    fn prepare_cached(&self, sha256: &str) -> Cached {
        if let Some(module) = self.recall(sha256) {
            return Cached::Hit {
                module,
                from_disk: false,
            };
        }
        let Some(disk) = &self.disk else {
            return Cached::Miss;
        };
        let verified = match disk.get(sha256) {
            Lookup::Hit(v) => v,
            Lookup::Miss => return Cached::Miss,
            Lookup::Discarded { reason } => return Cached::Discarded { reason },
        };
        let loaded = load_verified(&self.engine, &verified)
            .map_err(|e| format!("wasmtime refused it: {e:#}"))
            .and_then(|m| self.link(sha256, &m).map_err(|e| e.to_string()));
        match loaded {
            Ok(compiled) => {
                let module = PreparedModule::new(
                    sha256.to_owned(),
                    RuntimeKind::Wasm,
                    verified.payload().len() as u64,
                    Arc::new(compiled),
                );
                self.remember(&module);
                Cached::Hit {
                    module,
                    from_disk: true,
                }
            }
            Err(reason) => Cached::Discarded {
                reason: disk.reject(sha256, &reason),
            },
        }
    }

    fn retain_cached(&self, keep: &dyn Fn(&str) -> bool) {
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.retain(keep) {
                tracing::warn!(error = %e, "removing unused compiled modules");
            }
        }
    }

    fn instantiate(
        &self,
        module: &PreparedModule,
        cfg: InstanceConfig,
    ) -> Result<Box<dyn SandboxInstance>, RuntimeError> {
        let Some(compiled) = module.inner::<Compiled>() else {
            return Err(RuntimeError::ForeignModule {
                sha256: module.sha256.clone(),
                kind: module.kind,
            });
        };
        let mut problems = cfg.limits.validate().err().unwrap_or_default();
        if cfg.budget.memory_mib == 0 {
            problems.push("budget memory-mib: must be greater than 0".to_owned());
        }
        if cfg.budget.cpu_millicores == 0 {
            problems.push("budget cpu-millicores: must be greater than 0".to_owned());
        }
        if !problems.is_empty() {
            return Err(RuntimeError::InvalidConfig {
                instance: cfg.key,
                problems,
            });
        }
        WasmInstance::start(&self.engine, self.cfg.epoch_tick_ms, compiled, module, cfg)
            .map(|i| Box::new(i) as _)
    }
}
