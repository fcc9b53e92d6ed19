//! Tasks as Marathon writes them (`task.raml`): `/v2/tasks`, `/v2/apps/{id}/tasks`, the
//! tasks embedded in apps, the answers of kills; an app's last task failure and its
//! readiness check results.
use serde::{Deserialize, Serialize};

/// Marathon's task JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub app_id: String,
    pub health_check_results: Vec<Health>,
    pub host: String,
    pub id: String,
    pub ip_addresses: Vec<IpAddr>,
    pub ports: Vec<u16>,
    pub service_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slave_id: Option<String>,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub local_volumes: Vec<LocalVolumeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub role: String,
}

/// `{"ipAddress": "10.0.0.3", "protocol": "IPv4"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddr {
    pub ip_address: String,
    pub protocol: String,
}

/// One health check's state for a task (`Health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub alive: bool,
    pub consecutive_failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_success: Option<String>,
    pub instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_cause: Option<String>,
}

/// A persistent volume a task holds (Plinth has none; the field is always `[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeId {
    pub run_spec_id: String,
    pub container_path: String,
    pub uuid: String,
    pub persistence_id: String,
}

/// `{"tasks": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskList {
    pub tasks: Vec<Task>,
}

/// `{"task": {...}}` (the answer of killing one task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSingle {
    pub task: Task,
}

/// An app's last failed task (`embed=app.lastTaskFailure`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFailure {
    pub app_id: String,
    pub host: String,
    pub message: String,
    pub state: String,
    pub task_id: String,
    pub timestamp: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slave_id: Option<String>,
}

/// A task's readiness (`embed=app.readiness`, deployments' current actions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReadinessCheckResult {
    pub name: String,
    pub task_id: String,
    pub ready: bool,
}
