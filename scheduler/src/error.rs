//! Errors of core operations; the master's API maps them to HTTP in one place.
use plinth_protocol::{AgentId, AppId, DeploymentId, TaskId};

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
    #[error("invalid app definition: {0}")]
    InvalidApp(String),
}
