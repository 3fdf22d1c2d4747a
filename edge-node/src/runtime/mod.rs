//! Sandboxes for device-monitor instances, behind one driver trait that a
//! QEMU microVM driver will also implement.
//!
//! The node executes the scheduler's commands through a [`SandboxDriver`]:
//! `prepare` an artifact once per hash, `instantiate` an instance per
//! assignment, feed it batches with [`SandboxInstance::on_batch`], `resize`
//! it in place, and carry its [`KvState`] across restarts. A guest that breaks
//! a limit faults ([`InstanceFault`], with its reason); only that instance
//! dies, and the scheduler restarts it with backoff.
//!
//! # Layout
//! - [`driver`]: the traits, instance config and limits, outputs, faults, errors.
//! - `wasm`: the wasmtime driver (engine, module cache, stores, epoch ticker).
//! - `host`: the host side of the monitor ABI (`docs/monitor-abi.md`,
//!   version 1): bounds-checked `strata.*` imports, limiter, kv quota.
//! - [`conformance`]: the suite every driver must pass, generic over
//!   `&dyn SandboxDriver` and a driver-supplied [`conformance::Fixtures`].

pub mod conformance;
pub mod driver;
mod host;
pub mod wasm;

#[cfg(test)]
mod monitors_tests;
#[cfg(test)]
mod wasm_tests;

pub use driver::{
    sha256_hex, Alert, BatchOutput, DerivedMetric, GuestLog, InstanceConfig, InstanceFault,
    KvState, LogLevel, PreparedModule, RuntimeError, RuntimeLimits, SandboxDriver, SandboxInstance,
    Severity,
};
pub use wasm::{WasmDriver, WasmDriverConfig, WasmInstance, ABI_VERSION};
