//! The uplink: streams spooled records to the region's hubs over QUIC.
//!
//! - [`core`]: the sans-IO session state machine (what to send, resend,
//!   trim; whom to dial; backoff with jitter).
//! - [`driver`]: executes the core's commands with quinn and the spool.
//! - [`assign`]: fetches monitor assignments and verified modules for the
//!   workload host when the hub announces a new version.
pub mod assign;
pub mod core;
pub mod driver;

pub use self::core::{Command, CoreConfig, CoreStats, UplinkCore};
pub use assign::{ApplyError, AssignmentTarget, AssignmentUpdate, SharedTarget};
pub use driver::{UplinkConfig, UplinkDriver, UplinkError, UplinkMetrics};
