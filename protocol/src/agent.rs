//! The agent protocol (master `:8080/agent/v1/...`), JSON over HTTP.
//!
//! - `POST /agent/v1/register` [`Registration`] → [`Registered`]: first contact and every
//!   reconnect; carries the tasks the agent still runs, so a restarted master adopts them.
//! - `POST /agent/v1/sync` [`SyncRequest`] → [`SyncResponse`]: the heartbeat. The master
//!   answers with the agent's whole desired task set when its generation is newer than the
//!   one the agent applied (long-polls up to `wait_ms` for a change).
//! - `POST /agent/v1/status` [`StatusBatch`] → [`StatusAck`]: task state changes. The agent
//!   keeps each update in its checkpointed outbox and resends it until acknowledged.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::{AgentId, AppDefinition, AppId, Attributes, Resources, TaskId, TaskState};

/// Header that carries the join token, when the master requires one.
pub const TOKEN_HEADER: &str = "x-plinth-token";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// `None` on the very first registration; afterwards the id the master gave.
    pub agent_id: Option<AgentId>,
    pub hostname: String,
    /// Address other hosts reach this agent's tasks (and its HTTP API) at.
    pub advertise_ip: String,
    pub http_port: u16,
    pub resources: Resources,
    #[serde(default)]
    pub attributes: Attributes,
    /// The last generation this agent applied; a restarted master continues above it.
    #[serde(default)]
    pub last_generation: u64,
    /// Every non-terminal task the agent runs.
    #[serde(default)]
    pub tasks: Vec<TaskReport>,
    #[serde(default)]
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub agent_id: AgentId,
    pub heartbeat_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub agent_id: AgentId,
    /// Generation of the desired state the agent last applied.
    pub generation: u64,
    #[serde(default)]
    pub tasks: Vec<TaskReport>,
    /// Long-poll: hold the answer up to this long while nothing changes.
    #[serde(default)]
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Present when the master's generation for this agent is newer than the agent's.
    pub desired: Option<DesiredState>,
    /// The master does not know this agent (e.g. it was expunged): register again.
    #[serde(default)]
    pub reregister: bool,
}

/// The whole set of tasks an agent should run. Tasks absent from it are killed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    pub generation: u64,
    pub tasks: Vec<TaskSpec>,
}

/// One task to run: the app version's definition plus what the offer gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: TaskId,
    pub app_id: AppId,
    /// The app version (an ISO timestamp, as Marathon's `version`).
    pub version: String,
    pub app: AppDefinition,
    /// Host ports given by the offer, in port-definition order.
    pub host_ports: Vec<u16>,
    /// True once the master wants the task stopped (scale down, kill, new version):
    /// the agent kills it gracefully and reports `TASK_KILLED`.
    #[serde(default)]
    pub kill: bool,
}

/// What the agent observes of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub task_id: TaskId,
    pub app_id: AppId,
    pub version: String,
    pub state: TaskState,
    #[serde(default)]
    pub host_ports: Vec<u16>,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub started_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// Unique per update, so a resent update is applied once.
    pub update_id: uuid::Uuid,
    pub task_id: TaskId,
    pub app_id: AppId,
    pub state: TaskState,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Mesos-style reason, e.g. `REASON_CONTAINER_LIMITATION_MEMORY` for an OOM kill.
    #[serde(default)]
    pub reason: Option<String>,
    pub timestamp: String,
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl StatusUpdate {
    /// An update of a task's state with nothing else to say (no message, exit code,
    /// health); callers add those with struct update syntax.
    pub fn new(update_id: uuid::Uuid, task_id: TaskId, app_id: AppId, state: TaskState, timestamp: String) -> Self {
        StatusUpdate {
            update_id,
            task_id,
            app_id,
            state,
            message: None,
            exit_code: None,
            reason: None,
            timestamp,
            healthy: None,
            extra: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusBatch {
    pub agent_id: AgentId,
    pub updates: Vec<StatusUpdate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusAck {
    pub acknowledged: Vec<uuid::Uuid>,
}
