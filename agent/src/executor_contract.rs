//! The agent↔executor contract: the files in a task's sandbox through which the agent
//! and the task's executor (`plinth executor --spec SANDBOX/task.json`) talk, and what
//! each holds. Both sides import this module and it imports neither.
//!
//! | file | written by | holds |
//! |---|---|---|
//! | `task.json` | agent | [`ExecutorSpec`]: everything the executor needs |
//! | `executor.json` | executor | [`ExecutorRecord`]: its pid, so a restarted agent finds it |
//! | `running.json` | executor | [`RunningRecord`]: the task's process started, and when each start phase ended |
//! | `container.json` | executor | [`ContainerRecord`]: a Docker task's container runs |
//! | `exit.json` | executor | [`Termination`]: how the task ended |
//! | `executor.log` | executor | its own output |
//!
//! The task's own output goes to `stdout` and `stderr` ([`crate::logs::Stream`]).
//!
//! After writing `running.json`, `container.json` or `exit.json` the executor sends the
//! task id as a datagram to the agent's [`NOTIFY_SOCKET`] ([`notify_agent`]), so the agent
//! reports the change at once instead of on its next tick; the files stay the truth (a
//! lost datagram only means the tick finds the change).
use plinth_protocol::agent::TaskSpec;
use plinth_protocol::marathon::FetchUri;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::logs::LogPolicy;
use crate::taskenv::TaskCommand;

/// `SANDBOX/task.json`: the [`ExecutorSpec`].
pub const SPEC_FILE: &str = "task.json";
/// `SANDBOX/executor.json`: the [`ExecutorRecord`].
pub const EXECUTOR_FILE: &str = "executor.json";
/// `SANDBOX/running.json`: the [`RunningRecord`].
pub const RUNNING_FILE: &str = "running.json";
/// `SANDBOX/exit.json`: the [`Termination`].
pub const EXIT_FILE: &str = "exit.json";
/// `SANDBOX/executor.log`: the executor's own stdout and stderr.
pub const EXECUTOR_LOG: &str = "executor.log";
/// `SANDBOX/container.json`: the [`ContainerRecord`], what the agent shows in `task
/// inspect` and `ipAddresses`.
pub const CONTAINER_FILE: &str = "container.json";

/// `WORK_DIR/executor-notify.sock`: the agent's unix datagram socket for executors' news.
pub const NOTIFY_SOCKET: &str = "executor-notify.sock";

/// Tells the agent (best effort, never blocking) that `task_id` wrote a new record.
pub fn notify_agent(socket: Option<&std::path::Path>, task_id: &str) {
    let Some(socket) = socket else { return };
    if let Ok(sender) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = sender.set_nonblocking(true);
        let _ = sender.send_to(task_id.as_bytes(), socket);
    }
}

/// Everything the executor needs, self-contained so it never asks the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorSpec {
    pub task_id: String,
    pub sandbox: PathBuf,
    pub command: TaskCommand,
    pub env: Vec<(String, String)>,
    /// SIGTERM → SIGKILL delay (`taskKillGracePeriodSeconds`).
    pub kill_grace_ms: u64,
    /// The task's cgroup directories (empty: run without limits).
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
    #[serde(default)]
    pub logs: LogPolicy,
    /// The app's `user`, else the agent's `--default-task-user`: a command task runs as
    /// this user (the executor must be root then).
    #[serde(default)]
    pub user: Option<String>,
    /// `--allow-root-tasks`: a command task may run as root (uid 0).
    #[serde(default)]
    pub allow_root: bool,
    /// Paths a command task must not see (the agent's work dir, ...): its mount
    /// namespace covers them, its own sandbox bound back in.
    #[serde(default)]
    pub hidden_paths: Vec<PathBuf>,
    /// The task as the master sent it, for people reading the sandbox.
    #[serde(default)]
    pub task: Option<TaskSpec>,
    /// Artifacts to stage into the sandbox before the task starts.
    #[serde(default)]
    pub fetch: Vec<FetchUri>,
    /// The agent's fetch cache (for `cache: true`).
    #[serde(default)]
    pub fetch_cache: Option<PathBuf>,
    /// Set for Docker tasks: the executor pulls the image from the master's registry,
    /// mounts it and runs the task as a container instead of a plain process.
    #[serde(default)]
    pub container: Option<ContainerTask>,
    /// The agent's [`NOTIFY_SOCKET`] (absent: the agent polls only).
    #[serde(default)]
    pub notify_socket: Option<PathBuf>,
}

/// The agent-side facts a Docker task needs beyond its app definition (which is in
/// `task`): where images come from and live, and how the task is networked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerTask {
    /// `container.docker.image` as the app gave it.
    pub image: String,
    /// `forcePullImage`: ask the master to re-resolve the tag upstream.
    #[serde(default)]
    pub force_pull: bool,
    /// The master's registry, e.g. `http://10.0.0.1:5000`.
    pub registry: String,
    /// The agent's image and layer store.
    pub images_dir: PathBuf,
    /// Decompressed bytes one layer may have before it is refused.
    pub max_layer_bytes: u64,
    pub network: ContainerNetwork,
    /// `portMappings` resolved against the offer: host port for each container port.
    #[serde(default)]
    pub port_mappings: Vec<MappedPort>,
    /// The agent's address (what `HOST` says), for `/etc/hosts`.
    pub host: String,
    /// The search domain (`marathon.mesos`) when the node serves DNS on port 53: the
    /// container's resolv.conf then names the node's DNS first.
    #[serde(default)]
    pub dns_search: Option<String>,
    /// A prepared root filesystem used instead of pulling `image` (tests, benchmarks;
    /// never set from an app definition).
    #[serde(default)]
    pub local_image: Option<LocalImage>,
    /// `--userns-remap`: a user namespace with these host ids, layers shifted to them
    /// (a local image's rootfs is used as it is: its owner must be shifted already).
    #[serde(default)]
    pub userns_remap: Option<crate::userns::IdRemap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum ContainerNetwork {
    /// The agent's own network namespace.
    Host,
    /// Its own namespace with a veth on the agent's bridge and an address from `subnet`;
    /// `ipam_dir` holds the address leases shared by all executors.
    Bridge { bridge: String, subnet: String, ipam_dir: PathBuf },
    /// Its own namespace with only loopback.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedPort {
    pub container_port: u16,
    pub host_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// `executor.json`: lets the agent find the executor even if it crashed before
/// checkpointing the pid it spawned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorRecord {
    pub pid: i32,
    pub start_time: Option<u64>,
}

/// `running.json`: the task process started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningRecord {
    pub pid: i32,
    pub started_at: String,
    /// When each start phase the executor saw ended, in order (`task inspect`'s timeline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseMark>,
}

/// A start phase on the agent, as the task's timeline names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPhase {
    /// The image is in the agent's store (a container task only).
    Pulled,
    /// Its overlay is mounted (a container task only).
    Rootfs,
    /// The container (libcontainer's create) or the process (fork) exists.
    Created,
    /// The task's process was exec'd.
    Started,
}

/// When one [`StartPhase`] ended (RFC 3339, milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseMark {
    pub phase: StartPhase,
    pub at: String,
}

impl PhaseMark {
    /// The phase, ending now.
    pub fn now(phase: StartPhase) -> PhaseMark {
        PhaseMark { phase, at: plinth_protocol::Timestamp::now().to_iso() }
    }
}

/// A port as `container.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRecord {
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: String,
}

/// `SANDBOX/container.json`, written once the container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pid: i32,
    pub ip: Option<Ipv4Addr>,
    /// `host`, `bridge` or `none`.
    pub network: String,
    pub image: String,
    pub image_digest: Option<String>,
    pub rootfs: PathBuf,
    /// The cgroup path (relative to the hierarchy roots), e.g. `/plinth/<task>`.
    pub cgroup: String,
    pub netns: Option<PathBuf>,
    pub ports: Vec<PortRecord>,
}

/// A root filesystem prepared outside the image store (tests, benchmarks): used as is
/// instead of pulling. The agent never sets it from an app definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalImage {
    pub rootfs: PathBuf,
    /// The image configuration (OCI `config.json` of the image).
    pub config: PathBuf,
}

/// How a task ended, as the runtime saw it (the executor's `exit.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Termination {
    /// Exit status when the task exited by itself.
    pub code: Option<i32>,
    /// Signal number when a signal ended it.
    pub signal: Option<i32>,
    /// The memory limit's OOM killer struck.
    pub oom: bool,
    /// The task was killed on request.
    #[serde(default)]
    pub killed: bool,
    /// Set when the task could not even be started.
    #[serde(default)]
    pub error: Option<String>,
    /// Staging its artifacts failed (`error` says which and why); the command never ran.
    #[serde(default)]
    pub fetch_failed: bool,
    pub finished_at: String,
}
