//! The raw host imports behind safe wrappers.
//!
//! On wasm32 these are the `strata` module's imports. On every other target
//! (host-side unit tests) a thread-local fake records what a guest did, so
//! the SDK's export bodies and a monitor's glue can be tested without a
//! wasm runtime; see [`fake`].

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // FFI to the host; every pointer passed is a live Rust slice.
mod imp {
    #[link(wasm_import_module = "strata")]
    extern "C" {
        fn emit_alert(
            severity: i32,
            dev_ptr: *const u8,
            dev_len: usize,
            code_ptr: *const u8,
            code_len: usize,
            msg_ptr: *const u8,
            msg_len: usize,
        );
        fn emit_metric(
            dev_ptr: *const u8,
            dev_len: usize,
            name_ptr: *const u8,
            name_len: usize,
            value: f64,
        );
        fn kv_get(key_ptr: *const u8, key_len: usize, out_ptr: *mut u8, out_cap: usize) -> i32;
        fn kv_set(key_ptr: *const u8, key_len: usize, val_ptr: *const u8, val_len: usize) -> i32;
        fn kv_delete(key_ptr: *const u8, key_len: usize);
        fn log(level: i32, ptr: *const u8, len: usize);
    }

    pub fn alert(severity: i32, dev: &str, code: &str, msg: &str) {
        // SAFETY: each (ptr, len) pair is a live &str for the call's duration.
        unsafe {
            emit_alert(
                severity,
                dev.as_ptr(),
                dev.len(),
                code.as_ptr(),
                code.len(),
                msg.as_ptr(),
                msg.len(),
            )
        }
    }

    pub fn metric(dev: &str, name: &str, value: f64) {
        // SAFETY: as above.
        unsafe { emit_metric(dev.as_ptr(), dev.len(), name.as_ptr(), name.len(), value) }
    }

    /// Calls `kv_get` into `out`'s first `out.len()` bytes; returns the
    /// host's answer (value length, or -1).
    pub fn get(key: &str, out: &mut [u8]) -> i32 {
        // SAFETY: `out` is a live, writable slice of exactly `out.len()` bytes.
        unsafe { kv_get(key.as_ptr(), key.len(), out.as_mut_ptr(), out.len()) }
    }

    pub fn set(key: &str, val: &[u8]) -> i32 {
        // SAFETY: live slices.
        unsafe { kv_set(key.as_ptr(), key.len(), val.as_ptr(), val.len()) }
    }

    pub fn delete(key: &str) {
        // SAFETY: live slice.
        unsafe { kv_delete(key.as_ptr(), key.len()) }
    }

    pub fn log_line(level: i32, msg: &str) {
        // SAFETY: live slice.
        unsafe { log(level, msg.as_ptr(), msg.len()) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub mod fake {
    //! A recording stand-in for the host, per thread (each test runs on its
    //! own thread, so tests do not see each other's calls).
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// Everything a guest did through the host imports.
    #[derive(Debug, Default, Clone)]
    pub struct FakeHost {
        /// (severity, device, code, message), in call order.
        pub alerts: Vec<(i32, String, String, String)>,
        /// (device, name, value), in call order.
        pub metrics: Vec<(String, String, f64)>,
        /// The kv state.
        pub kv: BTreeMap<String, Vec<u8>>,
        /// Total kv bytes (keys + values) allowed; `usize::MAX` by default.
        pub kv_quota: usize,
        /// (level, line), in call order.
        pub logs: Vec<(i32, String)>,
    }

    thread_local! {
        static HOST: RefCell<FakeHost> = RefCell::new(FakeHost { kv_quota: usize::MAX, ..FakeHost::default() });
    }

    /// Runs `f` on this thread's fake host.
    pub fn with<R>(f: impl FnOnce(&mut FakeHost) -> R) -> R {
        HOST.with(|h| f(&mut h.borrow_mut()))
    }

    pub(crate) fn alert(severity: i32, dev: &str, code: &str, msg: &str) {
        with(|h| {
            h.alerts
                .push((severity, dev.into(), code.into(), msg.into()))
        });
    }
    pub(crate) fn metric(dev: &str, name: &str, value: f64) {
        with(|h| h.metrics.push((dev.into(), name.into(), value)));
    }
    pub(crate) fn get(key: &str, out: &mut [u8]) -> i32 {
        with(|h| match h.kv.get(key) {
            None => -1,
            Some(v) => {
                if v.len() <= out.len() {
                    out[..v.len()].copy_from_slice(v);
                }
                v.len() as i32
            }
        })
    }
    pub(crate) fn set(key: &str, val: &[u8]) -> i32 {
        with(|h| {
            let used: usize =
                h.kv.iter()
                    .filter(|(k, _)| k.as_str() != key)
                    .map(|(k, v)| k.len() + v.len())
                    .sum();
            if used + key.len() + val.len() > h.kv_quota {
                return -1;
            }
            h.kv.insert(key.into(), val.to_vec());
            0
        })
    }
    pub(crate) fn delete(key: &str) {
        with(|h| {
            h.kv.remove(key);
        });
    }
    pub(crate) fn log_line(level: i32, msg: &str) {
        with(|h| h.logs.push((level, msg.into())));
    }
}

#[cfg(not(target_arch = "wasm32"))]
use fake as imp;

pub(crate) use imp::{alert, delete, get, log_line, metric, set};
