//! The core's state and operations. (Signatures first; bodies being filled in.)
use std::collections::{BTreeMap, HashMap, HashSet};

use plinth_protocol::agent::{DesiredState, Registration, StatusUpdate, SyncRequest, SyncResponse};
use plinth_protocol::{AgentId, AppDefinition, AppId, DeploymentId, TaskId, Timestamp};

use super::model::*;

/// Tunables of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// An agent silent this long is lost and its tasks are replaced.
    pub agent_timeout_ms: i64,
    /// How often agents should sync (told to them at registration).
    pub heartbeat_interval_ms: u64,
    /// Cluster-wide service ports for `port: 0` / `servicePort: 0`.
    pub service_ports: (u16, u16),
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig { agent_timeout_ms: 10_000, heartbeat_interval_ms: 1_000, service_ports: (10_000, 20_000) }
    }
}

/// Errors of core operations; the API maps them to HTTP in one place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    #[error("An app with id [{0}] already exists.")]
    AppExists(AppId),
    #[error("App '{0}' does not exist")]
    AppNotFound(AppId),
    #[error("Task '{0}' does not exist")]
    TaskNotFound(TaskId),
    #[error("DeploymentPlan {0} does not exist")]
    DeploymentNotFound(DeploymentId),
    #[error("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.")]
    AppLocked { app: AppId, deployments: Vec<DeploymentId> },
    #[error("Agent '{0}' is not registered")]
    UnknownAgent(AgentId),
    #[error("No service port left in {0}-{1}")]
    ServicePortsExhausted(u16, u16),
    #[error("Version '{version}' of app '{app}' does not exist")]
    VersionNotFound { app: AppId, version: String },
}

/// Which tasks a kill request targets.
#[derive(Debug, Clone)]
pub enum KillTarget {
    /// These task ids (from `DELETE /v2/apps/{id}/tasks/{taskId}` or `POST /v2/tasks/delete`).
    Tasks(Vec<TaskId>),
    /// All tasks of an app, optionally only those on one host (`DELETE /v2/apps/{id}/tasks?host=`).
    App { app: AppId, host: Option<String> },
}

/// Result of a kill request.
#[derive(Debug, Clone)]
pub struct Killed {
    pub tasks: Vec<TaskRecord>,
    /// With `scale=true`, the deployment that lowered `instances`.
    pub deployment: Option<(DeploymentId, String)>,
}

/// One `/v2/queue` entry.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub app_id: AppId,
    /// Tasks still to launch.
    pub count: usize,
    pub since: Timestamp,
    pub delay_left_ms: i64,
    pub stats: OfferStats,
}

/// The scheduler core.
pub struct Core {
    config: CoreConfig,
    next_uuid: Box<dyn FnMut() -> uuid::Uuid + Send>,
    apps: BTreeMap<AppId, AppRecord>,
    versions: BTreeMap<AppId, BTreeMap<String, AppDefinition>>,
    tasks: HashMap<TaskId, TaskRecord>,
    tasks_by_app: HashMap<AppId, HashSet<TaskId>>,
    tasks_by_agent: HashMap<AgentId, HashSet<TaskId>>,
    agents: BTreeMap<AgentId, AgentState>,
    deployments: BTreeMap<DeploymentId, DeploymentRecord>,
    offer_stats: HashMap<AppId, (Timestamp, OfferStats)>,
    processed_updates: HashSet<uuid::Uuid>,
    changes: Changes,
}

/// An agent plus what the core derives about it (not persisted).
#[derive(Debug, Clone)]
pub struct AgentState {
    pub record: AgentRecord,
    /// Resources used by its non-terminal tasks.
    pub used: plinth_protocol::Resources,
    /// Synced since this master process started (else it must re-register).
    pub seen_since_start: bool,
}

impl Core {
    /// An empty core. `next_uuid` supplies task/deployment ids (random in production,
    /// a counter in tests).
    pub fn new(config: CoreConfig, next_uuid: Box<dyn FnMut() -> uuid::Uuid + Send>) -> Self {
        let _ = (config, next_uuid);
        todo!()
    }

    /// Rebuilds the core from the store after a restart. Agents get a fresh timeout
    /// window (`now`) to come back before they are declared lost.
    pub fn restore(config: CoreConfig, next_uuid: Box<dyn FnMut() -> uuid::Uuid + Send>, snapshot: Snapshot, now: Timestamp) -> Self {
        let _ = (config, next_uuid, snapshot, now);
        todo!()
    }

    // ---- API commands. `def` has been parsed, validated and normalised by the caller.

    /// `POST /v2/apps`: 409 if it exists. Returns the stored app and its deployment.
    pub fn create_app(&mut self, def: AppDefinition, now: Timestamp) -> Result<(AppRecord, DeploymentId), CoreError> {
        let _ = (def, now);
        todo!()
    }

    /// `PUT /v2/apps/{id}` with the full new definition (the caller merged a partial
    /// update onto the current one). Creates the app when absent (`created == true`).
    /// A change of `instances` only is a scale; anything else a rolling upgrade.
    /// 409 `AppLocked` when a deployment runs for the app and `force` is false.
    pub fn put_app(&mut self, def: AppDefinition, now: Timestamp, force: bool) -> Result<PutOutcome, CoreError> {
        let _ = (def, now, force);
        todo!()
    }

    /// `DELETE /v2/apps/{id}`: always wins over running deployments.
    pub fn delete_app(&mut self, id: &AppId, now: Timestamp) -> Result<(DeploymentId, String), CoreError> {
        let _ = (id, now);
        todo!()
    }

    /// `POST /v2/apps/{id}/restart`: new version, same config, rolling replacement.
    pub fn restart_app(&mut self, id: &AppId, now: Timestamp, force: bool) -> Result<(DeploymentId, String), CoreError> {
        let _ = (id, now, force);
        todo!()
    }

    /// Kill tasks; with `scale` the app's `instances` drops by the number killed.
    pub fn kill_tasks(&mut self, target: KillTarget, scale: bool, now: Timestamp, force: bool) -> Result<Killed, CoreError> {
        let _ = (target, scale, now, force);
        todo!()
    }

    /// `DELETE /v2/deployments/{id}`: roll back (a new deployment to the previous
    /// definition, returned), or with `force` just stop tracking it.
    pub fn cancel_deployment(&mut self, id: &DeploymentId, force: bool, now: Timestamp) -> Result<Option<(DeploymentId, String)>, CoreError> {
        let _ = (id, force, now);
        todo!()
    }

    /// `DELETE /v2/queue/{id}/delay`.
    pub fn reset_delay(&mut self, id: &AppId) -> Result<(), CoreError> {
        let _ = id;
        todo!()
    }

    // ---- agent protocol

    /// Registration or re-registration. Adopts reported tasks the master knows;
    /// continues the generation above the agent's.
    pub fn register_agent(&mut self, registration: Registration, now: Timestamp) -> AgentId {
        let _ = (registration, now);
        todo!()
    }

    /// Heartbeat. Returns the desired state when newer than the agent's generation.
    pub fn sync_agent(&mut self, request: &SyncRequest, now: Timestamp) -> SyncResponse {
        let _ = (request, now);
        todo!()
    }

    /// The agent's current desired state.
    pub fn desired_state(&self, agent: &AgentId) -> Option<DesiredState> {
        let _ = agent;
        todo!()
    }

    /// Applies status updates; returns the ids to acknowledge (duplicates included, so
    /// a resent update is acked without being applied twice).
    pub fn apply_status_updates(&mut self, agent: &AgentId, updates: Vec<StatusUpdate>, now: Timestamp) -> Vec<uuid::Uuid> {
        let _ = (agent, updates, now);
        todo!()
    }

    /// `node drain`: no new tasks on the agent.
    pub fn set_draining(&mut self, agent: &AgentId, draining: bool) -> Result<(), CoreError> {
        let _ = (agent, draining);
        todo!()
    }

    // ---- time

    /// One scheduling round: lost agents, supervision (launch via offers, kill
    /// surplus), deployment progress.
    pub fn tick(&mut self, now: Timestamp) {
        let _ = now;
        todo!()
    }

    /// Drains what changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    // ---- queries

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }
    pub fn apps(&self) -> impl Iterator<Item = &AppRecord> {
        self.apps.values()
    }
    pub fn app(&self, id: &AppId) -> Option<&AppRecord> {
        self.apps.get(id)
    }
    /// Non-terminal tasks of an app.
    pub fn app_tasks(&self, id: &AppId) -> Vec<&TaskRecord> {
        let _ = id;
        todo!()
    }
    pub fn tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.values()
    }
    pub fn task(&self, id: &TaskId) -> Option<&TaskRecord> {
        self.tasks.get(id)
    }
    pub fn agents(&self) -> impl Iterator<Item = &AgentState> {
        self.agents.values()
    }
    pub fn agent(&self, id: &AgentId) -> Option<&AgentState> {
        self.agents.get(id)
    }
    pub fn deployments(&self) -> impl Iterator<Item = &DeploymentRecord> {
        self.deployments.values()
    }
    pub fn deployment(&self, id: &DeploymentId) -> Option<&DeploymentRecord> {
        self.deployments.get(id)
    }
    /// Deployments touching an app.
    pub fn app_deployments(&self, id: &AppId) -> Vec<&DeploymentRecord> {
        self.deployments.values().filter(|d| &d.app_id == id).collect()
    }
    /// Stored versions of an app, newest last.
    pub fn app_versions(&self, id: &AppId) -> Option<Vec<String>> {
        self.versions.get(id).map(|v| v.keys().cloned().collect())
    }
    pub fn app_version(&self, id: &AppId, version: &str) -> Option<&AppDefinition> {
        self.versions.get(id).and_then(|v| v.get(version))
    }
    /// Service ports of an app, in port order.
    pub fn service_ports(&self, id: &AppId) -> Vec<u16> {
        let _ = id;
        todo!()
    }
    /// Apps waiting for launches, with offer statistics.
    pub fn queue(&self, now: Timestamp) -> Vec<QueueEntry> {
        let _ = now;
        todo!()
    }
}

/// Result of `put_app`.
#[derive(Debug, Clone)]
pub struct PutOutcome {
    pub created: bool,
    pub app: AppRecord,
    pub deployment: DeploymentId,
    pub version: String,
}
