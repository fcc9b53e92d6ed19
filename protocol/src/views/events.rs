//! Event bodies as Marathon sends them on `/v2/events` (SSE) and to callback subscribers
//! (Marathon's `core/event/Events.scala` case classes; the plans of Marathon 1.4). Each
//! body gets `eventType` and `timestamp` added when it is published.
//!
//! Only the types in [`MARATHON_EVENT_TYPES`] go to `/v2/events` and the callbacks;
//! Plinth's own events (image pulls, lost agents) are on `/v1/events`, because Marathon
//! clients stop at an event type they do not know.
use serde::{Deserialize, Serialize};

use super::app::{App, HealthCheck};
use super::deployment::{DeploymentPlan, DeploymentStep};
use super::task::IpAddr;

/// The event types a Marathon client may receive.
pub const MARATHON_EVENT_TYPES: &[&str] = &[
    "api_post_event",
    "status_update_event",
    "framework_message_event",
    "subscribe_event",
    "unsubscribe_event",
    "event_stream_attached",
    "event_stream_detached",
    "add_health_check_event",
    "remove_health_check_event",
    "failed_health_check_event",
    "health_status_changed_event",
    "unhealthy_instance_kill_event",
    "group_change_success",
    "group_change_failed",
    "deployment_success",
    "deployment_failed",
    "deployment_info",
    "deployment_step_success",
    "deployment_step_failure",
    "app_terminated_event",
    "instance_changed_event",
    "unknown_instance_terminated_event",
    "instance_health_changed_event",
    "pod_created_event",
    "pod_updated_event",
    "pod_deleted_event",
    "scheduler_registered_event",
    "scheduler_reregistered_event",
    "scheduler_disconnected_event",
];

/// True for an event type Marathon has (and its clients know).
pub fn is_marathon_event(event_type: &str) -> bool {
    MARATHON_EVENT_TYPES.contains(&event_type)
}

/// An event body and its `eventType`.
pub trait EventBody: Serialize {
    const TYPE: &'static str;
}

macro_rules! event {
    ($name:ident, $type:literal) => {
        impl EventBody for $name {
            const TYPE: &'static str = $type;
        }
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventStreamAttached {
    pub remote_address: String,
}
event!(EventStreamAttached, "event_stream_attached");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiPostEvent {
    pub client_ip: String,
    pub uri: String,
    pub app_definition: App,
}
event!(ApiPostEvent, "api_post_event");

/// A task changed state (`MesosStatusUpdateEvent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdateEvent {
    pub slave_id: String,
    pub task_id: String,
    pub task_status: String,
    pub message: String,
    pub app_id: String,
    pub host: String,
    pub ip_addresses: Vec<IpAddr>,
    pub ports: Vec<u16>,
    pub version: String,
}
event!(StatusUpdateEvent, "status_update_event");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedHealthCheckEvent {
    pub app_id: String,
    pub instance_id: String,
    pub health_check: HealthCheck,
}
event!(FailedHealthCheckEvent, "failed_health_check_event");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatusChangedEvent {
    pub app_id: String,
    pub instance_id: String,
    pub version: String,
    pub alive: bool,
}
event!(HealthStatusChangedEvent, "health_status_changed_event");

/// A task killed for failing its health checks too often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnhealthyInstanceKillEvent {
    pub app_id: String,
    pub task_id: String,
    pub instance_id: String,
    pub version: String,
    pub reason: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slave_id: Option<String>,
}
event!(UnhealthyInstanceKillEvent, "unhealthy_instance_kill_event");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppTerminatedEvent {
    pub app_id: String,
}
event!(AppTerminatedEvent, "app_terminated_event");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupChangeSuccess {
    pub group_id: String,
    pub version: String,
}
event!(GroupChangeSuccess, "group_change_success");

/// `deployment_info`: a deployment started (`DeploymentStatus`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInfoEvent {
    pub plan: DeploymentPlan,
    pub current_step: DeploymentStep,
}
event!(DeploymentInfoEvent, "deployment_info");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStepSuccess {
    pub plan: DeploymentPlan,
    pub current_step: DeploymentStep,
}
event!(DeploymentStepSuccess, "deployment_step_success");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStepFailure {
    pub plan: DeploymentPlan,
    pub current_step: DeploymentStep,
}
event!(DeploymentStepFailure, "deployment_step_failure");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentSuccess {
    pub id: String,
    pub plan: DeploymentPlan,
}
event!(DeploymentSuccess, "deployment_success");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentFailed {
    pub id: String,
    pub plan: DeploymentPlan,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
event!(DeploymentFailed, "deployment_failed");

/// `subscribe_event` and `unsubscribe_event` (also the answers of `/v2/eventSubscriptions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionEvent {
    pub client_ip: String,
    pub callback_url: String,
}

/// Plinth's own: an agent stopped answering (its tasks' `status_update_event`s follow).
/// On `/v1/events` only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentLostEvent {
    pub agent_id: String,
}
event!(AgentLostEvent, "agent_lost_event");

/// Plinth's own: a task joined or left the backends of a service port, in every agent's
/// balancer (`lb_backend_added`, `lb_backend_removed`). On `/v1/events` only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LbBackend {
    pub app_id: String,
    pub task_id: String,
    pub service_port: u16,
    pub protocol: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LbBackendAdded(pub LbBackend);
event!(LbBackendAdded, "lb_backend_added");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LbBackendRemoved(pub LbBackend);
event!(LbBackendRemoved, "lb_backend_removed");
