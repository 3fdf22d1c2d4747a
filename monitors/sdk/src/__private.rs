//! The bodies of the ABI exports that [`crate::strata_monitor!`] generates.
//! Not a public API: only the macro calls these.
//!
//! Inputs arrive in one reusable guest buffer handed out by [`alloc`]; the
//! callbacks accept exactly that buffer (pointer and a length within it) and
//! refuse anything else with [`BAD_INPUT`], so a confused host cannot make
//! the guest read arbitrary memory.

use std::cell::RefCell;
use std::thread::LocalKey;

use strata_protocol::telemetry::TelemetryRecord;

use crate::ctx::{log, Ctx};
use crate::{LogLevel, Monitor};

/// Return code: success.
pub const OK: i32 = 0;
/// Return code of `strata_init`: bad params JSON or params.
pub const BAD_PARAMS: i32 = 1;
/// Return code of `strata_on_batch`: the batch did not decode.
pub const BAD_BATCH: i32 = 2;
/// Return code of `strata_on_batch`: no successful init yet.
pub const NOT_INITIALISED: i32 = 3;
/// Return code: `(ptr, len)` is not within the buffer `strata_alloc` returned.
pub const BAD_INPUT: i32 = 4;

thread_local! {
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The instance slot the macro declares for the monitor type.
pub type Instance<M> = LocalKey<RefCell<Option<M>>>;

/// `strata_alloc`: grows the input buffer to `len` bytes and returns its
/// address (0 for a negative length).
pub fn alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else {
        return 0;
    };
    INPUT.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        // Never empty, so the address is a real allocation even for len 0.
        b.resize(len.max(1), 0);
        b.as_mut_ptr() as usize as i32
    })
}

/// Runs `f` on the input bytes if `(ptr, len)` is the current buffer.
fn with_input(ptr: i32, len: i32, f: impl FnOnce(&[u8]) -> i32) -> i32 {
    INPUT.with(|b| {
        // Held across the monitor's callback: nothing in a callback can
        // re-enter `strata_alloc`, and it saves a copy of every batch.
        let b = b.borrow();
        let ok = ptr as u32 as usize == b.as_ptr() as usize
            && usize::try_from(len).is_ok_and(|l| l <= b.len());
        if !ok {
            log(
                LogLevel::Error,
                &format!("input ({ptr}, {len}) is not the buffer strata_alloc returned"),
            );
            return BAD_INPUT;
        }
        f(&b[..len as usize])
    })
}

/// `strata_init`.
pub fn init<M: Monitor + 'static>(slot: &'static Instance<M>, ptr: i32, len: i32) -> i32 {
    with_input(ptr, len, |b| init_bytes(slot, b))
}

/// `strata_on_batch`.
pub fn on_batch<M: Monitor + 'static>(slot: &'static Instance<M>, ptr: i32, len: i32) -> i32 {
    with_input(ptr, len, |b| on_batch_bytes(slot, b))
}

/// `strata_init` on bytes already read.
pub fn init_bytes<M: Monitor + 'static>(slot: &'static Instance<M>, json: &[u8]) -> i32 {
    let params: serde_json::Value = match serde_json::from_slice(json) {
        Ok(v) => v,
        Err(e) => {
            log(LogLevel::Error, &format!("params are not JSON: {e}"));
            return BAD_PARAMS;
        }
    };
    match M::init(&params) {
        Ok(m) => {
            slot.with(|s| *s.borrow_mut() = Some(m));
            OK
        }
        Err(e) => {
            log(LogLevel::Error, &e);
            BAD_PARAMS
        }
    }
}

/// `strata_on_batch` on bytes already read.
pub fn on_batch_bytes<M: Monitor + 'static>(slot: &'static Instance<M>, bytes: &[u8]) -> i32 {
    let records: Vec<TelemetryRecord> =
        match bincode::decode_from_slice(bytes, bincode::config::standard()) {
            Ok((r, used)) if used == bytes.len() => r,
            Ok((_, used)) => {
                log(
                    LogLevel::Error,
                    &format!("batch has {} trailing bytes", bytes.len() - used),
                );
                return BAD_BATCH;
            }
            Err(e) => {
                log(LogLevel::Error, &format!("batch does not decode: {e}"));
                return BAD_BATCH;
            }
        };
    slot.with(|s| {
        let mut s = s.borrow_mut();
        let Some(m) = s.as_mut() else {
            log(
                LogLevel::Error,
                "strata_on_batch called before a successful strata_init",
            );
            return NOT_INITIALISED;
        };
        let mut ctx = Ctx::new();
        m.on_batch(&records, &mut ctx);
        ctx.finish();
        OK
    })
}
