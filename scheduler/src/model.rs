//! The records the scheduler core keeps, and which the store persists as JSON.
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

use crate::payload::Payload;
use plinth_protocol::views::events::{EventBody, StatusUpdateEvent};
use plinth_protocol::views::task::IpAddr;
use plinth_protocol::views::{self, DeploymentStep};
use plinth_protocol::{
    AgentId, AppDefinition, AppId, Attributes, DeploymentId, Resources, TaskId, TaskState, Timestamp,
};

/// An app as the supervisor keeps it: its current definition (normalised, with
/// `version` and `versionInfo` set) and its launch backoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub id: AppId,
    /// Shared with the stored version it came from (and with read copies of the core).
    pub definition: std::sync::Arc<AppDefinition>,
    /// Current version (ISO timestamp), also in `definition.version`.
    pub version: String,
    /// The version whose configuration tasks must run; a scale-only change keeps it.
    pub config_version: String,
    pub backoff: Backoff,
    pub created_at: Timestamp,
    /// The last task of this app that failed (`embed=apps.lastTaskFailure`).
    #[serde(default)]
    pub last_task_failure: Option<Value>,
}

/// Marathon's launch delay after failures: `backoffSeconds * backoffFactor^(n-1)`,
/// capped at `maxLaunchDelaySeconds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub failures: u32,
    pub not_before: Timestamp,
}

/// One task the master placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: TaskId,
    pub app_id: AppId,
    /// The app's config version this task runs.
    pub version: String,
    pub agent_id: AgentId,
    pub host: String,
    pub ports: Vec<u16>,
    /// Resources taken from the agent (scalars plus the ports above).
    pub resources: Resources,
    pub state: TaskState,
    pub staged_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    /// The master asked the agent to kill it (shown as `TASK_KILLING`).
    pub kill_requested: bool,
    /// Why it was killed (scale down, upgrade, API, unhealthy...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_reason: Option<String>,
    /// Since when it is out of the service table awaiting its kill (see `services.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<Value>,
    /// Readiness as the agent's readiness checks last reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// When its agent was lost, for apps whose `unreachableStrategy` keeps such tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<Timestamp>,
}

/// What an app asks of a task before it counts as serving (deployments wait for it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Readiness {
    pub health_checks: bool,
    pub readiness_checks: bool,
}

impl Readiness {
    pub fn of(def: &plinth_protocol::AppDefinition) -> Self {
        Readiness { health_checks: !def.health_checks.is_empty(), readiness_checks: !def.readiness_checks.is_empty() }
    }
}

impl TaskRecord {
    /// The state Marathon clients see.
    pub fn visible_state(&self) -> TaskState {
        if self.kill_requested && !self.state.is_terminal() {
            TaskState::TaskKilling
        } else {
            self.state
        }
    }

    pub fn is_running(&self) -> bool {
        self.state == TaskState::TaskRunning && !self.kill_requested
    }

    /// Running and, when the app has them, healthy and ready.
    pub fn is_ready(&self, needs: Readiness) -> bool {
        self.is_running()
            && (!needs.health_checks || self.healthy == Some(true))
            && (!needs.readiness_checks || self.ready == Some(true))
    }

    /// The addresses of the task (`ipAddresses`): the agent's reports, else its host.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let reported: Vec<IpAddr> =
            self.ip_addresses.iter().filter_map(|v| serde_json::from_value::<IpAddr>(v.clone()).ok()).collect();
        if reported.is_empty() {
            vec![IpAddr { ip_address: self.host.clone(), protocol: "IPv4".into() }]
        } else {
            reported
        }
    }
}

/// An agent (Mesos "slave").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: AgentId,
    pub hostname: String,
    pub advertise_ip: String,
    pub http_port: u16,
    /// Total resources the agent offers.
    pub resources: Resources,
    pub attributes: Attributes,
    pub registered_at: Timestamp,
    pub last_seen: Timestamp,
    /// False once it missed heartbeats past the timeout (lost).
    pub active: bool,
    /// No new tasks are placed here (node drain).
    #[serde(default)]
    pub draining: bool,
    /// Generation of this agent's desired task set.
    pub generation: u64,
    #[serde(default)]
    pub version: String,
}

/// Marathon deployment actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentAction {
    StartApplication,
    ScaleApplication,
    RestartApplication,
    StopApplication,
}

/// A deployment: moving one app from where it is to a target version and size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: DeploymentId,
    /// The app version this deployment targets.
    pub version: String,
    pub app_id: AppId,
    pub steps: Vec<Vec<DeploymentAction>>,
    /// 1-based, as Marathon shows it.
    pub current_step: usize,
    pub started_at: Timestamp,
    /// The definition before this deployment, for rollback (`None` for a new app).
    pub previous: Option<AppDefinition>,
    /// The config version before this deployment: tasks of it are kept on rollback.
    #[serde(default)]
    pub previous_config_version: Option<String>,
    /// Why it cannot progress right now (no room, backoff, ...), refreshed every tick.
    pub blocked_reason: Option<String>,
}

impl DeploymentRecord {
    pub fn current_actions(&self) -> &[DeploymentAction] {
        self.steps.get(self.current_step.saturating_sub(1)).map_or(&[], Vec::as_slice)
    }

    /// The plan's steps as Marathon writes them.
    pub fn steps_view(&self) -> Vec<DeploymentStep> {
        self.steps
            .iter()
            .map(|step| DeploymentStep {
                actions: step
                    .iter()
                    .map(|a| views::DeploymentAction { action: a.name().to_string(), app: self.app_id.to_string() })
                    .collect(),
            })
            .collect()
    }
}

impl DeploymentAction {
    /// Marathon's name of the action (`StartApplication`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            DeploymentAction::StartApplication => "StartApplication",
            DeploymentAction::ScaleApplication => "ScaleApplication",
            DeploymentAction::RestartApplication => "RestartApplication",
            DeploymentAction::StopApplication => "StopApplication",
        }
    }
}

/// An event for `/v2/events` and callback subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_type: String,
    /// The full JSON body, including `eventType` and `timestamp` (built on first read).
    pub payload: Payload,
}

impl Event {
    pub fn new(event_type: &str, now: Timestamp, mut payload: Value) -> Self {
        crate::payload::stamp(&mut payload, event_type, now);
        Event { event_type: event_type.to_string(), payload: Payload::json(payload) }
    }

    /// An event of one of the typed bodies (`plinth_protocol::views::events`).
    pub fn of<E: EventBody>(now: Timestamp, body: &E) -> Self {
        // A body of plain fields always serializes; an empty object would only drop fields.
        let payload = serde_json::to_value(body).unwrap_or_else(|_| json!({}));
        Event::new(E::TYPE, now, payload)
    }

    /// [`Event::of`] whose JSON is built only when someone reads it (bodies without app
    /// definitions only: see [`Payload::lazy`]).
    pub fn lazy<E: EventBody + Send + Sync + 'static>(now: Timestamp, body: E) -> Self {
        Event { event_type: E::TYPE.to_string(), payload: Payload::lazy(now, body) }
    }
}

/// What the core knows about one group beyond its apps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRecord {
    /// Absolute paths (apps or groups) every app in this group depends on.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Versions (ISO timestamps) at which the group changed, oldest first.
    #[serde(default)]
    pub versions: Vec<String>,
    /// What the group held at each of its versions (those still in `versions`), for
    /// rolling it back (`PUT /v2/groups/{id}` with `{"version"}`). Shared with read copies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snapshots: BTreeMap<String, std::sync::Arc<GroupSnapshot>>,
    /// Definitions of apps deleted since that a snapshot still names (their stored
    /// versions went with the app).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<std::sync::Arc<AppDefinition>>,
}

/// A group at one version: its apps at their versions and the dependencies of the groups
/// in it (itself included). Apps are named by version, not copied: their definitions are
/// the app's stored versions (or [`GroupRecord::kept`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub apps: BTreeMap<AppId, String>,
    pub groups: BTreeMap<String, Vec<String>>,
}

/// Group records by absolute path.
pub type GroupRecords = BTreeMap<String, GroupRecord>;

/// Everything the store holds, loaded at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub apps: Vec<AppRecord>,
    pub app_versions: Vec<(AppId, String, AppDefinition)>,
    pub tasks: Vec<TaskRecord>,
    pub agents: Vec<AgentRecord>,
    pub deployments: Vec<DeploymentRecord>,
    /// Group records by path.
    pub groups: Vec<(String, GroupRecord)>,
}

/// Per waiting app: what the last offers said (`GET /v2/queue`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OfferStats {
    pub processed: u64,
    pub unused: u64,
    pub last_unused_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    /// Reason code (Marathon's, e.g. `InsufficientMemory`) → (declined, processed) in the
    /// last round, and a readable example message.
    pub last_round: BTreeMap<String, (u64, String)>,
    pub last_round_processed: u64,
}

/// Marathon's `status_update_event` body for a task.
pub(crate) fn status_event(task: &TaskRecord) -> StatusUpdateEvent {
    StatusUpdateEvent {
        slave_id: task.agent_id.to_string(),
        task_id: task.id.to_string(),
        task_status: task.state.as_str().to_string(),
        message: task.message.clone().unwrap_or_default(),
        app_id: task.app_id.to_string(),
        host: task.host.clone(),
        ip_addresses: task.addresses(),
        ports: task.ports.clone(),
        version: task.version.clone(),
    }
}
