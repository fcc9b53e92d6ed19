//! Extra read-only views of the core the API needs, built only on its public accessors.
use serde_json::{json, Value};

use plinth_protocol::{AppId, TaskState};

use crate::core::Core;

/// Marathon's `lastTaskFailure` of an app, from the failed tasks the core still keeps.
pub fn last_task_failure(core: &Core, app: &AppId) -> Option<Value> {
    core.tasks()
        .filter(|t| &t.app_id == app && matches!(t.state, TaskState::TaskFailed | TaskState::TaskLost | TaskState::TaskError))
        .max_by_key(|t| t.updated_at)
        .map(|t| {
            json!({
                "appId": t.app_id,
                "host": t.host,
                "message": t.message.clone().unwrap_or_default(),
                "state": t.state,
                "taskId": t.id,
                "timestamp": t.updated_at.to_iso(),
                "version": t.version,
                "slaveId": t.agent_id,
            })
        })
}
