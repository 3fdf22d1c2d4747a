//! A deliberately misbehaving monitor, written with the real SDK, so the
//! containment tests exercise what a buggy Rust guest actually does (not
//! only hand-written WebAssembly). It behaves until a record carries the
//! metric named by a trigger param, then:
//! - `panic-on`: panics (with `panic = "abort"` that is an `unreachable`
//!   trap);
//! - `leak-on`: allocates and keeps 1 MiB per record until the host's
//!   memory limit stops it;
//! - `spin-on`: loops forever, until fuel or the epoch deadline stops it.
//!
//! Every record before the trigger gets a derived metric `seen`, so a test
//! can tell that the instance was working until it was told to misbehave.

use serde::Deserialize;
use strata_monitor_sdk::{parse_params, strata_monitor, Ctx, Monitor, TelemetryRecord};

/// Which metric name triggers which misbehaviour. Kebab-case JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Params {
    /// Panic on a record with this metric.
    pub panic_on: Option<String>,
    /// Leak 1 MiB per record with this metric.
    pub leak_on: Option<String>,
    /// Loop forever on a record with this metric.
    pub spin_on: Option<String>,
}

/// The monitor.
pub struct Chaos {
    params: Params,
    hoard: Vec<Vec<u8>>,
    seen: u64,
}

fn has(r: &TelemetryRecord, name: &Option<String>) -> bool {
    name.as_ref()
        .is_some_and(|n| r.metrics.iter().any(|m| &m.name == n))
}

impl Monitor for Chaos {
    fn init(params: &serde_json::Value) -> Result<Self, String> {
        Ok(Chaos {
            params: parse_params(params)?,
            hoard: Vec::new(),
            seen: 0,
        })
    }

    fn on_batch(&mut self, records: &[TelemetryRecord], ctx: &mut Ctx) {
        for r in records {
            if has(r, &self.params.panic_on) {
                panic!("chaos: told to panic by device {}", r.device);
            }
            if has(r, &self.params.leak_on) {
                self.hoard.push(vec![0xA5; 1 << 20]);
            }
            if has(r, &self.params.spin_on) {
                // black_box keeps the optimiser from proving the loop dead.
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            self.seen += 1;
            ctx.metric(&r.device, "seen", self.seen as f64);
        }
    }
}

strata_monitor!(Chaos);
