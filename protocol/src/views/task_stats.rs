//! `embed=apps.taskStats`: an app's tasks counted by how their version relates to the
//! app's `versionInfo`, as Marathon 1.x writes them (`TaskStatsByVersion` in its
//! `task.raml`). Marathon names the field `taskStats` (its RAML says `tasksStats`; the
//! writer, which clients read, says `taskStats`). A group with no task is left out.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatsByVersion {
    /// Tasks launched at or after `versionInfo.lastScalingAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_after_last_scaling: Option<Stats>,
    /// Tasks of the configuration of `versionInfo.lastConfigChangeAt` (or newer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_latest_config: Option<Stats>,
    /// Tasks of an older configuration (a rolling upgrade not yet done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_outdated_config: Option<Stats>,
    /// Every task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_summary: Option<Stats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub stats: TaskStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStats {
    pub counts: TaskCounts,
    /// Only when some task has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub life_time: Option<TaskLifeTime>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    pub staged: usize,
    pub running: usize,
    pub healthy: usize,
    pub unhealthy: usize,
}

/// Seconds since the running tasks started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskLifeTime {
    pub average_seconds: f64,
    pub median_seconds: f64,
}
