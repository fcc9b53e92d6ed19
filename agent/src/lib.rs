//! The agent: registers with the master, reconciles its desired task set against running
//! tasks, runs them through a ContainerRuntime, serves logs.
//!
//! Layout: [`reconciler`] is the pure core (desired vs observed → actions); `node`
//! is the shell that feeds it (master protocol, checkpoint, runtime calls); [`runtime`]
//! holds the `ContainerRuntime` trait with the process and fake runtimes; [`executor`]
//! is the per-task supervisor process; `api` is the HTTP API on `:5051`. [`health`] is
//! the pure health/readiness check state machine, `checks` the loop that probes tasks;
//! [`fetch`] stages artifacts into sandboxes (in the executor), [`archive`] extracts them.
//! `start` is the start-up ([`run`], [`run_with`]), [`config`] what it is configured with.
mod api;
pub mod archive;
pub mod cgroup;
mod checks;
mod client;
pub mod config;
pub mod container;
mod error;
pub mod executor;
pub mod executor_contract;
pub mod fetch;
mod fsutil;
pub mod health;
pub mod image;
pub mod inspect;
pub mod logs;
mod node;
pub mod reconciler;
mod resources;
pub mod runtime;
mod start;
pub mod state;
pub mod taskenv;
pub mod testing;

pub use config::{
    AgentConfig, AgentOptions, ContainerSettings, DEFAULT_BRIDGE, DEFAULT_CONTAINER_SUBNET, DEFAULT_LISTEN,
    DEFAULT_MAX_LAYER_BYTES, DEFAULT_WORK_DIR, IMAGES_DIR, REGISTRY_PORT,
};
pub use error::AgentError;
pub use resources::{detect_resources, resources_from_totals};
pub use start::{run, run_with};
