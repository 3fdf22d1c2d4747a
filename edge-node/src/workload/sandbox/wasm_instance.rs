//! One wasm instance ([`WasmInstance`]): its [`Store`] with the host
//! state, the per-callback budget (fuel + epoch deadline), the call into
//! the guest with its input copied through `strata_alloc`, and the
//! classification of whatever stopped a callback into an
//! [`InstanceFault`]. A fault leaves the instance dead with that fault;
//! a faulted callback's kv writes are rolled back.

use std::sync::Arc;
use std::time::Instant;

use bincode::config::standard;
use strata_protocol::TelemetryRecord;
use wasmtime::{Engine, InstancePre, Store, Trap, TypedFunc};

use super::abi::{self, HostState};
use super::{
    BatchOutput, InstanceConfig, InstanceFault, KvState, PreparedModule, RuntimeError,
    SandboxInstance,
};
use crate::workload::model::{millicores_from_fuel, Budget, InstanceKey, InstanceUsage, MIB};

/// The ABI version this host implements.
pub const ABI_VERSION: i32 = 1;

/// A compiled module with its imports resolved.
pub(super) struct Compiled {
    pub(super) pre: InstancePre<HostState>,
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

    pub(super) fn start(
        engine: &Engine,
        epoch_tick_ms: u64,
        compiled: &Compiled,
        module: &PreparedModule,
        cfg: InstanceConfig,
    ) -> Result<Self, RuntimeError> {
        let key = cfg.key;
        let sha256 = module.sha256.clone();
        let state = HostState::new(cfg.limits, mem_bytes(cfg.budget), cfg.state);
        let mut store = Store::new(engine, state);
        store.limiter(|s: &mut HostState| -> &mut dyn wasmtime::ResourceLimiter { &mut s.limiter });
        store.epoch_deadline_trap();
        let inst = WasmInstanceBuilder {
            key: &key,
            sha256: &sha256,
        };
        // Instantiation runs the guest's start function: it needs a budget.
        arm(&mut store, cfg.budget, epoch_tick_ms);
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
            epoch_tick_ms,
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

    fn take_state(&mut self, moves: &dyn Fn(&str) -> bool) -> KvState {
        let st = self.store.data_mut();
        let (out, keep): (KvState, KvState) = std::mem::take(&mut st.kv)
            .into_iter()
            .partition(|(k, _)| moves(k));
        st.kv = keep;
        st.kv_bytes = st.kv.iter().map(|(k, v)| k.len() + v.len()).sum();
        out
    }

    fn import_state(&mut self, entries: KvState) -> usize {
        let st = self.store.data_mut();
        let quota = st.limits.kv_quota_bytes as usize;
        let mut dropped = 0;
        for (k, v) in entries {
            let old = st.kv.get(&k).map_or(0, |o| k.len() + o.len());
            let total = st.kv_bytes - old + k.len() + v.len();
            if total > quota {
                dropped += 1;
                continue;
            }
            st.kv_bytes = total;
            st.kv.insert(k, v);
        }
        dropped
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
