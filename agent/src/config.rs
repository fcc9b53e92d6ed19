//! The agent's configuration: what the operator sets ([`AgentConfig`], with
//! [`ContainerSettings`] for Docker tasks) and the tunables tests shorten
//! ([`AgentOptions`]), with their defaults.
use plinth_protocol::agent::JoinToken;
use plinth_protocol::{Attributes, Resources};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tracing::warn;

use crate::logs::LogPolicy;

/// Default agent work dir.
pub const DEFAULT_WORK_DIR: &str = "/var/lib/plinth/agent";
/// Default agent API address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5051";

/// What the operator sets (the `plinth agent` flags).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The master's base URL, e.g. `http://10.0.0.1:8080`, or several, comma-separated
    /// (HA masters: requests go to the first that answers).
    pub master: String,
    /// Checkpoint, agent id and task sandboxes live here.
    pub work_dir: PathBuf,
    pub hostname: String,
    /// Address other hosts reach this agent at; detected from the route to the master
    /// when `None`.
    pub advertise_ip: Option<IpAddr>,
    /// `None`: detect (see [`crate::detect_resources`]).
    pub resources: Option<Resources>,
    pub attributes: Attributes,
    /// The agent's HTTP API.
    pub listen: SocketAddr,
    /// Join token sent in the `x-plinth-token` header; a bootstrap token (PXE boot) is
    /// exchanged for the join token once and that is kept in the work dir.
    pub token: Option<JoinToken>,
    /// Follow the master even when the checkpoint names another cluster, and adopt its id.
    pub rejoin_cluster: bool,
    /// PEM CA certificate(s) to trust for an `https://` master.
    pub ca_file: Option<PathBuf>,
    /// How Docker tasks get their images and network.
    pub containers: ContainerSettings,
    /// The agent's DNS server (`--dns-*`; port 0: none), answering from the master's records.
    pub dns: plinth_dns::DnsSettings,
    /// Who command tasks run as and what they may see.
    pub confinement: TaskConfinement,
    /// Stop every task after this long without an answer from the master (`None`:
    /// tasks keep running through a partition; see `partition.rs`).
    pub stop_tasks_after_master_lost: Option<std::time::Duration>,
    /// The service balancer (`--lb-group`; see `crate::lb`).
    pub lb: crate::lb::LbSettings,
}

/// How command tasks are confined (see `crate::confine`): the user they run as when
/// their app names none, whether root is allowed at all, and the paths hidden from them
/// besides the agent's work dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskConfinement {
    /// `--default-task-user` (Mesos' `--switch_user`): the user of apps without `user`.
    pub default_user: String,
    /// `--allow-root-tasks`: without it an app asking for `"user": "root"` fails.
    pub allow_root: bool,
    /// `--hide-from-tasks`: more paths tasks must not see (the master's data dir on a
    /// standalone node, a token file). The agent's work dir is always hidden.
    pub hidden_paths: Vec<PathBuf>,
}

/// The user of tasks whose app names none.
pub const DEFAULT_TASK_USER: &str = "nobody";

impl Default for TaskConfinement {
    fn default() -> Self {
        TaskConfinement { default_user: DEFAULT_TASK_USER.to_string(), allow_root: false, hidden_paths: Vec::new() }
    }
}

impl AgentConfig {
    /// The confinement of this agent's tasks, its work dir among the hidden paths, all of
    /// them absolute: the executor that hides them runs elsewhere (in the sandbox).
    pub fn task_confinement(&self) -> TaskConfinement {
        let mut confinement = self.confinement.clone();
        confinement.hidden_paths.insert(0, self.work_dir.clone());
        for path in &mut confinement.hidden_paths {
            if let Ok(absolute) = std::path::absolute(&*path) {
                *path = absolute;
            }
        }
        confinement
    }
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
    /// The search domain containers get (`marathon.mesos`) when the node answers DNS on
    /// port 53 (its own server, or the master's on a standalone node); `None`: the host's
    /// resolv.conf as it is.
    pub dns_search: Option<String>,
    /// `--userns-remap`: containers in a user namespace, their root this host id range's first.
    pub userns_remap: Option<crate::userns::IdRemap>,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        ContainerSettings {
            registry: None,
            bridge: DEFAULT_BRIDGE.to_string(),
            subnet: DEFAULT_CONTAINER_SUBNET.to_string(),
            max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
            dns_search: None,
            userns_remap: None,
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
/// The port of the master's registry.
pub const REGISTRY_PORT: u16 = 5000;

impl AgentConfig {
    /// The registry this agent pulls images from: the configured one, else the master's
    /// host on the registry port.
    pub fn registry_url(&self) -> String {
        if let Some(registry) = &self.containers.registry {
            return registry.trim_end_matches('/').to_string();
        }
        // The first master of a `--master A,B,C` list.
        let first = self.master.split(',').next().unwrap_or_default().trim();
        let host = first.split("://").nth(1).unwrap_or(first).split('/').next().unwrap_or_default();
        // Strip the port, keeping IPv6 brackets intact.
        let host = match host.rfind(':') {
            Some(i) if !host[i..].contains(']') => &host[..i],
            _ => host,
        };
        format!("http://{host}:{REGISTRY_PORT}")
    }
}

/// Tunables with sensible defaults; tests shorten them.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub logs: LogPolicy,
    /// How often tasks are polled.
    pub tick: Duration,
    /// Longest long-poll wait asked of the master (capped by its heartbeat interval).
    pub sync_wait: Duration,
    /// Terminal tasks' sandboxes are kept this long so their logs can still be read.
    pub sandbox_retention: Duration,
    /// Image layers unused this long are collected.
    pub image_max_age: Duration,
    /// Above this many bytes, the oldest unused images go first.
    pub image_high_water_bytes: u64,
    /// At most this many terminal tasks are kept, whatever their age.
    pub keep_terminal: usize,
    /// Longest pause between attempts to reach the master.
    pub max_backoff: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            logs: LogPolicy::default(),
            tick: Duration::from_millis(100),
            sync_wait: Duration::from_secs(5),
            sandbox_retention: Duration::from_secs(3600),
            image_max_age: Duration::from_secs(24 * 3600),
            image_high_water_bytes: 10 << 30,
            keep_terminal: 100,
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl AgentOptions {
    /// Defaults, with `PLINTH_TASK_LOG_MAX_BYTES`, `PLINTH_TASK_LOG_GENERATIONS` and
    /// `PLINTH_SANDBOX_RETENTION_SECS` applied when set. An unparsable value is
    /// ignored with a warning rather than stopping the node.
    pub fn from_env() -> Self {
        fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
            let raw = std::env::var(name).ok()?;
            let parsed = raw.trim().parse().ok();
            if parsed.is_none() {
                warn!(variable = name, value = %raw, "ignoring an unparsable setting");
            }
            parsed
        }
        let mut options = AgentOptions::default();
        if let Some(bytes) = var::<u64>("PLINTH_TASK_LOG_MAX_BYTES") {
            options.logs.max_bytes = bytes.max(1024);
        }
        if let Some(generations) = var::<u32>("PLINTH_TASK_LOG_GENERATIONS") {
            options.logs.generations = generations.min(100);
        }
        if let Some(mb) = var::<u64>("PLINTH_IMAGE_HIGH_WATER_MB") {
            options.image_high_water_bytes = mb.saturating_mul(1 << 20);
        }
        if let Some(seconds) = var::<u64>("PLINTH_IMAGE_MAX_AGE_SECS") {
            options.image_max_age = Duration::from_secs(seconds);
        }
        if let Some(seconds) = var::<u64>("PLINTH_SANDBOX_RETENTION_SECS") {
            options.sandbox_retention = Duration::from_secs(seconds);
        }
        options
    }
}
