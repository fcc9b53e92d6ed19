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
    /// An explicit service port another app already has (Marathon answers 422).
    #[error("servicePort {port} of app '{app}' is already the service port of app '{other}'")]
    ServicePortClash { port: u16, app: AppId, other: AppId },
    /// An explicit service port above the configured range: those are the agents'
    /// host ports, where tasks and the executor's port proxies listen.
    #[error(
        "servicePort {port} of app '{app}' is outside the service ports 1-{high} (0 assigns one from {low}-{high})"
    )]
    ServicePortOutOfRange { port: u16, app: AppId, low: u16, high: u16 },
    #[error("Version '{version}' of app '{app}' does not exist")]
    VersionNotFound { app: AppId, version: String },
    #[error("invalid app definition: {0}")]
    InvalidApp(String),
}
