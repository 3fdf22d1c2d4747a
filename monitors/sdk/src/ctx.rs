//! [`Ctx`]: a callback's handle to the host (alerts, metrics, kv, log), and
//! the [`Kv`] trait that detectors' persistence is written against so it
//! can be tested with [`MemKv`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::{
    host, Event, LogLevel, Severity, ALERT_BUDGET, EMIT_BUDGET, MAX_KEY_LEN, MAX_LOG_LINE,
};

/// Why a kv write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    #[error("kv key {key:?} is {len} bytes, over the {MAX_KEY_LEN}-byte limit")]
    KeyTooLong {
        /// The first bytes of the key.
        key: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The instance's kv quota is used up.
    #[error("kv quota exceeded writing key {key:?}")]
    QuotaExceeded {
        /// The key that did not fit.
        key: String,
    },
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY_LEN {
        return Err(KvError::KeyTooLong {
            key: truncate(key, 64).to_owned(),
            len: key.len(),
        });
    }
    Ok(())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A byte-valued key-value store: the host's per-instance state, or
/// [`MemKv`] in tests.
pub trait Kv {
    /// The value of `key`, if any.
    fn get(&mut self, key: &str) -> Option<Vec<u8>>;
    /// Stores `value` under `key`.
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Removes `key` (absent keys are fine).
    fn delete(&mut self, key: &str);
}

/// An in-memory [`Kv`] for tests and host-side simulation.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemKv(pub BTreeMap<String, Vec<u8>>);

impl Kv for MemKv {
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        self.0.insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn delete(&mut self, key: &str) {
        self.0.remove(key);
    }
}

/// The handle a [`crate::Monitor`] gets for one callback.
///
/// Alerts go to the host at once (up to [`ALERT_BUDGET`]); metrics are
/// gauges buffered until the callback ends, when the last value per
/// (device, name) is sent within what is left of [`EMIT_BUDGET`]. That keeps
/// a large batch from tripping the host's flood limit.
#[derive(Debug, Default)]
pub struct Ctx {
    alerts_sent: usize,
    alerts_dropped: usize,
    metrics_dropped: usize,
    metrics: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Ctx {
    pub(crate) fn new() -> Self {
        Ctx::default()
    }

    /// Raises an alert about `device` with a stable `code`.
    pub fn alert(&mut self, severity: Severity, device: &str, code: &str, message: &str) {
        if self.alerts_sent >= ALERT_BUDGET {
            self.alerts_dropped += 1;
            return;
        }
        self.alerts_sent += 1;
        host::alert(severity as i32, device, code, message);
    }

    /// Records a derived metric sample; the last one per (device, name) in
    /// this callback is sent. Non-finite values are dropped and counted.
    pub fn metric(&mut self, device: &str, name: &str, value: f64) {
        if !value.is_finite() {
            self.metrics_dropped += 1;
            return;
        }
        let per_dev = match self.metrics.get_mut(device) {
            Some(m) => m,
            None => self.metrics.entry(device.to_owned()).or_default(),
        };
        match per_dev.get_mut(name) {
            Some(v) => *v = value,
            None => {
                per_dev.insert(name.to_owned(), value);
            }
        }
    }

    /// Sends an [`Event`] decided by a detector.
    pub fn emit(&mut self, event: Event) {
        match event {
            Event::Alert {
                severity,
                device,
                code,
                message,
            } => self.alert(severity, &device, code, &message),
            Event::Metric {
                device,
                name,
                value,
            } => self.metric(&device, &name, value),
        }
    }

    /// Writes a log line (cut to [`MAX_LOG_LINE`] bytes).
    pub fn log(&mut self, level: LogLevel, msg: &str) {
        log(level, msg);
    }

    /// The kv value of `key` (the host's state survives restarts and moves).
    pub fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        if check_key(key).is_err() {
            return None;
        }
        let mut buf = vec![0u8; 256];
        // The value can only change between our calls if we change it, so a
        // second try with the reported length always fits.
        for _ in 0..3 {
            let n = host::get(key, &mut buf);
            if n < 0 {
                return None;
            }
            let n = n as usize;
            if n <= buf.len() {
                buf.truncate(n);
                return Some(buf);
            }
            buf.resize(n, 0);
        }
        None
    }

    /// Stores `value` under `key`.
    pub fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        if host::set(key, value) != 0 {
            return Err(KvError::QuotaExceeded {
                key: truncate(key, 64).to_owned(),
            });
        }
        Ok(())
    }

    /// Removes `key`.
    pub fn kv_delete(&mut self, key: &str) {
        if check_key(key).is_ok() {
            host::delete(key);
        }
    }

    /// `key` as a little-endian f64, if present and 8 bytes long.
    pub fn kv_get_f64(&mut self, key: &str) -> Option<f64> {
        let b: [u8; 8] = self.kv_get(key)?.try_into().ok()?;
        Some(f64::from_le_bytes(b))
    }

    /// Stores `value` as 8 little-endian bytes.
    pub fn kv_set_f64(&mut self, key: &str, value: f64) -> Result<(), KvError> {
        self.kv_set(key, &value.to_le_bytes())
    }

    /// `key` as a little-endian u64, if present and 8 bytes long.
    pub fn kv_get_u64(&mut self, key: &str) -> Option<u64> {
        let b: [u8; 8] = self.kv_get(key)?.try_into().ok()?;
        Some(u64::from_le_bytes(b))
    }

    /// Stores `value` as 8 little-endian bytes.
    pub fn kv_set_u64(&mut self, key: &str, value: u64) -> Result<(), KvError> {
        self.kv_set(key, &value.to_le_bytes())
    }

    /// `key` decoded from JSON, if present and well-formed.
    pub fn kv_get_json<T: serde::de::DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        serde_json::from_slice(&self.kv_get(key)?).ok()
    }

    /// Stores `value` as JSON.
    pub fn kv_set_json<T: serde::Serialize>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<(), KvError> {
        // Serializing plain data structs to a Vec cannot fail; a type whose
        // Serialize impl errors stores nothing and keeps the old value.
        match serde_json::to_vec(value) {
            Ok(bytes) => self.kv_set(key, &bytes),
            Err(_) => Ok(()),
        }
    }

    /// Ends the callback: sends the buffered metrics within the budget and
    /// logs what was dropped.
    pub(crate) fn finish(mut self) {
        let mut room = EMIT_BUDGET.saturating_sub(self.alerts_sent);
        for (device, names) in std::mem::take(&mut self.metrics) {
            for (name, value) in names {
                if room == 0 {
                    self.metrics_dropped += 1;
                    continue;
                }
                room -= 1;
                host::metric(&device, &name, value);
            }
        }
        if self.alerts_dropped > 0 || self.metrics_dropped > 0 {
            let mut line = String::new();
            // Writing to a String cannot fail.
            let _ = write!(
                line,
                "emit budget: dropped {} alerts and {} metrics this batch",
                self.alerts_dropped, self.metrics_dropped
            );
            log(LogLevel::Warn, &line);
        }
    }
}

impl Kv for Ctx {
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.kv_get(key)
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.kv_set(key, value)
    }
    fn delete(&mut self, key: &str) {
        self.kv_delete(key)
    }
}

/// Writes a log line outside a callback's [`Ctx`] (e.g. during init).
pub fn log(level: LogLevel, msg: &str) {
    host::log_line(level as i32, truncate(msg, MAX_LOG_LINE));
}
