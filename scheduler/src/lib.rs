//! `plinth-scheduler`: the master's scheduler core, a pure state machine. API commands,
//! agent messages and clock ticks go in (time and ids are inputs: a `Timestamp` per call
//! and an [`IdSource`] handed in by the shell); decisions come out as changed records,
//! events and agents to wake ([`Changes`]). No sockets, files, clocks or async runtime in
//! here: the crate depends on the protocol types, serde, thiserror, tracing and regex only,
//! so Cargo enforces what the lints below check.
//!
//! - the **allocator** turns each active agent's free resources into offers every tick;
//! - the **app supervisor** accepts offers for apps short of instances (launch) or
//!   declines them with a reason (shown in `/v2/queue`), and kills surplus tasks;
//! - **deployments** move an app to a new version/size within its `upgradeStrategy`;
//! - **agent liveness**: agents silent past the timeout are lost, their tasks `TASK_LOST`.
// Pure: no clock, entropy or spawning here (the ban is in clippy.toml).
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod constraints;
mod engine;
pub mod model;

pub use engine::*;
pub use model::*;

#[cfg(test)]
// why: the tests play the shell and mint update ids for the core.
#[allow(clippy::disallowed_methods)]
mod tests;
