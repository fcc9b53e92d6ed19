//! The agent: registers with the master, reconciles its desired task set against running
//! tasks, runs them through a ContainerRuntime, serves logs.
//!
//! Layout: [`reconciler`] is the pure core (desired vs observed → actions); `node`
//! is the shell that feeds it (master protocol, checkpoint, runtime calls); [`runtime`]
//! holds the `ContainerRuntime` trait with the process and fake runtimes; [`executor`]
//! is the per-task supervisor process; `api` is the HTTP API on `:5051`. [`health`] is
//! the pure health/readiness check state machine, `checks` the loop that probes tasks;
//! [`fetch`] stages artifacts into sandboxes (in the executor), [`archive`] extracts them.
use plinth_protocol::{Attributes, Resources};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

mod api;
pub mod archive;
pub mod cgroup;
mod checks;
mod client;
mod error;
pub mod executor;
pub mod fetch;
mod fsutil;
pub mod health;
pub mod logs;
mod node;
pub mod reconciler;
mod resources;
pub mod runtime;
pub mod state;
pub mod taskenv;
pub mod testing;

pub use error::AgentError;
pub use node::{run_with, AgentOptions};
pub use resources::{detect_resources, resources_from_totals};

/// Default agent work dir (DESIGN.md §3).
pub const DEFAULT_WORK_DIR: &str = "/var/lib/plinth/agent";
/// Default agent API address (DESIGN.md §3).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5051";

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The master's base URL, e.g. `http://10.0.0.1:8080`.
    pub master: String,
    /// Checkpoint, agent id and task sandboxes live here.
    pub work_dir: PathBuf,
    pub hostname: String,
    /// Address other hosts reach this agent at; detected from the route to the master
    /// when `None`.
    pub advertise_ip: Option<IpAddr>,
    /// `None`: detect (see [`detect_resources`]).
    pub resources: Option<Resources>,
    pub attributes: Attributes,
    /// The agent's HTTP API.
    pub listen: SocketAddr,
    /// Join token sent in the `x-plinth-token` header.
    pub token: Option<String>,
}

/// Runs the agent with command tasks (each under `plinth executor`) until the process
/// is stopped. Tunables come from the environment (see [`AgentOptions::from_env`]). Stopping the agent never stops its tasks: a restarted agent re-adopts
/// them from the checkpoint.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let runtime = std::sync::Arc::new(runtime::ProcessRuntime::new(runtime::ExecutorCommand::plinth_binary()));
    run_with(config, runtime, AgentOptions::from_env()).await
}
