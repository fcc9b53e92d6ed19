//! API commands on apps and tasks: create, put (scale or new version), delete, restart,
//! kill tasks (optionally scaling down), cancel a deployment (roll back), reset a launch
//! delay, drain an agent. The caller has parsed, validated and normalised definitions.
use std::collections::BTreeMap;

use plinth_protocol::marathon::VersionInfo;
use plinth_protocol::views::events::AppTerminatedEvent;
use plinth_protocol::{AgentId, AppDefinition, AppId, DeploymentId, TaskId, Timestamp};

use crate::error::CoreError;
use crate::model::{AppRecord, Backoff, DeploymentAction, TaskRecord};
use crate::state::Core;

/// Which tasks a kill request targets.
#[derive(Debug, Clone)]
pub enum KillTarget {
    /// These task ids (from `DELETE /v2/apps/{id}/tasks/{taskId}` or `POST /v2/tasks/delete`).
    Tasks(Vec<TaskId>),
    /// All tasks of an app, optionally only those on one host (`DELETE /v2/apps/{id}/tasks?host=`).
    App { app: AppId, host: Option<String> },
}

/// Result of a kill request.
#[derive(Debug, Clone)]
pub struct Killed {
    pub tasks: Vec<TaskRecord>,
    /// With `scale=true`, the deployment that lowered `instances`.
    pub deployment: Option<(DeploymentId, String)>,
}

/// Result of `put_app`.
#[derive(Debug, Clone)]
pub struct PutOutcome {
    pub created: bool,
    pub app: AppRecord,
    pub deployment: DeploymentId,
    pub version: String,
}

impl Core {
    /// A version string (ISO time) not yet used by this app.
    pub(crate) fn fresh_version(&self, id: &AppId, now: Timestamp) -> String {
        let mut t = now;
        let taken = |v: &str| self.versions.get(id).is_some_and(|m| m.contains_key(v));
        while taken(&t.to_iso()) || self.apps.get(id).is_some_and(|a| a.version == t.to_iso()) {
            t = t.plus_millis(1);
        }
        t.to_iso()
    }

    pub(crate) fn check_lock(&self, app: &AppId, force: bool) -> Result<(), CoreError> {
        let deployments: Vec<DeploymentId> =
            self.deployments.values().filter(|d| &d.app_id == app).map(|d| d.id.clone()).collect();
        if deployments.is_empty() || force {
            Ok(())
        } else {
            Err(CoreError::AppLocked { app: app.clone(), deployments })
        }
    }

    /// Stores a new current definition and version of an app.
    pub(crate) fn store_version(
        &mut self,
        id: &AppId,
        mut def: AppDefinition,
        version: &str,
        config_changed: bool,
        now: Timestamp,
    ) {
        let last_config_change = match (config_changed, self.apps.get(id)) {
            (false, Some(app)) => app
                .definition
                .version_info
                .as_ref()
                .map_or_else(|| app.config_version.clone(), |v| v.last_config_change_at.clone()),
            _ => version.to_string(),
        };
        def.id = id.to_string();
        def.version = Some(version.to_string());
        def.version_info =
            Some(VersionInfo { last_scaling_at: version.to_string(), last_config_change_at: last_config_change });
        let def = std::sync::Arc::new(def);
        let record = match self.apps.remove(id) {
            Some(mut app) => {
                app.definition = def.clone();
                app.version = version.to_string();
                if config_changed {
                    app.config_version = version.to_string();
                    app.backoff = Backoff::default();
                }
                app
            }
            None => AppRecord {
                id: id.clone(),
                definition: def.clone(),
                version: version.to_string(),
                config_version: version.to_string(),
                backoff: Backoff::default(),
                created_at: now,
                last_task_failure: None,
            },
        };
        self.apps.insert(id.clone(), record);
        self.needs_supervision.insert(id.clone());
        self.versions.entry(id.clone()).or_default().insert(version.to_string(), def);
        self.changes.apps.insert(id.clone());
        self.changes.app_versions.push((id.clone(), version.to_string()));
    }

    /// `POST /v2/apps`: 409 if it exists. Returns the stored app and its deployment. A
    /// deployment left by a deleted app of the same id is superseded.
    pub fn create_app(
        &mut self,
        mut def: AppDefinition,
        now: Timestamp,
    ) -> Result<(AppRecord, DeploymentId), CoreError> {
        let id = AppId::parse(&def.id).map_err(|e| CoreError::InvalidApp(e.to_string()))?;
        if self.apps.contains_key(&id) {
            return Err(CoreError::AppExists(id));
        }
        self.assign_service_ports(&mut def, None)?;
        // A deleted app's stop deployment may still wait for its tasks to end: the new app
        // ends it, so it neither locks the new app nor rolls back to the old definition.
        self.supersede_deployments(&id, "superseded: the app was created again", now);
        let version = self.fresh_version(&id, now);
        self.store_version(&id, def, &version, true, now);
        let steps = vec![vec![DeploymentAction::StartApplication], vec![DeploymentAction::ScaleApplication]];
        let deployment = self.new_deployment(&id, &version, steps, None, now);
        let app = self.apps.get(&id).cloned().ok_or_else(|| CoreError::AppNotFound(id.clone()))?;
        Ok((app, deployment))
    }

    /// `PUT /v2/apps/{id}` with the full new definition (the caller merged a partial
    /// update onto the current one). Creates the app when absent (`created == true`).
    /// A change of `instances` only is a scale; anything else a rolling upgrade.
    /// 409 `AppLocked` when a deployment runs for the app and `force` is false.
    pub fn put_app(&mut self, mut def: AppDefinition, now: Timestamp, force: bool) -> Result<PutOutcome, CoreError> {
        let id = AppId::parse(&def.id).map_err(|e| CoreError::InvalidApp(e.to_string()))?;
        let Some(current) = self.apps.get(&id).cloned() else {
            let (app, deployment) = self.create_app(def, now)?;
            let version = app.version.clone();
            return Ok(PutOutcome { created: true, app, deployment, version });
        };
        self.check_lock(&id, force)?;
        self.assign_service_ports(&mut def, Some(&current.definition))?;
        let config_changed = !same_config(&current.definition, &def);
        self.supersede_deployments(&id, "superseded by a forced update", now);
        let version = self.fresh_version(&id, now);
        self.store_version(&id, def, &version, config_changed, now);
        let action =
            if config_changed { DeploymentAction::RestartApplication } else { DeploymentAction::ScaleApplication };
        let previous = Some((AppDefinition::clone(&current.definition), current.config_version.clone()));
        let deployment = self.new_deployment(&id, &version, vec![vec![action]], previous, now);
        let app = self.apps.get(&id).cloned().ok_or_else(|| CoreError::AppNotFound(id.clone()))?;
        Ok(PutOutcome { created: false, app, deployment, version })
    }

    /// `DELETE /v2/apps/{id}`: always wins over running deployments.
    pub fn delete_app(&mut self, id: &AppId, now: Timestamp) -> Result<(DeploymentId, String), CoreError> {
        let app = self.apps.get(id).cloned().ok_or_else(|| CoreError::AppNotFound(id.clone()))?;
        self.supersede_deployments(id, "app deleted", now);
        let task_ids: Vec<TaskId> = self.tasks_by_app.get(id).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        for task_id in task_ids {
            self.request_kill(&task_id, "app deleted", now);
        }
        self.apps.remove(id);
        self.changes.apps.insert(id.clone());
        self.offer_stats.remove(id);
        let version = self.fresh_version(id, now);
        self.keep_versions_for_group_snapshots(id);
        if let Some(versions) = self.versions.remove(id) {
            // Version records go with the app; the store deletes what the core no longer has.
            for v in versions.into_keys() {
                self.changes.app_versions.push((id.clone(), v));
            }
        }
        let previous = Some((AppDefinition::clone(&app.definition), app.config_version.clone()));
        let deployment =
            self.new_deployment(id, &version, vec![vec![DeploymentAction::StopApplication]], previous, now);
        self.emit(now, &AppTerminatedEvent { app_id: id.to_string() });
        Ok((deployment, version))
    }

    /// `POST /v2/apps/{id}/restart`: new version, same config, rolling replacement.
    pub fn restart_app(
        &mut self,
        id: &AppId,
        now: Timestamp,
        force: bool,
    ) -> Result<(DeploymentId, String), CoreError> {
        let current = self.apps.get(id).cloned().ok_or_else(|| CoreError::AppNotFound(id.clone()))?;
        self.check_lock(id, force)?;
        self.supersede_deployments(id, "superseded by a forced restart", now);
        let version = self.fresh_version(id, now);
        self.store_version(id, AppDefinition::clone(&current.definition), &version, true, now);
        let previous = Some((AppDefinition::clone(&current.definition), current.config_version.clone()));
        let deployment =
            self.new_deployment(id, &version, vec![vec![DeploymentAction::RestartApplication]], previous, now);
        Ok((deployment, version))
    }

    /// Marks a task for killing; the agent gets it with `kill: true`, at once when it
    /// serves no traffic, else once the balancers dropped it (`services.rs`).
    pub(crate) fn request_kill(&mut self, id: &TaskId, reason: &str, now: Timestamp) {
        let Some(task) = self.tasks.get(id) else { return };
        if task.kill_requested || task.state.is_terminal() {
            return;
        }
        let drained = self.start_drain(id, now);
        let Some(task) = self.tasks.get_mut(id) else { return };
        task.kill_requested = true;
        task.kill_reason = Some(reason.to_string());
        let agent = task.agent_id.clone();
        self.needs_supervision.insert(task.app_id.clone());
        self.changes.tasks.insert(id.clone());
        if !drained {
            self.bump_generation(&agent);
        }
    }

    /// Kill tasks; with `scale` the app's `instances` drops by the number killed.
    pub fn kill_tasks(
        &mut self,
        target: KillTarget,
        scale: bool,
        now: Timestamp,
        force: bool,
    ) -> Result<Killed, CoreError> {
        let selected: Vec<TaskId> = match target {
            KillTarget::Tasks(ids) => {
                for id in &ids {
                    if !self.tasks.contains_key(id) {
                        return Err(CoreError::TaskNotFound(id.clone()));
                    }
                }
                ids
            }
            KillTarget::App { app, host } => {
                if !self.apps.contains_key(&app) {
                    return Err(CoreError::AppNotFound(app));
                }
                let mut ids: Vec<TaskId> = self
                    .app_tasks(&app)
                    .into_iter()
                    .filter(|t| {
                        !t.kill_requested && host.as_deref().is_none_or(|h| t.host == h || t.agent_id.as_str() == h)
                    })
                    .map(|t| t.id.clone())
                    .collect();
                ids.sort();
                ids
            }
        };
        let mut per_app: BTreeMap<AppId, usize> = BTreeMap::new();
        for id in &selected {
            if let Some(t) = self.tasks.get(id) {
                if !t.kill_requested {
                    *per_app.entry(t.app_id.clone()).or_default() += 1;
                }
            }
        }
        if scale {
            for app in per_app.keys() {
                if self.apps.contains_key(app) {
                    self.check_lock(app, force)?;
                }
            }
        }
        let killed: Vec<TaskRecord> =
            selected.iter().filter_map(|id| self.tasks.get(id).map(|t| (**t).clone())).collect();
        for id in &selected {
            self.request_kill(id, if scale { "killed and scaled via API" } else { "killed via API" }, now);
        }
        let mut deployment = None;
        if scale {
            for (app_id, count) in per_app {
                let Some(app) = self.apps.get(&app_id).cloned() else { continue };
                let mut def = AppDefinition::clone(&app.definition);
                def.instances = def.instances.saturating_sub(i64::try_from(count).unwrap_or(i64::MAX)).max(0);
                let outcome = self.put_app(def, now, true)?;
                deployment = Some((outcome.deployment, outcome.version));
            }
        }
        Ok(Killed { tasks: killed, deployment })
    }

    /// `DELETE /v2/deployments/{id}`: roll back (a new deployment to the previous
    /// definition, returned), or with `force` just stop tracking it.
    pub fn cancel_deployment(
        &mut self,
        id: &DeploymentId,
        force: bool,
        now: Timestamp,
    ) -> Result<Option<(DeploymentId, String)>, CoreError> {
        let deployment = self.deployments.remove(id).ok_or_else(|| CoreError::DeploymentNotFound(id.clone()))?;
        self.changes.deployments.insert(id.clone());
        let reason = if force { "cancelled" } else { "cancelled: rolling back" };
        self.emit_deployment_failed(&deployment, reason, now);
        if force {
            return Ok(None);
        }
        let app_id = deployment.app_id.clone();
        match (deployment.previous, deployment.previous_config_version) {
            // Cancelling the start of a new app removes it, as Marathon does.
            (None, _) if self.apps.contains_key(&app_id) => self.delete_app(&app_id, now).map(Some),
            (None, _) => Ok(None),
            (Some(previous), Some(previous_config)) => {
                let mut def = previous;
                let version = self.fresh_version(&app_id, now);
                let existed = self.apps.contains_key(&app_id);
                self.store_version(&app_id, def.clone(), &version, true, now);
                // Tasks of the previous config count as current again, so they are kept.
                if let Some(app) = self.apps.get_mut(&app_id) {
                    app.config_version = previous_config;
                }
                def.version = Some(version.clone());
                let action =
                    if existed { DeploymentAction::RestartApplication } else { DeploymentAction::StartApplication };
                let d = self.new_deployment(&app_id, &version, vec![vec![action]], None, now);
                Ok(Some((d, version)))
            }
            (Some(_), None) => Ok(None),
        }
    }

    /// `DELETE /v2/queue/{id}/delay`.
    pub fn reset_delay(&mut self, id: &AppId) -> Result<(), CoreError> {
        let app = self.apps.get_mut(id).ok_or_else(|| CoreError::AppNotFound(id.clone()))?;
        app.backoff = Backoff::default();
        self.changes.apps.insert(id.clone());
        self.needs_supervision.insert(id.clone());
        Ok(())
    }

    /// `node drain`: no new tasks on the agent.
    pub fn set_draining(&mut self, agent: &AgentId, draining: bool) -> Result<(), CoreError> {
        let state = self.agents.get_mut(agent).ok_or_else(|| CoreError::UnknownAgent(agent.clone()))?;
        state.record.draining = draining;
        self.changes.agents.insert(agent.clone());
        let apps: Vec<AppId> = self
            .tasks_by_agent
            .get(agent)
            .into_iter()
            .flatten()
            .filter_map(|t| self.tasks.get(t).map(|t| t.app_id.clone()))
            .collect();
        self.needs_supervision.extend(apps);
        Ok(())
    }
}

/// Whether two definitions differ only in `instances` (and version metadata).
pub(crate) fn same_config(a: &AppDefinition, b: &AppDefinition) -> bool {
    let strip = |d: &AppDefinition| {
        let mut d = d.clone();
        d.instances = 0;
        d.version = None;
        d.version_info = None;
        d
    };
    strip(a) == strip(b)
}
