//! The agent protocol: registration (adopting the tasks an agent reports), sync
//! (heartbeat and desired state per generation) and status updates (de-duplicated).
use std::collections::HashMap;

use serde_json::{json, Value};

use plinth_protocol::agent::{DesiredState, Registration, StatusUpdate, SyncRequest, SyncResponse, TaskSpec};
use plinth_protocol::views::events::HealthStatusChangedEvent;
use plinth_protocol::{AgentId, TaskId, TaskState, Timestamp};

use crate::health::failures_per_check;
use crate::model::{status_event, AgentRecord};
use crate::state::{AgentState, Core};

impl Core {
    /// Registration or re-registration. Adopts reported tasks the master knows;
    /// continues the generation above the agent's.
    pub fn register_agent(&mut self, registration: Registration, now: Timestamp) -> AgentId {
        let id = match &registration.agent_id {
            Some(id) => id.clone(),
            None => AgentId::new(format!("{}-S0", self.uuid())),
        };
        let previous_generation = self.agents.get(&id).map_or(0, |a| a.record.generation);
        let record = AgentRecord {
            id: id.clone(),
            hostname: registration.hostname.clone(),
            advertise_ip: registration.advertise_ip.clone(),
            http_port: registration.http_port,
            resources: registration.resources.clone(),
            attributes: registration.attributes.clone(),
            registered_at: self.agents.get(&id).map_or(now, |a| a.record.registered_at),
            last_seen: now,
            active: true,
            draining: self.agents.get(&id).is_some_and(|a| a.record.draining),
            generation: previous_generation.max(registration.last_generation) + 1,
            version: registration.version.clone(),
        };
        // Rebuild the agent's accounting from the tasks the master holds for it.
        let mut state = AgentState::new(record);
        state.seen_since_start = true;
        let own: Vec<TaskId> = self.tasks_by_agent.get(&id).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        for task_id in &own {
            if let Some(task) = self.tasks.get(task_id) {
                state.take(&task.resources);
            }
        }
        self.agents.insert(id.clone(), state);
        self.agent_services_dirty(&id);
        self.changes.agents.insert(id.clone());
        self.changes.notify_agents.insert(id.clone());

        let reported: HashMap<&TaskId, &plinth_protocol::agent::TaskReport> =
            registration.tasks.iter().map(|t| (&t.task_id, t)).collect();
        for task_id in own {
            let Some(task) = self.tasks.get(&task_id).cloned() else { continue };
            match reported.get(&task_id) {
                Some(report) => {
                    // Adopt: the agent's view is newer than what the master persisted.
                    if report.state != task.state && !report.state.is_terminal() {
                        self.unreachable.remove(&task_id);
                        self.needs_supervision.insert(task.app_id.clone());
                        if let Some(t) = self.tasks.get_mut(&task_id) {
                            t.unreachable_since = None;
                            t.state = report.state;
                            if report.state == TaskState::TaskRunning && t.started_at.is_none() {
                                t.started_at =
                                    report.started_at.as_deref().and_then(Timestamp::parse_iso).or(Some(now));
                            }
                            t.updated_at = now;
                        }
                        self.changes.tasks.insert(task_id.clone());
                    }
                }
                None if task.state == TaskState::TaskStaging && !task.kill_requested => {
                    // Not delivered yet: the desired state will carry it.
                }
                None => {
                    // The agent no longer has it (e.g. the machine rebooted): lost.
                    let state = if task.kill_requested { TaskState::TaskKilled } else { TaskState::TaskLost };
                    self.finish_task(
                        &task_id,
                        state,
                        Some("task not known to the agent on re-registration".into()),
                        now,
                    );
                }
            }
        }
        id
    }

    /// Heartbeat. Returns the desired state when newer than the agent's generation.
    /// (`cluster_id` is left to the master, which knows it.)
    pub fn sync_agent(&mut self, request: &SyncRequest, now: Timestamp) -> SyncResponse {
        let Some(agent) = self.agents.get_mut(&request.agent_id) else {
            return SyncResponse { desired: None, reregister: true, cluster_id: None, services: None };
        };
        if !agent.seen_since_start || !agent.record.active {
            return SyncResponse { desired: None, reregister: true, cluster_id: None, services: None };
        }
        agent.record.last_seen = now;
        let drained = match (request.services_drained, request.services_generation) {
            (Some(d), Some(g)) => Some(d.min(g)),
            (_, g) => g,
        };
        let confirmed = drained.filter(|g| agent.services_drained != Some(*g));
        agent.services_applied = request.services_generation;
        agent.services_drained = drained;
        if request.generation > agent.record.generation {
            // The agent is ahead (e.g. the store lost a bump): continue above it.
            agent.record.generation = request.generation + 1;
            self.changes.agents.insert(request.agent_id.clone());
        }
        let generation = agent.record.generation;
        if let Some(applied) = request.services_generation.filter(|g| *g > self.services_generation) {
            // A restarted master: continue above the table the agent has.
            // Saturating: a hostile agent's u64::MAX must not overflow the core.
            self.services_generation = applied.saturating_add(1);
            self.services_dirty.extend(self.apps.keys().cloned());
        }
        self.refresh_services();
        if confirmed.is_some() {
            self.release_drained(now);
        }
        let desired = (generation > request.generation).then(|| self.desired_state(&request.agent_id)).flatten();
        let services = self.services_update(request.services_generation);
        SyncResponse { desired, reregister: false, cluster_id: None, services }
    }

    /// The agent's current desired state.
    pub fn desired_state(&self, agent: &AgentId) -> Option<DesiredState> {
        let state = self.agents.get(agent)?;
        let mut tasks: Vec<TaskSpec> = self
            .tasks_by_agent
            .get(agent)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
            .filter(|t| !t.state.is_terminal())
            .filter_map(|t| {
                let drained = self.drain_definition(&t.id);
                let app = drained.or_else(|| self.version_definition(&t.app_id, &t.version))?;
                Some(TaskSpec {
                    task_id: t.id.clone(),
                    app_id: t.app_id.clone(),
                    version: t.version.clone(),
                    app: app.clone(),
                    host_ports: t.ports.clone(),
                    // A draining task runs on until every balancer has dropped it.
                    kill: t.kill_requested && drained.is_none(),
                })
            })
            .collect();
        tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Some(DesiredState { generation: state.record.generation, tasks })
    }

    /// Applies status updates; returns the ids to acknowledge (duplicates included, so
    /// a resent update is acked without being applied twice).
    pub fn apply_status_updates(
        &mut self,
        agent: &AgentId,
        updates: Vec<StatusUpdate>,
        now: Timestamp,
    ) -> Vec<uuid::Uuid> {
        let mut acked = Vec::with_capacity(updates.len());
        if let Some(a) = self.agents.get_mut(agent) {
            a.record.last_seen = now;
        }
        for update in updates {
            acked.push(update.update_id);
            if !self.remember_update(update.update_id) {
                continue;
            }
            let Some(task) = self.tasks.get(&update.task_id) else { continue };
            if &task.agent_id != agent || task.state.is_terminal() {
                continue;
            }
            if update.state.is_terminal() {
                let message = update.message.clone().or(update.reason.clone());
                self.finish_task(&update.task_id, update.state, message, now);
                if let Some(reason) = &update.reason {
                    if let Some(app) = self.apps.get_mut(&update.app_id) {
                        if let Some(failure) = app.last_task_failure.as_mut() {
                            failure["reason"] = json!(reason);
                            failure["exitCode"] = json!(update.exit_code);
                        }
                    }
                }
                continue;
            }
            let task = self.tasks.get_mut(&update.task_id).expect("checked above");
            let health_changed = update.healthy.is_some() && update.healthy != task.healthy;
            task.state = update.state;
            task.updated_at = now;
            if update.message.is_some() {
                task.message = update.message.clone();
            }
            if update.state == TaskState::TaskRunning && task.started_at.is_none() {
                task.started_at = Some(now);
            }
            if update.healthy.is_some() {
                task.healthy = update.healthy;
            }
            if let Some(ips) = update.extra.get("ipAddresses").and_then(Value::as_array) {
                task.ip_addresses = ips.clone();
            }
            if let Some(ready) = update.extra.get("ready").and_then(Value::as_bool) {
                task.ready = Some(ready);
            }
            let previous_failures = failures_per_check(task.health.as_ref());
            if let Some(health) = update.extra.get("healthCheckResults") {
                task.health = Some(health.clone());
            }
            let current_failures = failures_per_check(task.health.as_ref());
            let health_event = health_changed.then(|| HealthStatusChangedEvent {
                app_id: task.app_id.to_string(),
                instance_id: task.id.to_string(),
                version: task.version.clone(),
                alive: task.healthy == Some(true),
            });
            let event = status_event(task);
            self.needs_supervision.insert(update.app_id.clone());
            self.changes.tasks.insert(update.task_id.clone());
            self.changes.events.push(crate::model::Event::lazy(now, event));
            if let Some(body) = health_event {
                self.emit(now, &body);
            }
            self.judge_health(&update.task_id, &previous_failures, &current_failures, now);
        }
        acked
    }
}
