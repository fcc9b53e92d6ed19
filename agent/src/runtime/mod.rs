//! How the agent starts and supervises task processes, behind one trait, [`TaskRuntime`]:
//! [`ProcessRuntime`] runs every task (command or Docker) under its own executor process
//! (`plinth executor`, which runs a Docker task's container itself, see
//! [`crate::container`]); `FakeRuntime` (tests and the `testing` feature only) is an
//! in-memory state machine with failure injection for fast tests.
//!
//! Every method returns promptly: slow work (an image pull, say) belongs in the
//! background and shows up through [`TaskRuntime::poll`]. That keeps the trait
//! object-safe and lets the agent drive any number of tasks from one loop.
use plinth_protocol::agent::TaskSpec;
use plinth_protocol::TaskId;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

use crate::cgroup::TaskCgroup;
use crate::config::TaskConfinement;
use crate::error::AgentError;
use crate::executor_contract::{ContainerTask, Termination};
use crate::logs::LogPolicy;

#[cfg(any(test, feature = "testing"))]
mod fake;
mod process;

#[cfg(any(test, feature = "testing"))]
pub use fake::FakeRuntime;
pub use process::{task_user, ExecutorCommand, ProcessRuntime};

/// What the agent asks a runtime to start.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    pub spec: TaskSpec,
    /// The task's working directory; it holds its logs and the runtime's files.
    pub sandbox: PathBuf,
    /// The complete environment (see [`crate::taskenv::task_env`]).
    pub env: Vec<(String, String)>,
    pub logs: LogPolicy,
    /// The agent's artifact cache for `fetch` URIs with `cache: true`.
    pub fetch_cache: Option<PathBuf>,
    /// Set for Docker tasks.
    pub container: Option<ContainerTask>,
    /// Who a command task runs as and what it may see (hidden paths complete: the
    /// agent's work dir included).
    pub confinement: TaskConfinement,
    /// Where the executor reports news (`executor_contract::NOTIFY_SOCKET`); `None`:
    /// the agent only polls.
    pub notify_socket: Option<PathBuf>,
}

/// What the agent checkpoints to find a task again after it restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeHandle {
    pub task_id: TaskId,
    pub sandbox: PathBuf,
    /// The supervising process (the executor), with its start time so a reused pid is
    /// never mistaken for it.
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub pid_start_time: Option<u64>,
    #[serde(default)]
    pub cgroup: Option<TaskCgroup>,
}

impl RuntimeHandle {
    /// A handle that knows only where the task lives (e.g. the agent crashed between
    /// checkpointing the launch and learning the pid); `recover` fills in the rest.
    pub fn unresolved(task_id: TaskId, sandbox: PathBuf) -> Self {
        RuntimeHandle { task_id, sandbox, pid: None, pid_start_time: None, cgroup: None }
    }
}

/// One look at a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Launched; the task's own process is not there yet.
    Starting,
    Running {
        pid: Option<i32>,
    },
    Exited(Termination),
    /// The runtime lost the task without learning how it ended (its supervisor died).
    Gone {
        message: String,
    },
}

/// Starts, watches, stops and re-adopts the agent's tasks; the agent's shell
/// (`node.rs`) is its only caller.
pub trait TaskRuntime: Send + Sync {
    /// Short name for logs and errors (`process`, `fake`).
    fn name(&self) -> &'static str;
    /// Starts a task and returns what must be checkpointed to find it again.
    fn launch(&self, request: &LaunchRequest) -> Result<RuntimeHandle, AgentError>;
    /// Asks the task to stop: SIGTERM now, SIGKILL once `grace` has passed.
    fn kill(&self, handle: &RuntimeHandle, grace: Duration) -> Result<(), AgentError>;
    /// Stops the task at once; for kills that outlived their grace period.
    fn force_kill(&self, handle: &RuntimeHandle) -> Result<(), AgentError>;
    fn poll(&self, handle: &RuntimeHandle) -> Observation;
    /// Re-attaches to a task from the checkpoint after an agent restart; returns the
    /// handle completed with whatever the runtime found. Never starts or kills anything.
    fn recover(&self, handle: &RuntimeHandle) -> RuntimeHandle;
    /// Releases what the task held (its cgroup) once it has ended. Logs stay.
    fn cleanup(&self, handle: &RuntimeHandle) -> Result<(), AgentError>;
}
