//! Mesos task states as Marathon reports them.
use serde::{Deserialize, Serialize};

/// Marathon task states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    TaskStaging,
    TaskStarting,
    TaskRunning,
    TaskKilling,
    TaskFinished,
    TaskFailed,
    TaskKilled,
    TaskLost,
    TaskUnreachable,
    TaskError,
    TaskGone,
    TaskDropped,
}

impl TaskState {
    /// Terminal states: the task will never run again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::TaskFinished
                | TaskState::TaskFailed
                | TaskState::TaskKilled
                | TaskState::TaskLost
                | TaskState::TaskError
                | TaskState::TaskGone
                | TaskState::TaskDropped
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::TaskStaging => "TASK_STAGING",
            TaskState::TaskStarting => "TASK_STARTING",
            TaskState::TaskRunning => "TASK_RUNNING",
            TaskState::TaskKilling => "TASK_KILLING",
            TaskState::TaskFinished => "TASK_FINISHED",
            TaskState::TaskFailed => "TASK_FAILED",
            TaskState::TaskKilled => "TASK_KILLED",
            TaskState::TaskLost => "TASK_LOST",
            TaskState::TaskUnreachable => "TASK_UNREACHABLE",
            TaskState::TaskError => "TASK_ERROR",
            TaskState::TaskGone => "TASK_GONE",
            TaskState::TaskDropped => "TASK_DROPPED",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
