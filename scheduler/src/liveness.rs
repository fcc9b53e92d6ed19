//! Agent liveness: agents silent past the timeout are lost and their tasks `TASK_LOST`,
//! or, for apps whose `unreachableStrategy` keeps them, `TASK_UNREACHABLE` until
//! `inactiveAfterSeconds` (replaced) and `expungeAfterSeconds` (expunged).

use plinth_protocol::marathon::UnreachableStrategy;
use plinth_protocol::views::events::AgentLostEvent;
use plinth_protocol::{AgentId, TaskId, TaskState, Timestamp};

use crate::model::TaskRecord;
use crate::state::Core;

impl Core {
    /// Records that an agent was heard from at `at` (when its request arrived, which
    /// may be well before the core got to it): liveness is judged on what agents sent.
    /// Never revives an agent already declared lost; that takes a re-registration.
    pub fn note_heard(&mut self, agent: &AgentId, at: Timestamp) {
        if let Some(state) = self.agents.get_mut(agent) {
            if state.record.active && at.millis() > state.record.last_seen.millis() {
                state.record.last_seen = at;
            }
        }
    }

    pub(crate) fn detect_lost_agents(&mut self, now: Timestamp) {
        let timeout = self.config.agent_timeout_ms;
        let lost: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| a.record.active && now.millis() - a.record.last_seen.millis() > timeout)
            .map(|a| a.record.id.clone())
            .collect();
        for agent in lost {
            tracing::warn!(node_id = %agent, "agent missed heartbeats past the timeout; marking it lost");
            if let Some(state) = self.agents.get_mut(&agent) {
                state.record.active = false;
                state.seen_since_start = false;
            }
            self.changes.agents.insert(agent.clone());
            self.agent_services_dirty(&agent);
            let tasks: Vec<TaskId> =
                self.tasks_by_agent.get(&agent).map(|s| s.iter().cloned().collect()).unwrap_or_default();
            for task in tasks {
                let Some(record) = self.tasks.get(&task) else { continue };
                let keep = !record.kill_requested
                    && self
                        .apps
                        .get(&record.app_id)
                        .is_some_and(|a| keeps_unreachable(&a.definition.unreachable_strategy));
                if keep {
                    // Kept until inactiveAfterSeconds / expungeAfterSeconds, or forever when disabled.
                    let t = self.tasks.get_mut(&task).expect("present above");
                    t.state = TaskState::TaskUnreachable;
                    t.unreachable_since = Some(now);
                    t.updated_at = now;
                    t.message = Some(format!("agent {agent} is unreachable"));
                    let t = t.clone();
                    self.unreachable.insert(task.clone());
                    self.needs_supervision.insert(t.app_id.clone());
                    self.changes.tasks.insert(task.clone());
                    self.emit_status(&t, now);
                    continue;
                }
                let was_killing = record.kill_requested;
                let state = if was_killing { TaskState::TaskKilled } else { TaskState::TaskLost };
                if let Some(t) = self.tasks.get_mut(&task) {
                    // Losing a machine is not the app's fault: no backoff for it.
                    t.kill_requested = true;
                }
                self.finish_task(
                    &task,
                    state,
                    Some(format!("agent {agent} lost (no heartbeat for {} ms)", timeout)),
                    now,
                );
            }
            self.emit(now, &AgentLostEvent { agent_id: agent.to_string() });
        }
    }

    /// Expunges unreachable tasks past `expungeAfterSeconds` (as `TASK_LOST`).
    pub(crate) fn expunge_unreachable(&mut self, now: Timestamp) {
        let due: Vec<TaskId> = self
            .unreachable
            .iter()
            .filter(|id| {
                let Some(task) = self.tasks.get(*id) else { return true };
                let Some(app) = self.apps.get(&task.app_id) else { return true };
                match (&app.definition.unreachable_strategy, task.unreachable_since) {
                    (UnreachableStrategy::Enabled { expunge_after_seconds, .. }, Some(since)) => {
                        now.seconds_since(since) >= *expunge_after_seconds
                    }
                    (UnreachableStrategy::Disabled(_), _) => false,
                    (_, None) => true,
                }
            })
            .cloned()
            .collect();
        for id in due {
            self.unreachable.remove(&id);
            if let Some(t) = self.tasks.get_mut(&id) {
                t.kill_requested = true;
            }
            self.finish_task(&id, TaskState::TaskLost, Some("unreachable past expungeAfterSeconds".into()), now);
        }
    }

    /// An unreachable task past `inactiveAfterSeconds` no longer counts: it is replaced.
    pub(crate) fn is_inactive(&self, task: &TaskRecord, strategy: &UnreachableStrategy, now: Timestamp) -> bool {
        match (strategy, task.unreachable_since) {
            (UnreachableStrategy::Enabled { inactive_after_seconds, .. }, Some(since)) => {
                now.seconds_since(since) >= *inactive_after_seconds
            }
            _ => false,
        }
    }
}

/// Whether tasks of a lost agent are kept as unreachable rather than lost at once.
pub(crate) fn keeps_unreachable(strategy: &UnreachableStrategy) -> bool {
    match strategy {
        UnreachableStrategy::Enabled { inactive_after_seconds, expunge_after_seconds } => {
            *inactive_after_seconds > 0.0 || *expunge_after_seconds > 0.0
        }
        UnreachableStrategy::Disabled(_) => true,
    }
}
