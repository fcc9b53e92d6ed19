//! The agent's checkpointed state: what the master wants, what runs, and the status
//! updates not yet acknowledged. It is written atomically to `work_dir/checkpoint.json`
//! on every change, so a `kill -9` at any moment loses nothing.
use plinth_protocol::agent::{DesiredState, StatusUpdate, TaskReport, TaskSpec};
use plinth_protocol::{ClusterId, Resources, TaskId, TaskState, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::AgentError;
use crate::fsutil;
use crate::runtime::RuntimeHandle;

pub const CHECKPOINT_FILE: &str = "checkpoint.json";
pub const AGENT_ID_FILE: &str = "agent_id";

/// One task as the agent knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub spec: TaskSpec,
    pub state: TaskState,
    pub sandbox: PathBuf,
    /// Set once the runtime accepted the launch.
    #[serde(default)]
    pub handle: Option<RuntimeHandle>,
    #[serde(default)]
    pub pid: Option<i32>,
    pub launched_at: Timestamp,
    #[serde(default)]
    pub running_since: Option<Timestamp>,
    #[serde(default)]
    pub kill_requested_at: Option<Timestamp>,
    #[serde(default)]
    pub force_killed: bool,
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl TaskRecord {
    pub fn new(spec: TaskSpec, sandbox: PathBuf, now: Timestamp) -> Self {
        TaskRecord {
            spec,
            state: TaskState::TaskStaging,
            sandbox,
            handle: None,
            pid: None,
            launched_at: now,
            running_since: None,
            kill_requested_at: None,
            force_killed: false,
            finished_at: None,
            exit_code: None,
            message: None,
            reason: None,
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// The app's `taskKillGracePeriodSeconds`.
    // why: float-to-int `as` saturates (NaN is 0); the value is clamped non-negative.
    #[allow(clippy::cast_possible_truncation)]
    pub fn kill_grace_ms(&self) -> i64 {
        (self.spec.app.task_kill_grace_period_seconds.max(0.0) * 1000.0) as i64
    }

    pub fn report(&self) -> TaskReport {
        let app = &self.spec.app;
        TaskReport {
            task_id: self.spec.task_id.clone(),
            app_id: self.spec.app_id.clone(),
            version: self.spec.version.clone(),
            state: self.state,
            host_ports: self.spec.host_ports.clone(),
            resources: Some(Resources::scalars(app.cpus, app.mem, app.disk)),
            started_at: self.running_since.map(Timestamp::to_iso),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Generation of `desired`; older or equal ones from the master are ignored.
    pub applied_generation: u64,
    pub desired: DesiredState,
    pub tasks: BTreeMap<TaskId, TaskRecord>,
    /// Status updates in the order they happened, until the master acknowledges them.
    pub outbox: Vec<StatusUpdate>,
    /// The cluster of the first master that accepted this agent: a master of another one
    /// (say, one that lost its store) is not followed. Absent until then.
    #[serde(default)]
    pub cluster_id: Option<ClusterId>,
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState {
            applied_generation: 0,
            desired: DesiredState { generation: 0, tasks: Vec::new() },
            tasks: BTreeMap::new(),
            outbox: Vec::new(),
            cluster_id: None,
        }
    }
}

impl NodeState {
    pub fn load(work_dir: &Path) -> Result<Self, AgentError> {
        Ok(fsutil::read_json(&work_dir.join(CHECKPOINT_FILE))?.unwrap_or_default())
    }

    pub fn save(&self, work_dir: &Path) -> Result<(), AgentError> {
        fsutil::write_json_atomic(&work_dir.join(CHECKPOINT_FILE), self)
    }

    /// Reports of every task still running (for registration and heartbeats).
    pub fn live_reports(&self) -> Vec<TaskReport> {
        self.tasks.values().filter(|t| !t.is_terminal()).map(TaskRecord::report).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskenv::tests::spec_from;
    use serde_json::json;

    #[test]
    fn checkpoint_round_trips_through_the_work_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(NodeState::load(dir.path()).unwrap(), NodeState::default());
        let spec = spec_from("web.1", json!({"id": "/web", "cmd": "serve", "mem": 64}), vec![31000]);
        let mut state = NodeState {
            applied_generation: 7,
            desired: DesiredState { generation: 7, tasks: vec![spec.clone()] },
            cluster_id: Some(ClusterId::new("c0ffee-0000")),
            ..Default::default()
        };
        let mut record = TaskRecord::new(spec.clone(), dir.path().join("tasks/web.1"), Timestamp(1000));
        record.handle = Some(RuntimeHandle {
            task_id: spec.task_id.clone(),
            sandbox: record.sandbox.clone(),
            pid: Some(42),
            pid_start_time: Some(12345),
            cgroup: Some(crate::cgroup::TaskCgroup { name: "plinth/web.1".into(), dirs: vec!["/sys/x".into()] }),
        });
        record.state = TaskState::TaskRunning;
        state.tasks.insert(spec.task_id.clone(), record);
        state.save(dir.path()).unwrap();
        let loaded = NodeState::load(dir.path()).unwrap();
        assert_eq!(loaded, state);
        assert_eq!(loaded.live_reports().len(), 1);
        assert_eq!(loaded.live_reports()[0].host_ports, vec![31000]);
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CHECKPOINT_FILE), b"{half").unwrap();
        assert!(matches!(NodeState::load(dir.path()), Err(AgentError::ParseFile { .. })));
    }
}
