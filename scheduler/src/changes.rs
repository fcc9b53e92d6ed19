//! The output of every core call: which records changed (the shell reads them back from
//! the core and writes them in one store transaction), the events to publish and the
//! agents whose long-polls to wake.
use std::collections::HashSet;

use plinth_protocol::{AgentId, AppId, DeploymentId, TaskId};

use crate::model::Event;
use plinth_protocol::views::events::LbBackend;

/// What changed since the last [`crate::Core::take_changes`]: the shell persists these
/// records (reading them back from the core), then publishes events and wakes agents.
#[derive(Debug, Default)]
pub struct Changes {
    pub apps: HashSet<AppId>,
    pub app_versions: Vec<(AppId, String)>,
    pub tasks: HashSet<TaskId>,
    pub agents: HashSet<AgentId>,
    pub deployments: HashSet<DeploymentId>,
    /// Group records (by path) written or, when the core no longer has them, deleted.
    pub groups: HashSet<String>,
    pub events: Vec<Event>,
    /// Agents whose desired state changed (wake their long-polls).
    pub notify_agents: HashSet<AgentId>,
    /// Backends that joined (`true`) or left the service table; the shell publishes them
    /// as `lb_backend_added` / `lb_backend_removed` with the time it publishes them.
    pub lb_backends: Vec<(bool, LbBackend)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
            && self.app_versions.is_empty()
            && self.tasks.is_empty()
            && self.agents.is_empty()
            && self.deployments.is_empty()
            && self.groups.is_empty()
            && self.events.is_empty()
            && self.notify_agents.is_empty()
            && self.lb_backends.is_empty()
    }
}
