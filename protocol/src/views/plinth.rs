//! Plinth's own views, under `/v1/...` where Marathon clients do not look: what Plinth
//! knows beyond Marathon's fields (the store, the agent of a task, why a deployment or a
//! queued app waits, image pulls, the full last failure of an app).
use serde::{Deserialize, Serialize};

use super::deployment::DeploymentInfo;
use super::queue::{ProcessedOffersSummary, QueueDelay};
use super::task::Task;

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    pub name: String,
    pub version: String,
    pub leader: String,
    pub framework_id: String,
    /// The Marathon API version whose JSON `/v2` answers with.
    pub marathon_api: String,
    pub storage: Storage,
    pub registry: RegistryInfo,
    pub agent_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
}

/// The master's image registry (pull-through cache and push target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryInfo {
    pub listen: String,
    pub insecure: Vec<String>,
    pub aliases: Vec<String>,
}

/// `GET /v1/tasks`: Marathon's task plus what Plinth knows of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlinthTask {
    #[serde(flatten)]
    pub task: Task,
    pub agent_id: String,
    /// The last status message (e.g. why it ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Why the master asked for it to be killed (scale down, upgrade, unhealthy, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlinthTaskList {
    pub tasks: Vec<PlinthTask>,
}

/// `GET /v1/deployments`: Marathon's deployment plus why it cannot progress now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlinthDeployment {
    #[serde(flatten)]
    pub deployment: DeploymentInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_reason: Option<String>,
}

/// `GET /v1/queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlinthQueue {
    pub queue: Vec<PlinthQueueItem>,
}

/// An app waiting for launches, with readable reasons ("why is my app not starting?").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlinthQueueItem {
    pub app_id: String,
    pub count: usize,
    pub delay: QueueDelay,
    pub since: String,
    pub processed_offers_summary: ProcessedOffersSummary,
    /// Sentences saying why the app is short of instances, the most telling first.
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_image_pull: Option<ImagePull>,
}

/// The last pull of an app's image into the master's registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePull {
    /// `pulling`, `completed` or `failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub at: String,
}

/// `GET /v1/apps/{id}`: what Plinth knows of an app beyond Marathon's JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlinthApp {
    pub id: String,
    /// The last failed task as recorded, with the agent's reason and exit code.
    pub last_task_failure: Option<serde_json::Value>,
}
