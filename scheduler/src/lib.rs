//! `plinth-scheduler`: the master's scheduler core, a pure state machine. API commands,
//! agent messages and clock ticks go in (time and ids are inputs: a `Timestamp` per call
//! and an [`IdSource`] handed in by the shell); decisions come out as changed records,
//! events and agents to wake ([`Changes`]). No sockets, files, clocks or async runtime in
//! here: the crate depends on the protocol types, serde, thiserror, tracing and regex only,
//! so Cargo enforces what the lints below check.
//!
//! One [`Core`] holds the state (`state.rs`); each concern adds its operations in its own
//! file:
//! - `commands.rs`: the API's commands on apps and tasks (`ports.rs`: service and host ports);
//! - `agents.rs`: the agent protocol (register, sync, status updates); `health.rs`: killing
//!   tasks whose health checks keep failing; `liveness.rs`: lost agents, unreachable tasks;
//! - `supervision.rs`: each tick, per app, what to kill and how many to launch (backoff,
//!   dependencies); `placement.rs`: offers of the agents' free resources, accepted or
//!   declined with a reason (`constraints.rs`: placement constraints);
//! - `deployments.rs`: plans, steps and their progress; `groups.rs`: groups and
//!   dependencies (planning group requests, dependency cycles); `queries.rs`: read views;
//! - `services.rs`: the service table the agents' balancers serve, and draining a task
//!   from it before a planned kill (`drain.rs`: the drain record and its timeout);
//! - `changes.rs`: what each call changed; `model.rs`: the records the store persists.
// Pure: no clock, entropy or spawning here (the ban is in clippy.toml).
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]
mod agents;
mod changes;
mod commands;
pub mod constraints;
mod deployments;
mod drain;
mod error;
pub mod groups;
mod health;
mod liveness;
pub mod model;
pub mod payload;
mod placement;
mod ports;
mod queries;
mod services;
mod state;
mod supervision;

pub use changes::Changes;
pub use commands::{KillTarget, Killed, PutOutcome};
pub use error::CoreError;
pub use groups::{AppSpec, GroupChange, GroupError, GroupPlan, GroupRecord, GroupRecords, GroupRequest, GroupSpec};
pub use model::*;
pub use placement::summarize_declines;
pub use queries::QueueEntry;
pub use services::DRAIN_SECONDS_LABEL;
pub use state::{AgentState, Core, CoreConfig, IdSource};

#[cfg(test)]
// why: the tests play the shell and mint update ids for the core.
#[allow(clippy::disallowed_methods)]
mod tests;
