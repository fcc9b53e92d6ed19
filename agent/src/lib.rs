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
pub mod container;
mod error;
pub mod executor;
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
    /// How Docker tasks get their images and network.
    pub containers: ContainerSettings,
}

/// Docker tasks: where images come from and how containers are networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings {
    /// The master's registry (`http://HOST:5000`); `None`: the master's host, port 5000.
    pub registry: Option<String>,
    /// The bridge BRIDGE-mode containers hang off.
    pub bridge: String,
    /// Container addresses for BRIDGE mode; the bridge holds the first one.
    pub subnet: String,
    /// Decompressed bytes a single image layer may have (decompression bombs stop here).
    pub max_layer_bytes: u64,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        ContainerSettings {
            registry: None,
            bridge: DEFAULT_BRIDGE.to_string(),
            subnet: DEFAULT_CONTAINER_SUBNET.to_string(),
            max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
        }
    }
}

/// Default container bridge and subnet (BRIDGE networking).
pub const DEFAULT_BRIDGE: &str = "plinth0";
pub const DEFAULT_CONTAINER_SUBNET: &str = "172.31.0.0/24";
/// Default cap on one layer's decompressed size: 8 GiB.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 8 << 30;
/// The agent's image and layer store, under its work dir.
pub const IMAGES_DIR: &str = "images";
/// The master registry's port (DESIGN.md §3).
pub const REGISTRY_PORT: u16 = 5000;

impl AgentConfig {
    /// The registry this agent pulls images from: the configured one, else the master's
    /// host on the registry port.
    pub fn registry_url(&self) -> String {
        if let Some(registry) = &self.containers.registry {
            return registry.trim_end_matches('/').to_string();
        }
        let host = self.master.split("://").nth(1).unwrap_or(&self.master).split('/').next().unwrap_or_default();
        // Strip the port, keeping IPv6 brackets intact.
        let host = match host.rfind(':') {
            Some(i) if !host[i..].contains(']') => &host[..i],
            _ => host,
        };
        format!("http://{host}:{REGISTRY_PORT}")
    }
}

/// Runs the agent with command tasks (each under `plinth executor`) until the process
/// is stopped. Tunables come from the environment (see [`AgentOptions::from_env`]). Stopping the agent never stops its tasks: a restarted agent re-adopts
/// them from the checkpoint.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let runtime = std::sync::Arc::new(runtime::ProcessRuntime::new(runtime::ExecutorCommand::plinth_binary()));
    run_with(config, runtime, AgentOptions::from_env()).await
}
