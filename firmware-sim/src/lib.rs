//! Strata's device-fleet simulator and MQTT load generator.
//!
//! Simulates 1 to 100,000 devices of one tenant. Each device publishes
//! readings (`seq` = reading index, from 0) with four seeded sensors to
//! `strata/<tenant>/<device>/telemetry`, over gateway-style MQTT connections
//! that each carry many devices, spread over one or more edge endpoints.
//! Everything is deterministic from the seed: [`reading`] recomputes exactly
//! what device `d` sent at reading `i`, so tests can check what arrived.
//!
//! Delivery is at-least-once with QoS 1: a reading counts as delivered only
//! once PUBACKed; unacked publishes are retransmitted (DUP) after a
//! reconnect, before anything new. A `dropout` anomaly suppresses readings
//! but the device's `seq` keeps advancing, so consumers see the gap.
//!
//! ```no_run
//! # async fn demo() -> Result<(), firmware_sim::SimError> {
//! let cfg = firmware_sim::FleetConfig {
//!     devices: 100,
//!     endpoints: vec!["127.0.0.1:1883".into()],
//!     count: Some(10),
//!     rate_per_device: 0.0,
//!     ..Default::default()
//! };
//! let summary = firmware_sim::run(cfg, Default::default(), None).await?;
//! assert!(summary.complete);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: [`FleetConfig`], [`AnomalySpec`], validation.
//! - [`model`]: the pure sensor model and anomalies, `(seed, d, i) → values`.
//! - [`payload`]: allocation-free JSON / binary payload encoders.
//! - [`session`]: sans-IO per-connection core: window, pacing, packet ids,
//!   retransmission, backoff.
//! - `driver`: `ConnectionDriver`, the only code touching sockets and clocks.
//! - [`fleet`]: [`run`], device→connection assignment, [`Summary`],
//!   [`Progress`].
//! - [`trace`]: trace mode, the fleet's rate following a [`TraceSpec`]
//!   (daily/weekly patterns and surges, time-compressed); pure pacing.
//!
//! This crate must not depend on the edge, hub or central crates: it talks to
//! them only over MQTT, like a real device.

pub mod config;
mod driver;
pub mod fleet;
pub mod model;
pub mod payload;
pub mod session;
pub mod trace;

pub use config::{parse_duration, AnomalyKind, AnomalySpec, ConfigError, FleetConfig, Sensor};
pub use fleet::{assign, run, LatencySummary, Progress, ProgressFn, SimError, Summary};
pub use model::{device_name, is_dropped, reading, values};
pub use trace::{TracePacer, TraceSpec};
