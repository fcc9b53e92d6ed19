//! Health judgement: agents run the checks and report `healthCheckResults`; the core
//! counts consecutive failures per check and kills a task at `maxConsecutiveFailures`.
use serde_json::Value;

use plinth_protocol::views::app::HealthCheck;
use plinth_protocol::views::events::{FailedHealthCheckEvent, UnhealthyInstanceKillEvent};
use plinth_protocol::{TaskId, Timestamp};

use crate::state::Core;

impl Core {
    /// Kills a task whose health checks failed `maxConsecutiveFailures` times in a row
    /// (0 = never), emitting Marathon's `failed_health_check_event` for each new failure
    /// and `unhealthy_instance_kill_event` for the kill.
    pub(crate) fn judge_health(
        &mut self,
        task_id: &TaskId,
        before: &[(u64, String)],
        after: &[(u64, String)],
        now: Timestamp,
    ) {
        let Some(task) = self.tasks.get(task_id) else { return };
        let Some(app) = self.apps.get(&task.app_id) else { return };
        let checks = self
            .version_definition(&task.app_id, &task.version)
            .map_or_else(|| app.definition.health_checks.clone(), |d| d.health_checks.clone());
        let (app_id, version, host, agent) =
            (task.app_id.clone(), task.version.clone(), task.host.clone(), task.agent_id.clone());
        let mut kill_cause = None;
        for (index, check) in checks.iter().enumerate() {
            let (failures, cause) = after.get(index).cloned().unwrap_or_default();
            let previous = before.get(index).map_or(0, |(f, _)| *f);
            if failures > previous {
                self.emit(
                    now,
                    &FailedHealthCheckEvent {
                        app_id: app_id.to_string(),
                        instance_id: task_id.to_string(),
                        health_check: HealthCheck::of(check),
                    },
                );
            }
            let max = u64::from(check.max_consecutive_failures);
            if max > 0 && failures >= max && kill_cause.is_none() {
                kill_cause = Some(format!("{} health check failed {failures} times in a row: {cause}", check.protocol));
            }
        }
        if let Some(reason) = kill_cause {
            if self.tasks.get(task_id).is_some_and(|t| !t.kill_requested) {
                tracing::info!(app_id = %app_id, task_id = %task_id, %reason, "killing unhealthy task");
                self.request_kill(task_id, "unhealthy", now);
                self.emit(
                    now,
                    &UnhealthyInstanceKillEvent {
                        app_id: app_id.to_string(),
                        task_id: task_id.to_string(),
                        instance_id: task_id.to_string(),
                        version,
                        reason,
                        host,
                        slave_id: Some(agent.to_string()),
                    },
                );
            }
        }
    }
}

/// `(consecutiveFailures, lastFailureCause)` per health check from Marathon's
/// `healthCheckResults` array.
pub(crate) fn failures_per_check(results: Option<&Value>) -> Vec<(u64, String)> {
    results
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|r| {
                    let failures = r.get("consecutiveFailures").and_then(Value::as_u64).unwrap_or(0);
                    let cause = r.get("lastFailureCause").and_then(Value::as_str).unwrap_or("").to_string();
                    (failures, cause)
                })
                .collect()
        })
        .unwrap_or_default()
}
