//! Read views of the core for the API: apps, tasks, agents, deployments, versions and
//! the launch queue.
use plinth_protocol::views::task_stats::{Stats, TaskCounts, TaskLifeTime, TaskStats, TaskStatsByVersion};
use plinth_protocol::{AgentId, AppDefinition, AppId, DeploymentId, TaskId, TaskState, Timestamp};

use crate::model::{AppRecord, DeploymentRecord, OfferStats, TaskRecord};
use crate::ports::service_ports_of;
use crate::state::{AgentState, Core, CoreConfig};
use crate::supervision::instance_count;

/// One `/v2/queue` entry.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub app_id: AppId,
    /// Tasks still to launch.
    pub count: usize,
    pub since: Timestamp,
    pub delay_left_ms: i64,
    pub stats: OfferStats,
}

impl Core {
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    pub fn apps(&self) -> impl Iterator<Item = &AppRecord> {
        self.apps.values()
    }

    pub fn app(&self, id: &AppId) -> Option<&AppRecord> {
        self.apps.get(id)
    }

    /// Non-terminal tasks of an app, oldest first.
    pub fn app_tasks(&self, id: &AppId) -> Vec<&TaskRecord> {
        let mut tasks: Vec<&TaskRecord> = self
            .tasks_by_app
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|t| self.tasks.get(t).map(|t| &**t))
            .filter(|t| !t.state.is_terminal())
            .collect();
        tasks.sort_by(|a, b| a.staged_at.cmp(&b.staged_at).then_with(|| a.id.cmp(&b.id)));
        tasks
    }

    pub fn tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.values().map(|t| &**t)
    }

    pub fn task(&self, id: &TaskId) -> Option<&TaskRecord> {
        self.tasks.get(id).map(|t| &**t)
    }

    pub fn agents(&self) -> impl Iterator<Item = &AgentState> {
        self.agents.values()
    }

    pub fn agent(&self, id: &AgentId) -> Option<&AgentState> {
        self.agents.get(id)
    }

    pub fn deployments(&self) -> impl Iterator<Item = &DeploymentRecord> {
        self.deployments.values()
    }

    pub fn deployment(&self, id: &DeploymentId) -> Option<&DeploymentRecord> {
        self.deployments.get(id)
    }

    /// Deployments touching an app.
    pub fn app_deployments(&self, id: &AppId) -> Vec<&DeploymentRecord> {
        self.deployments.values().filter(|d| &d.app_id == id).collect()
    }

    /// Stored versions of an app, oldest first.
    pub fn app_versions(&self, id: &AppId) -> Option<Vec<String>> {
        self.versions.get(id).map(|v| v.keys().cloned().collect())
    }

    pub fn app_version(&self, id: &AppId, version: &str) -> Option<&AppDefinition> {
        self.versions.get(id).and_then(|v| v.get(version)).map(|d| &**d)
    }

    /// Marathon's `taskStats` of an app's live tasks at `now`: after the last scaling (by
    /// launch time), of the latest config, of an older one, and all (`None`: no such app).
    pub fn task_stats(&self, id: &AppId, now: Timestamp) -> Option<TaskStatsByVersion> {
        let app = self.apps.get(id)?;
        let tasks = self.app_tasks(id);
        let checked = !app.definition.health_checks.is_empty();
        let stats = |pick: &dyn Fn(&TaskRecord) -> bool| {
            let picked: Vec<&TaskRecord> = tasks.iter().copied().filter(|t| pick(t)).collect();
            task_stats_of(&picked, checked, now)
        };
        let info = app.definition.version_info.as_ref();
        let scaled_at = info.and_then(|v| Timestamp::parse_iso(&v.last_scaling_at));
        // Task versions are config versions: the same strings as `lastConfigChangeAt`.
        let config = info.map(|v| v.last_config_change_at.as_str());
        Some(TaskStatsByVersion {
            started_after_last_scaling: scaled_at.and_then(|at| stats(&|t| t.staged_at >= at)),
            with_latest_config: config.and_then(|c| stats(&|t| t.version.as_str() >= c)),
            with_outdated_config: config.and_then(|c| stats(&|t| t.version.as_str() < c)),
            total_summary: stats(&|_| true),
        })
    }

    /// Service ports of an app, in port order.
    pub fn service_ports(&self, id: &AppId) -> Vec<u16> {
        self.apps.get(id).map(|a| service_ports_of(&a.definition)).unwrap_or_default()
    }

    /// Apps short of tasks of their current config, with the offer statistics of the
    /// last round (empty when no agent has offered anything to them yet).
    pub fn queue(&self, now: Timestamp) -> Vec<QueueEntry> {
        self.apps
            .values()
            .filter_map(|app| {
                let live = self
                    .app_tasks(&app.id)
                    .iter()
                    .filter(|t| !t.kill_requested && t.version == app.config_version)
                    .count();
                let count = instance_count(&app.definition).saturating_sub(live);
                let (since, stats) = self
                    .offer_stats
                    .get(&app.id)
                    .map_or((app.created_at, OfferStats::default()), |(since, stats)| (*since, stats.clone()));
                (count > 0).then(|| QueueEntry {
                    app_id: app.id.clone(),
                    count,
                    since,
                    delay_left_ms: (app.backoff.not_before.millis() - now.millis()).max(0),
                    stats,
                })
            })
            .collect()
    }

    /// Number of non-terminal tasks (for metrics).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// A draining agent with no task left (what `plinth node drain` waits for).
    pub fn is_drained(&self, agent: &AgentId) -> bool {
        self.agents.get(agent).is_some_and(|a| a.record.draining)
            && self.tasks_by_agent.get(agent).is_none_or(|tasks| tasks.is_empty())
    }
}

/// Counts and life times of some tasks (`None` for none, as Marathon leaves such a group out).
fn task_stats_of(tasks: &[&TaskRecord], checked: bool, now: Timestamp) -> Option<Stats> {
    if tasks.is_empty() {
        return None;
    }
    let count = |f: &dyn Fn(&TaskRecord) -> bool| tasks.iter().filter(|t| f(t)).count();
    let counts = TaskCounts {
        staged: count(&|t| matches!(t.state, TaskState::TaskStaging | TaskState::TaskStarting)),
        running: count(&|t| t.state == TaskState::TaskRunning),
        healthy: count(&|t| checked && t.state == TaskState::TaskRunning && t.healthy == Some(true)),
        unhealthy: count(&|t| checked && t.healthy == Some(false)),
    };
    let mut lives: Vec<f64> = tasks
        .iter()
        .filter(|t| t.state == TaskState::TaskRunning)
        .filter_map(|t| t.started_at)
        .map(|started| now.seconds_since(started).max(0.0))
        .collect();
    lives.sort_by(f64::total_cmp);
    let life_time = (!lives.is_empty()).then(|| {
        let middle = lives.len() / 2;
        let median =
            if lives.len().is_multiple_of(2) { (lives[middle - 1] + lives[middle]) / 2.0 } else { lives[middle] };
        TaskLifeTime { average_seconds: lives.iter().sum::<f64>() / lives.len() as f64, median_seconds: median }
    });
    Some(Stats { stats: TaskStats { counts, life_time } })
}
