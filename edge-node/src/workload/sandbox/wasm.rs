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
//! native code). [`load_verified`] is the workspace's single audited
//! exception: it only accepts a [`VerifiedCompiled`], which only the disk
//! cache makes after its checks (see its `SAFETY` comment and the cache's
//! module docs); `cache_tests.rs` tests each condition.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bincode::config::standard;
use strata_protocol::workload::RuntimeKind;
use strata_protocol::TelemetryRecord;
use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store, Trap, TypedFunc};

use super::abi::{self, HostState};
use super::cache::{DiskCache, Lookup, VerifiedCompiled, FINGERPRINT_LEN};
use super::{
    BatchOutput, Cached, InstanceConfig, InstanceFault, KvState, PreparedModule, RuntimeError,
    SandboxDriver, SandboxInstance,
};
use crate::workload::model::{millicores_from_fuel, Budget, InstanceKey, InstanceUsage, MIB};

/// The ABI version this host implements.
pub const ABI_VERSION: i32 = 1;

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

/// A compiled module with its imports resolved.
struct Compiled {
    pre: InstancePre<HostState>,
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
/// The workspace's one `unsafe` exception (`unsafe_code` is denied
/// everywhere else).
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
    // turns a mismatch into an `Err`, never into loaded code.
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
        WasmInstance::start(self, compiled, module, cfg).map(|i| Box::new(i) as _)
    }
}

/// One wasm monitor instance.
pub struct WasmInstance {
    key: InstanceKey,
    sha256: String,
    store: Store<HostState>,
    alloc: TypedFunc<i32, i32>,
    on_batch: TypedFunc<(i32, i32), i32>,
    budget: Budget,
    epoch_tick_ms: u64,
    dead: Option<InstanceFault>,
    fuel_total: u64,
    /// (when, fuel_total) at the previous `usage` call.
    last_sample: std::cell::Cell<(Instant, u64)>,
    /// Reused encode buffer for batches.
    buf: Vec<u8>,
}

fn mem_bytes(b: Budget) -> usize {
    usize::try_from(u64::from(b.memory_mib) * MIB).unwrap_or(usize::MAX)
}

impl WasmInstance {
    /// One `strata_on_batch` call over any encodable run of records.
    fn run_batch<R: bincode::Encode + ?Sized>(
        &mut self,
        records: &R,
    ) -> Result<BatchOutput, InstanceFault> {
        if let Some(f) = &self.dead {
            return Err(f.clone());
        }
        let started = Instant::now();
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if let Err(e) = bincode::encode_into_std_write(records, &mut buf, standard()) {
            // Encoding into a Vec only fails on a broken Encode impl.
            self.buf = buf;
            return Err(InstanceFault::AbiViolation(format!(
                "encoding the batch: {e}"
            )));
        }
        let fuel_before = self.fuel_total;
        // A TypedFunc clone is a handle copy.
        let r = self.call_with_bytes(self.on_batch.clone(), &buf);
        self.buf = buf;
        match r {
            Ok(0) => {
                let mut out = std::mem::take(&mut self.store.data_mut().out);
                out.fuel_used = self.fuel_total - fuel_before;
                out.wall_time = started.elapsed();
                Ok(out)
            }
            Ok(code) => {
                let f = InstanceFault::BatchFailed(code);
                self.store.data_mut().rollback_kv();
                self.dead = Some(f.clone());
                Err(f)
            }
            Err(f) => Err(f),
        }
    }

    fn start(
        driver: &WasmDriver,
        compiled: &Compiled,
        module: &PreparedModule,
        cfg: InstanceConfig,
    ) -> Result<Self, RuntimeError> {
        let key = cfg.key;
        let sha256 = module.sha256.clone();
        let state = HostState::new(cfg.limits, mem_bytes(cfg.budget), cfg.state);
        let mut store = Store::new(&driver.engine, state);
        store.limiter(|s: &mut HostState| -> &mut dyn wasmtime::ResourceLimiter { &mut s.limiter });
        store.epoch_deadline_trap();
        let inst = WasmInstanceBuilder {
            key: &key,
            sha256: &sha256,
        };
        // Instantiation runs the guest's start function: it needs a budget.
        arm(&mut store, cfg.budget, driver.cfg.epoch_tick_ms);
        let instance = compiled.pre.instantiate(&mut store).map_err(|e| {
            let fault = classify(e, &mut store, cfg.budget);
            match fault {
                InstanceFault::Trap(reason) => inst.instantiate_err(reason),
                fault => inst.fault(fault),
            }
        })?;
        // Export presence and types were checked at prepare.
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| inst.instantiate_err("no memory export".into()))?;
        store.data_mut().memory = Some(memory);
        let typed = |store: &mut Store<HostState>, name: &str| {
            instance
                .get_func(&mut *store, name)
                .ok_or_else(|| format!("missing export {name}"))
        };
        let version = typed(&mut store, "strata_abi_version")
            .and_then(|f| f.typed::<(), i32>(&store).map_err(|e| format!("{e:#}")))
            .map_err(|r| inst.instantiate_err(r))?;
        let alloc = typed(&mut store, "strata_alloc")
            .and_then(|f| f.typed::<i32, i32>(&store).map_err(|e| format!("{e:#}")))
            .map_err(|r| inst.instantiate_err(r))?;
        let init = typed(&mut store, "strata_init")
            .and_then(|f| {
                f.typed::<(i32, i32), i32>(&store)
                    .map_err(|e| format!("{e:#}"))
            })
            .map_err(|r| inst.instantiate_err(r))?;
        let on_batch = typed(&mut store, "strata_on_batch")
            .and_then(|f| {
                f.typed::<(i32, i32), i32>(&store)
                    .map_err(|e| format!("{e:#}"))
            })
            .map_err(|r| inst.instantiate_err(r))?;

        let found = version
            .call(&mut store, ())
            .map_err(|e| inst.fault(classify(e, &mut store, cfg.budget)))?;
        if found != ABI_VERSION {
            return Err(RuntimeError::AbiVersion {
                instance: key,
                sha256,
                found,
                expected: ABI_VERSION,
            });
        }
        let mut me = WasmInstance {
            key: key.clone(),
            sha256: sha256.clone(),
            store,
            alloc,
            on_batch,
            budget: cfg.budget,
            epoch_tick_ms: driver.cfg.epoch_tick_ms,
            dead: None,
            fuel_total: 0,
            last_sample: std::cell::Cell::new((Instant::now(), 0)),
            buf: Vec::new(),
        };
        let params = cfg.params_json.into_bytes();
        match me.call_with_bytes(init, &params) {
            Ok(0) => Ok(me),
            Ok(code) => Err(inst.fault(InstanceFault::InitFailed(code))),
            Err(f) => Err(inst.fault(f)),
        }
    }

    /// Copies `bytes` into guest memory (through `strata_alloc`) and calls
    /// `f(ptr, len)` under a fresh budget. Classifies any failure.
    fn call_with_bytes(
        &mut self,
        f: TypedFunc<(i32, i32), i32>,
        bytes: &[u8],
    ) -> Result<i32, InstanceFault> {
        arm(&mut self.store, self.budget, self.epoch_tick_ms);
        self.store.data_mut().begin_callback();
        let r = self.call_inner(f, bytes);
        let left = self.store.get_fuel().unwrap_or(0);
        let fuel = self
            .store
            .data()
            .limits
            .fuel_per_callback(self.budget.cpu_millicores);
        self.fuel_total = self.fuel_total.saturating_add(fuel.saturating_sub(left));
        r.map_err(|e| {
            let fault = match e {
                CallError::Fault(f) => f,
                CallError::Wasm(e) => classify(e, &mut self.store, self.budget),
            };
            self.store.data_mut().rollback_kv();
            self.dead = Some(fault.clone());
            fault
        })
    }

    fn call_inner(
        &mut self,
        f: TypedFunc<(i32, i32), i32>,
        bytes: &[u8],
    ) -> Result<i32, CallError> {
        let len = i32::try_from(bytes.len()).map_err(|_| {
            CallError::Fault(InstanceFault::AbiViolation(format!(
                "input of {} bytes does not fit a wasm32 length",
                bytes.len()
            )))
        })?;
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(CallError::Wasm)?;
        let Some(mem) = self.store.data().memory else {
            return Err(CallError::Fault(InstanceFault::AbiViolation(
                "no memory".into(),
            )));
        };
        let data = mem.data_mut(&mut self.store);
        let r = abi::guest_range(data.len(), ptr, len, "strata_alloc result")
            .map_err(|m| CallError::Fault(InstanceFault::AbiViolation(m)))?;
        data[r].copy_from_slice(bytes);
        f.call(&mut self.store, (ptr, len)).map_err(CallError::Wasm)
    }

    fn dead_err(&self) -> Option<RuntimeError> {
        self.dead.as_ref().map(|f| RuntimeError::Dead {
            instance: self.key.clone(),
            fault: f.clone(),
        })
    }
}

enum CallError {
    Fault(InstanceFault),
    Wasm(wasmtime::Error),
}

/// Names the instance in instantiation errors.
struct WasmInstanceBuilder<'a> {
    key: &'a InstanceKey,
    sha256: &'a str,
}

impl WasmInstanceBuilder<'_> {
    fn instantiate_err(&self, reason: String) -> RuntimeError {
        RuntimeError::Instantiate {
            instance: self.key.clone(),
            sha256: self.sha256.to_owned(),
            reason,
        }
    }

    fn fault(&self, fault: InstanceFault) -> RuntimeError {
        RuntimeError::Fault {
            instance: self.key.clone(),
            sha256: self.sha256.to_owned(),
            fault,
        }
    }
}

/// Sets a callback's fuel and wall-clock deadline.
fn arm(store: &mut Store<HostState>, budget: Budget, tick_ms: u64) {
    let limits = &store.data().limits;
    let fuel = limits.fuel_per_callback(budget.cpu_millicores);
    let deadline = limits.deadline_ms(budget.cpu_millicores);
    // Fuel is enabled on the engine, so set_fuel cannot fail.
    let _ = store.set_fuel(fuel);
    // +1: the current tick may be about to end.
    store.set_epoch_deadline(deadline.div_ceil(tick_ms) + 1);
}

/// Turns a wasmtime error into the fault that caused it.
fn classify(err: wasmtime::Error, store: &mut Store<HostState>, budget: Budget) -> InstanceFault {
    let st = store.data_mut();
    let fault = if let Some(f) = st.fault.take() {
        f
    } else {
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => InstanceFault::FuelExhausted {
                fuel: st.limits.fuel_per_callback(budget.cpu_millicores),
            },
            Some(Trap::Interrupt) => InstanceFault::Timeout {
                deadline_ms: st.limits.deadline_ms(budget.cpu_millicores),
            },
            Some(t) => InstanceFault::Trap(t.to_string()),
            None => InstanceFault::Trap(format!("{err:#}")),
        }
    };
    // A refused growth explains whatever the guest did next (trap, spin
    // until out of fuel): report the cause, not the symptom.
    let memory_cause = matches!(
        fault,
        InstanceFault::FuelExhausted { .. }
            | InstanceFault::Timeout { .. }
            | InstanceFault::Trap(_)
    );
    if st.limiter.memory_denied && memory_cause {
        return InstanceFault::MemoryLimit {
            limit_bytes: st.limiter.memory_max_bytes as u64,
            detail: fault.to_string(),
        };
    }
    fault
}

impl SandboxInstance for WasmInstance {
    fn on_batch(&mut self, records: &[TelemetryRecord]) -> Result<BatchOutput, InstanceFault> {
        self.run_batch(records)
    }

    fn on_shared_batch(
        &mut self,
        records: &[Arc<TelemetryRecord>],
    ) -> Result<BatchOutput, InstanceFault> {
        // `Arc<T>` encodes as `T`: the guest sees the same bytes.
        self.run_batch(records)
    }

    fn resize(&mut self, budget: Budget) -> Result<(), RuntimeError> {
        if let Some(e) = self.dead_err() {
            return Err(e);
        }
        if budget.memory_mib == 0 || budget.cpu_millicores == 0 {
            return Err(RuntimeError::Resize {
                instance: self.key.clone(),
                reason: format!("budget {budget:?} has a zero dimension"),
            });
        }
        let used = self
            .store
            .data()
            .memory
            .map_or(0, |m| m.data_size(&self.store));
        let want = mem_bytes(budget);
        if want < used {
            return Err(RuntimeError::Resize {
                instance: self.key.clone(),
                reason: format!(
                    "memory {} MiB is below the {used} bytes of linear memory in use (wasm memory cannot shrink)",
                    budget.memory_mib
                ),
            });
        }
        self.store.data_mut().limiter.memory_max_bytes = want;
        self.budget = budget;
        Ok(())
    }

    fn state(&self) -> KvState {
        self.store.data().kv.clone()
    }

    fn usage(&self) -> InstanceUsage {
        let now = Instant::now();
        let (then, fuel_then) = self.last_sample.replace((now, self.fuel_total));
        let us = now.duration_since(then).as_micros().max(1);
        let fuel_per_s = u128::from(self.fuel_total - fuel_then) * 1_000_000 / us;
        let per_core_s = self
            .store
            .data()
            .limits
            .fuel_per_core_ms
            .saturating_mul(1000);
        let st = self.store.data();
        let mem = st.memory.map_or(0, |m| m.data_size(&self.store)) as u64;
        InstanceUsage {
            cpu_millicores: millicores_from_fuel(
                u64::try_from(fuel_per_s).unwrap_or(u64::MAX),
                per_core_s,
            ),
            memory_bytes: mem + st.kv_bytes as u64,
        }
    }

    fn fuel_consumed(&self) -> u64 {
        self.fuel_total
    }

    fn fuel_per_callback(&self) -> u64 {
        self.store
            .data()
            .limits
            .fuel_per_callback(self.budget.cpu_millicores)
    }
}

impl std::fmt::Debug for WasmInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmInstance")
            .field("key", &self.key)
            .field("sha256", &self.sha256)
            .field("budget", &self.budget)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}
