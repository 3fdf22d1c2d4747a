//! Host side of the monitor ABI (docs/monitor-abi.md, version 1): per-store state, the
//! memory/table limiter and the `strata.*` imports.
//!
//! Every guest pointer goes through [`guest_range`]: a bad pointer or length
//! records an [`InstanceFault::AbiViolation`] and stops the callback with an
//! error, never a host panic. Faults raised here are stashed in
//! [`HostState::fault`] because the wasmtime error that unwinds the guest
//! only carries text; the caller takes the stash first when it classifies.

use wasmtime::{Caller, Linker, Memory, ResourceLimiter};

use super::{
    Alert, BatchOutput, DerivedMetric, GuestLog, InstanceFault, KvState, LogLevel, RuntimeLimits,
    Severity,
};

/// Import module name.
pub const IMPORT_MODULE: &str = "strata";

/// Memory and table limits of one store.
#[derive(Debug)]
pub(crate) struct Limiter {
    /// Linear memory budget, bytes.
    pub memory_max_bytes: usize,
    /// Largest table, elements.
    pub table_max_elements: usize,
    /// A growth was refused since the flag was last cleared: a fault that
    /// follows is reported as `MemoryLimit`.
    pub memory_denied: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Ok(false) makes memory.grow return -1 (the ABI's "growth fails"):
        // a careful guest may recover; a careless one faults as MemoryLimit.
        let ok = desired <= self.memory_max_bytes;
        if !ok {
            self.memory_denied = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_max_elements)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

/// Everything a store carries for its instance.
pub(crate) struct HostState {
    /// Limits of this instance.
    pub limits: RuntimeLimits,
    /// Memory and table limiter.
    pub limiter: Limiter,
    /// The guest's exported memory (set right after instantiation).
    pub memory: Option<Memory>,
    /// Output gathered since the last `on_batch` returned.
    pub out: BatchOutput,
    /// Alerts + metrics emitted in the current callback.
    pub emits: u32,
    /// Log lines seen in the current callback.
    pub log_lines: u32,
    /// The key-value state.
    pub kv: KvState,
    /// Sum of key and value bytes in `kv`.
    pub kv_bytes: usize,
    /// Previous values of keys changed in the current callback (first
    /// change only), to roll back a faulted callback.
    pub kv_undo: Vec<(String, Option<Vec<u8>>)>,
    /// Fault raised by a host function in the current callback.
    pub fault: Option<InstanceFault>,
}

impl HostState {
    pub(crate) fn new(limits: RuntimeLimits, memory_max_bytes: usize, kv: KvState) -> Self {
        let kv_bytes = kv.iter().map(|(k, v)| k.len() + v.len()).sum();
        HostState {
            limiter: Limiter {
                memory_max_bytes,
                table_max_elements: limits.max_table_elements as usize,
                memory_denied: false,
            },
            limits,
            memory: None,
            out: BatchOutput::default(),
            emits: 0,
            log_lines: 0,
            kv,
            kv_bytes,
            kv_undo: Vec::new(),
            fault: None,
        }
    }

    /// Resets the per-callback counters before a callback.
    pub(crate) fn begin_callback(&mut self) {
        self.emits = 0;
        self.log_lines = 0;
        self.kv_undo.clear();
        self.fault = None;
        self.limiter.memory_denied = false;
    }

    /// Undoes the kv writes of the current callback (after a fault).
    pub(crate) fn rollback_kv(&mut self) {
        while let Some((k, old)) = self.kv_undo.pop() {
            match old {
                Some(v) => {
                    self.kv.insert(k, v);
                }
                None => {
                    self.kv.remove(&k);
                }
            }
        }
        self.kv_bytes = self.kv.iter().map(|(k, v)| k.len() + v.len()).sum();
    }

    fn remember_old(&mut self, key: &str) {
        if !self.kv_undo.iter().any(|(k, _)| k == key) {
            let old = self.kv.get(key).cloned();
            self.kv_undo.push((key.to_owned(), old));
        }
    }
}

/// Checks `[ptr, ptr+len)` against memory of `mem_len` bytes. Pointers and
/// lengths are wasm32 values: i32 bits read as unsigned.
pub(crate) fn guest_range(
    mem_len: usize,
    ptr: i32,
    len: i32,
    what: &str,
) -> Result<std::ops::Range<usize>, String> {
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    match p.checked_add(l) {
        Some(end) if end <= mem_len => Ok(p..end),
        _ => Err(format!(
            "{what}: range [{p:#x}, +{l}) outside guest memory of {mem_len} bytes"
        )),
    }
}

/// Reads a UTF-8 string from guest memory.
fn guest_str<'a>(mem: &'a [u8], ptr: i32, len: i32, what: &str) -> Result<&'a str, String> {
    let r = guest_range(mem.len(), ptr, len, what)?;
    std::str::from_utf8(&mem[r]).map_err(|e| format!("{what}: not UTF-8 ({e})"))
}

/// Cuts `s` to at most `max` bytes on a char boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Records a fault and returns the error that stops the guest.
fn fail(state: &mut HostState, fault: InstanceFault) -> wasmtime::Error {
    let msg = fault.to_string();
    state.fault = Some(fault);
    wasmtime::Error::msg(msg)
}

fn violation(state: &mut HostState, msg: String) -> wasmtime::Error {
    fail(state, InstanceFault::AbiViolation(msg))
}

/// The guest memory and host state, or a violation if the guest has no
/// memory (cannot happen after prepare's export check; kept total anyway).
fn parts<'a>(
    caller: &'a mut Caller<'_, HostState>,
) -> Result<(&'a mut [u8], &'a mut HostState), wasmtime::Error> {
    match caller.data().memory {
        Some(mem) => Ok(mem.data_and_store_mut(caller)),
        None => Err(violation(
            caller.data_mut(),
            "host call before the guest memory was bound".to_owned(),
        )),
    }
}

/// Counts one alert or metric against the flood cap.
fn count_emit(state: &mut HostState) -> Result<(), wasmtime::Error> {
    state.emits += 1;
    if state.emits > state.limits.max_emits_per_callback {
        let limit = state.limits.max_emits_per_callback;
        return Err(fail(state, InstanceFault::AlertFlood { limit }));
    }
    Ok(())
}

/// Defines the `strata.*` imports.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        "emit_alert",
        |mut caller: Caller<'_, HostState>,
         severity: i32,
         dev_ptr: i32,
         dev_len: i32,
         code_ptr: i32,
         code_len: i32,
         msg_ptr: i32,
         msg_len: i32|
         -> wasmtime::Result<()> {
            let (mem, st) = parts(&mut caller)?;
            count_emit(st)?;
            let Some(severity) = Severity::from_abi(severity) else {
                return Err(violation(
                    st,
                    format!("emit_alert: severity {severity} is not 0, 1 or 2"),
                ));
            };
            let (lab, msgmax) = (
                st.limits.max_label_bytes as usize,
                st.limits.max_message_bytes as usize,
            );
            let alert = (|| {
                Ok::<_, String>(Alert {
                    severity,
                    device: cut(guest_str(mem, dev_ptr, dev_len, "emit_alert device")?, lab)
                        .to_owned(),
                    code: cut(guest_str(mem, code_ptr, code_len, "emit_alert code")?, lab)
                        .to_owned(),
                    message: cut(
                        guest_str(mem, msg_ptr, msg_len, "emit_alert message")?,
                        msgmax,
                    )
                    .to_owned(),
                })
            })()
            .map_err(|m| violation(st, m))?;
            st.out.alerts.push(alert);
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "emit_metric",
        |mut caller: Caller<'_, HostState>,
         dev_ptr: i32,
         dev_len: i32,
         name_ptr: i32,
         name_len: i32,
         value: f64|
         -> wasmtime::Result<()> {
            let (mem, st) = parts(&mut caller)?;
            count_emit(st)?;
            if !value.is_finite() {
                return Err(violation(
                    st,
                    format!("emit_metric: value {value} is not finite"),
                ));
            }
            let lab = st.limits.max_label_bytes as usize;
            let m = (|| {
                Ok::<_, String>(DerivedMetric {
                    device: cut(guest_str(mem, dev_ptr, dev_len, "emit_metric device")?, lab)
                        .to_owned(),
                    name: cut(guest_str(mem, name_ptr, name_len, "emit_metric name")?, lab)
                        .to_owned(),
                    value,
                })
            })()
            .map_err(|m| violation(st, m))?;
            st.out.metrics.push(m);
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "kv_get",
        |mut caller: Caller<'_, HostState>,
         key_ptr: i32,
         key_len: i32,
         out_ptr: i32,
         out_cap: i32|
         -> wasmtime::Result<i32> {
            let (mem, st) = parts(&mut caller)?;
            let key =
                guest_str(mem, key_ptr, key_len, "kv_get key").map_err(|m| violation(st, m))?;
            let out = guest_range(mem.len(), out_ptr, out_cap, "kv_get out")
                .map_err(|m| violation(st, m))?;
            let Some(v) = st.kv.get(key) else {
                return Ok(-1);
            };
            // Values are bounded by the kv quota (u32), so the length fits i32.
            let n = i32::try_from(v.len()).unwrap_or(i32::MAX);
            if v.len() <= out.len() {
                mem[out.start..out.start + v.len()].copy_from_slice(v);
            }
            Ok(n)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "kv_set",
        |mut caller: Caller<'_, HostState>,
         key_ptr: i32,
         key_len: i32,
         val_ptr: i32,
         val_len: i32|
         -> wasmtime::Result<i32> {
            let (mem, st) = parts(&mut caller)?;
            let key =
                guest_str(mem, key_ptr, key_len, "kv_set key").map_err(|m| violation(st, m))?;
            let val = guest_range(mem.len(), val_ptr, val_len, "kv_set value")
                .map_err(|m| violation(st, m))?;
            let val = &mem[val];
            if key.len() > st.limits.kv_max_key_bytes as usize {
                return Ok(-1);
            }
            let old = st.kv.get(key).map_or(0, |v| key.len() + v.len());
            let new_total = st.kv_bytes - old + key.len() + val.len();
            if new_total > st.limits.kv_quota_bytes as usize {
                return Ok(-1);
            }
            st.remember_old(key);
            match st.kv.get_mut(key) {
                Some(v) => {
                    v.clear();
                    v.extend_from_slice(val);
                }
                None => {
                    st.kv.insert(key.to_owned(), val.to_vec());
                }
            }
            st.kv_bytes = new_total;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "kv_delete",
        |mut caller: Caller<'_, HostState>, key_ptr: i32, key_len: i32| -> wasmtime::Result<()> {
            let (mem, st) = parts(&mut caller)?;
            let key =
                guest_str(mem, key_ptr, key_len, "kv_delete key").map_err(|m| violation(st, m))?;
            if st.kv.contains_key(key) {
                st.remember_old(key);
                if let Some(v) = st.kv.remove(key) {
                    st.kv_bytes -= key.len() + v.len();
                }
            }
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "log",
        |mut caller: Caller<'_, HostState>,
         level: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<()> {
            let (mem, st) = parts(&mut caller)?;
            let r = guest_range(mem.len(), ptr, len, "log").map_err(|m| violation(st, m))?;
            st.log_lines += 1;
            if st.log_lines > st.limits.max_log_lines {
                st.out.logs_dropped += 1;
                return Ok(());
            }
            let max = st.limits.max_log_line_bytes as usize;
            let raw = &mem[r];
            if raw.len() > max {
                st.out.logs_dropped += 1;
            }
            // Logs are diagnostics: invalid UTF-8 is replaced, not a violation.
            let text = String::from_utf8_lossy(&raw[..raw.len().min(max)]);
            st.out.logs.push(GuestLog {
                level: LogLevel::from_abi(level),
                message: text.into_owned(),
            });
            Ok(())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_range_rejects_overflow_and_negative() {
        assert_eq!(guest_range(100, 10, 5, "x"), Ok(10..15));
        assert_eq!(guest_range(100, 95, 5, "x"), Ok(95..100));
        assert!(guest_range(100, 96, 5, "x").is_err());
        assert!(guest_range(100, 0, -1, "x").is_err());
        assert!(guest_range(100, -1, 1, "x").is_err());
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }

    #[test]
    fn rollback_restores_previous_values() {
        let mut kv = KvState::new();
        kv.insert("a".into(), vec![1]);
        let mut st = HostState::new(RuntimeLimits::default(), 1 << 20, kv.clone());
        st.begin_callback();
        st.remember_old("a");
        st.kv.insert("a".into(), vec![2, 2]);
        st.remember_old("b");
        st.kv.insert("b".into(), vec![3]);
        st.remember_old("a");
        st.kv.insert("a".into(), vec![4]);
        st.rollback_kv();
        assert_eq!(st.kv, kv);
        assert_eq!(st.kv_bytes, 2);
    }
}
