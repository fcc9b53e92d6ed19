//! The core's state and operations.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde_json::{json, Value};

use plinth_protocol::agent::{DesiredState, Registration, StatusUpdate, SyncRequest, SyncResponse, TaskSpec};
use plinth_protocol::marathon::{NetworkMode, UnreachableStrategy, VersionInfo};
use plinth_protocol::{
    AgentId, AppDefinition, AppId, DeploymentId, PortRanges, Resources, TaskId, TaskState, Timestamp,
};

use super::constraints::{self, Spread};

use super::model::*;

/// Where the core's ids (tasks, deployments, agents) come from: random in production
/// (the shell's generator), a counter in tests. The core never makes entropy itself.
pub type IdSource = Box<dyn FnMut() -> uuid::Uuid + Send + Sync>;

/// Tunables of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// An agent silent this long is lost and its tasks are replaced.
    pub agent_timeout_ms: i64,
    /// How often agents should sync (told to them at registration).
    pub heartbeat_interval_ms: u64,
    /// Cluster-wide service ports for `port: 0` / `servicePort: 0`.
    pub service_ports: (u16, u16),
    /// Launches per tick at most (Marathon's launch tokens): bounds the work, the
    /// events and the store transaction of one round.
    pub max_launches_per_tick: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            agent_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            service_ports: (10_000, 20_000),
            max_launches_per_tick: 10_000,
        }
    }
}

/// Errors of core operations; the API maps them to HTTP in one place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    #[error("An app with id [{0}] already exists.")]
    AppExists(AppId),
    #[error("App '{0}' does not exist")]
    AppNotFound(AppId),
    #[error("Task '{0}' does not exist")]
    TaskNotFound(TaskId),
    #[error("DeploymentPlan {0} does not exist")]
    DeploymentNotFound(DeploymentId),
    #[error("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.")]
    AppLocked { app: AppId, deployments: Vec<DeploymentId> },
    #[error("Agent '{0}' is not registered")]
    UnknownAgent(AgentId),
    #[error("No service port left in {0}-{1}")]
    ServicePortsExhausted(u16, u16),
    #[error("Version '{version}' of app '{app}' does not exist")]
    VersionNotFound { app: AppId, version: String },
    #[error("invalid app definition: {0}")]
    InvalidApp(String),
}

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

/// The scheduler core.
pub struct Core {
    config: CoreConfig,
    next_uuid: IdSource,
    apps: BTreeMap<AppId, AppRecord>,
    versions: BTreeMap<AppId, BTreeMap<String, AppDefinition>>,
    tasks: HashMap<TaskId, TaskRecord>,
    tasks_by_app: HashMap<AppId, HashSet<TaskId>>,
    tasks_by_agent: HashMap<AgentId, HashSet<TaskId>>,
    agents: BTreeMap<AgentId, AgentState>,
    deployments: BTreeMap<DeploymentId, DeploymentRecord>,
    offer_stats: HashMap<AppId, (Timestamp, OfferStats)>,
    processed_updates: HashSet<uuid::Uuid>,
    processed_order: VecDeque<uuid::Uuid>,
    /// Rotates across agents between placements so tasks spread over the pool.
    offer_cursor: usize,
    /// Apps whose tasks or definition changed since they were last supervised; a tick
    /// looks only at these, queued apps and deploying apps, so idle apps cost nothing.
    needs_supervision: HashSet<AppId>,
    /// Tasks kept as `TASK_UNREACHABLE` on lost agents (see `unreachableStrategy`).
    unreachable: HashSet<TaskId>,
    changes: Changes,
}

/// How many status update ids are remembered for de-duplication.
const REMEMBERED_UPDATES: usize = 100_000;

/// An agent plus what the core derives about it (not persisted).
#[derive(Debug, Clone)]
pub struct AgentState {
    pub record: AgentRecord,
    /// Resources used by its non-terminal tasks.
    pub used: plinth_protocol::Resources,
    /// Ports not taken by its non-terminal tasks.
    pub free_ports: PortRanges,
    /// Synced since this master process started (else it must re-register).
    pub seen_since_start: bool,
}

impl AgentState {
    fn new(record: AgentRecord) -> Self {
        let free_ports = record.resources.ports.clone();
        AgentState { record, used: Resources::default(), free_ports, seen_since_start: false }
    }

    /// Free scalar resources plus free ports: what an offer from this agent holds.
    pub fn free(&self) -> Resources {
        let mut free = self.record.resources.clone();
        free.subtract_scalars(&self.used);
        free.ports = self.free_ports.clone();
        free
    }

    fn take(&mut self, resources: &Resources) {
        self.used.add_scalars(resources);
        for port in resources.ports.ranges().iter().flat_map(|(b, e)| *b..=*e) {
            self.free_ports.remove(port);
        }
    }

    fn give_back(&mut self, resources: &Resources) {
        self.used.subtract_scalars(resources);
        for port in resources.ports.ranges().iter().flat_map(|(b, e)| *b..=*e) {
            if self.record.resources.ports.contains(port) {
                self.free_ports.insert(port);
            }
        }
    }
}

impl Core {
    /// An empty core. `next_uuid` supplies task/deployment ids (random in production,
    /// a counter in tests).
    pub fn new(config: CoreConfig, next_uuid: IdSource) -> Self {
        Core {
            config,
            next_uuid,
            apps: BTreeMap::new(),
            versions: BTreeMap::new(),
            tasks: HashMap::new(),
            tasks_by_app: HashMap::new(),
            tasks_by_agent: HashMap::new(),
            agents: BTreeMap::new(),
            deployments: BTreeMap::new(),
            offer_stats: HashMap::new(),
            processed_updates: HashSet::new(),
            processed_order: VecDeque::new(),
            offer_cursor: 0,
            needs_supervision: HashSet::new(),
            unreachable: HashSet::new(),
            changes: Changes::default(),
        }
    }

    /// Rebuilds the core from the store after a restart. Agents get a fresh timeout
    /// window (`now`) to come back before they are declared lost.
    pub fn restore(config: CoreConfig, next_uuid: IdSource, snapshot: Snapshot, now: Timestamp) -> Self {
        let mut core = Core::new(config, next_uuid);
        for mut agent in snapshot.agents {
            agent.last_seen = now;
            core.agents.insert(agent.id.clone(), AgentState::new(agent));
        }
        for app in snapshot.apps {
            core.needs_supervision.insert(app.id.clone());
            core.apps.insert(app.id.clone(), app);
        }
        for (app, version, def) in snapshot.app_versions {
            core.versions.entry(app).or_default().insert(version, def);
        }
        for task in snapshot.tasks {
            if task.unreachable_since.is_some() {
                core.unreachable.insert(task.id.clone());
            }
            core.index_task(task);
        }
        for deployment in snapshot.deployments {
            core.deployments.insert(deployment.id.clone(), deployment);
        }
        core
    }

    fn uuid(&mut self) -> uuid::Uuid {
        (self.next_uuid)()
    }

    /// Adds a task to the indexes and charges its agent.
    fn index_task(&mut self, task: TaskRecord) {
        self.tasks_by_app.entry(task.app_id.clone()).or_default().insert(task.id.clone());
        self.tasks_by_agent.entry(task.agent_id.clone()).or_default().insert(task.id.clone());
        if let Some(agent) = self.agents.get_mut(&task.agent_id) {
            agent.take(&task.resources);
        }
        self.tasks.insert(task.id.clone(), task);
    }

    /// Removes a terminal task and gives its resources back.
    fn remove_task(&mut self, id: &TaskId) -> Option<TaskRecord> {
        let task = self.tasks.remove(id)?;
        self.unreachable.remove(id);
        self.needs_supervision.insert(task.app_id.clone());
        if let Some(set) = self.tasks_by_app.get_mut(&task.app_id) {
            set.remove(id);
            if set.is_empty() {
                self.tasks_by_app.remove(&task.app_id);
            }
        }
        if let Some(set) = self.tasks_by_agent.get_mut(&task.agent_id) {
            set.remove(id);
        }
        if let Some(agent) = self.agents.get_mut(&task.agent_id) {
            agent.give_back(&task.resources);
        }
        self.changes.tasks.insert(id.clone());
        Some(task)
    }

    /// The agent's desired set changed: new generation, wake its long-poll.
    fn bump_generation(&mut self, agent: &AgentId) {
        if let Some(state) = self.agents.get_mut(agent) {
            state.record.generation += 1;
            self.changes.agents.insert(agent.clone());
            self.changes.notify_agents.insert(agent.clone());
        }
    }

    fn emit(&mut self, event_type: &str, now: Timestamp, payload: Value) {
        self.changes.events.push(Event::new(event_type, now, payload));
    }

    /// A version string (ISO time) not yet used by this app.
    fn fresh_version(&self, id: &AppId, now: Timestamp) -> String {
        let mut t = now;
        let taken = |v: &str| self.versions.get(id).is_some_and(|m| m.contains_key(v));
        while taken(&t.to_iso()) || self.apps.get(id).is_some_and(|a| a.version == t.to_iso()) {
            t = t.plus_millis(1);
        }
        t.to_iso()
    }

    /// Service ports used by every app except `except`.
    fn used_service_ports(&self, except: &AppId) -> HashSet<u16> {
        self.apps
            .values()
            .filter(|a| &a.id != except)
            .flat_map(|a| service_ports_of(&a.definition))
            .filter(|p| *p > 0)
            .collect()
    }

    /// Gives `port: 0` / `servicePort: 0` a cluster-unique service port, keeping the
    /// ones the previous definition had at the same index.
    fn assign_service_ports(&self, def: &mut AppDefinition, previous: Option<&AppDefinition>) -> Result<(), CoreError> {
        let id = AppId::parse(&def.id).map_err(|e| CoreError::InvalidApp(e.to_string()))?;
        let mut used = self.used_service_ports(&id);
        let old: Vec<u16> = previous.map(service_ports_of).unwrap_or_default();
        let (low, high) = self.config.service_ports;
        let next_free = |index: usize, used: &mut HashSet<u16>| -> Result<u16, CoreError> {
            if let Some(p) = old.get(index).copied().filter(|p| *p > 0 && !used.contains(p)) {
                used.insert(p);
                return Ok(p);
            }
            let port = (low..=high).find(|p| !used.contains(p)).ok_or(CoreError::ServicePortsExhausted(low, high))?;
            used.insert(port);
            Ok(port)
        };
        let uses_mappings =
            def.network_mode() == NetworkMode::Bridge || def.port_definitions.as_ref().is_none_or(Vec::is_empty);
        if uses_mappings {
            if let Some(container) = def.container.as_mut() {
                let mappings = match container.port_mappings.as_mut() {
                    Some(m) => Some(m),
                    None => container.docker.as_mut().and_then(|d| d.port_mappings.as_mut()),
                };
                for (i, m) in mappings.into_iter().flatten().enumerate() {
                    if m.service_port == 0 {
                        m.service_port = i64::from(next_free(i, &mut used)?);
                    } else {
                        used.insert(port_u16(m.service_port, "servicePort")?);
                    }
                }
            }
        }
        for (i, d) in def.port_definitions.iter_mut().flatten().enumerate() {
            if d.port == 0 {
                d.port = i64::from(next_free(i, &mut used)?);
            } else {
                used.insert(port_u16(d.port, "port")?);
            }
        }
        Ok(())
    }

    fn new_deployment(
        &mut self,
        app_id: &AppId,
        version: &str,
        steps: Vec<Vec<DeploymentAction>>,
        previous: Option<(AppDefinition, String)>,
        now: Timestamp,
    ) -> DeploymentId {
        let id = DeploymentId::new(self.uuid().to_string());
        let (previous, previous_config_version) = match previous {
            Some((def, v)) => (Some(def), Some(v)),
            None => (None, None),
        };
        let deployment = DeploymentRecord {
            id: id.clone(),
            version: version.to_string(),
            app_id: app_id.clone(),
            steps,
            current_step: 1,
            started_at: now,
            previous,
            previous_config_version,
            blocked_reason: None,
        };
        let json = deployment.to_marathon_json();
        self.emit("deployment_info", now, json!({"plan": json, "currentStep": json["steps"][0]}));
        self.deployments.insert(id.clone(), deployment);
        self.changes.deployments.insert(id.clone());
        self.needs_supervision.insert(app_id.clone());
        id
    }

    /// Ends deployments of an app that a newer command supersedes.
    fn supersede_deployments(&mut self, app: &AppId, reason: &str, now: Timestamp) {
        let ids: Vec<DeploymentId> =
            self.deployments.values().filter(|d| &d.app_id == app).map(|d| d.id.clone()).collect();
        for id in ids {
            if let Some(d) = self.deployments.remove(&id) {
                self.changes.deployments.insert(id.clone());
                self.emit_deployment_failed(&d, reason, now);
            }
        }
    }

    /// Marathon's pair of events for a deployment that ends without success.
    fn emit_deployment_failed(&mut self, d: &DeploymentRecord, reason: &str, now: Timestamp) {
        let plan = d.to_marathon_json();
        let step = plan["steps"][d.current_step.saturating_sub(1)].clone();
        self.emit("deployment_step_failure", now, json!({"plan": plan, "currentStep": step, "reason": reason}));
        self.emit("deployment_failed", now, json!({"id": d.id, "plan": plan, "reason": reason}));
    }

    fn check_lock(&self, app: &AppId, force: bool) -> Result<(), CoreError> {
        let deployments: Vec<DeploymentId> =
            self.deployments.values().filter(|d| &d.app_id == app).map(|d| d.id.clone()).collect();
        if deployments.is_empty() || force {
            Ok(())
        } else {
            Err(CoreError::AppLocked { app: app.clone(), deployments })
        }
    }

    /// Stores a new current definition and version of an app.
    fn store_version(
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

    // ---- API commands. `def` has been parsed, validated and normalised by the caller.

    /// `POST /v2/apps`: 409 if it exists. Returns the stored app and its deployment.
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
        let previous = Some((current.definition.clone(), current.config_version.clone()));
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
            self.request_kill(&task_id, "app deleted");
        }
        self.apps.remove(id);
        self.changes.apps.insert(id.clone());
        self.offer_stats.remove(id);
        let version = self.fresh_version(id, now);
        if let Some(versions) = self.versions.remove(id) {
            // Version records go with the app; the store deletes what the core no longer has.
            for v in versions.into_keys() {
                self.changes.app_versions.push((id.clone(), v));
            }
        }
        let previous = Some((app.definition.clone(), app.config_version.clone()));
        let deployment =
            self.new_deployment(id, &version, vec![vec![DeploymentAction::StopApplication]], previous, now);
        self.emit("app_terminated_event", now, json!({"appId": id}));
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
        self.store_version(id, current.definition.clone(), &version, true, now);
        let previous = Some((current.definition.clone(), current.config_version.clone()));
        let deployment =
            self.new_deployment(id, &version, vec![vec![DeploymentAction::RestartApplication]], previous, now);
        Ok((deployment, version))
    }

    /// Marks a task for killing; the agent gets it with `kill: true`.
    fn request_kill(&mut self, id: &TaskId, reason: &str) {
        let Some(task) = self.tasks.get_mut(id) else { return };
        if task.kill_requested || task.state.is_terminal() {
            return;
        }
        task.kill_requested = true;
        task.kill_reason = Some(reason.to_string());
        let agent = task.agent_id.clone();
        self.needs_supervision.insert(task.app_id.clone());
        self.changes.tasks.insert(id.clone());
        self.bump_generation(&agent);
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
        let killed: Vec<TaskRecord> = selected.iter().filter_map(|id| self.tasks.get(id).cloned()).collect();
        for id in &selected {
            self.request_kill(id, if scale { "killed and scaled via API" } else { "killed via API" });
        }
        let mut deployment = None;
        if scale {
            for (app_id, count) in per_app {
                let Some(app) = self.apps.get(&app_id).cloned() else { continue };
                let mut def = app.definition.clone();
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

    // ---- agent protocol

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
    pub fn sync_agent(&mut self, request: &SyncRequest, now: Timestamp) -> SyncResponse {
        let Some(agent) = self.agents.get_mut(&request.agent_id) else {
            return SyncResponse { desired: None, reregister: true };
        };
        if !agent.seen_since_start || !agent.record.active {
            return SyncResponse { desired: None, reregister: true };
        }
        agent.record.last_seen = now;
        if request.generation > agent.record.generation {
            // The agent is ahead (e.g. the store lost a bump): continue above it.
            agent.record.generation = request.generation + 1;
            self.changes.agents.insert(request.agent_id.clone());
        }
        let generation = agent.record.generation;
        let desired = (generation > request.generation).then(|| self.desired_state(&request.agent_id)).flatten();
        SyncResponse { desired, reregister: false }
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
                let app = self.version_definition(&t.app_id, &t.version)?;
                Some(TaskSpec {
                    task_id: t.id.clone(),
                    app_id: t.app_id.clone(),
                    version: t.version.clone(),
                    app: app.clone(),
                    host_ports: t.ports.clone(),
                    kill: t.kill_requested,
                })
            })
            .collect();
        tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Some(DesiredState { generation: state.record.generation, tasks })
    }

    /// The definition a task runs: its version's, else the app's current one.
    fn version_definition(&self, app: &AppId, version: &str) -> Option<&AppDefinition> {
        self.versions.get(app).and_then(|v| v.get(version)).or_else(|| self.apps.get(app).map(|a| &a.definition))
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
            let health_event = health_changed.then(|| {
                json!({"appId": task.app_id, "taskId": task.id, "instanceId": task.id, "version": task.version, "alive": task.healthy == Some(true)})
            });
            let event = status_event(task);
            self.needs_supervision.insert(update.app_id.clone());
            self.changes.tasks.insert(update.task_id.clone());
            self.emit("status_update_event", now, event);
            if let Some(payload) = health_event {
                self.emit("health_status_changed_event", now, payload);
            }
            self.judge_health(&update.task_id, &previous_failures, &current_failures, now);
        }
        acked
    }

    /// Kills a task whose health checks failed `maxConsecutiveFailures` times in a row
    /// (0 = never), emitting Marathon's `failed_health_check_event` for each new failure
    /// and `unhealthy_task_kill_event` for the kill.
    fn judge_health(&mut self, task_id: &TaskId, before: &[(u64, String)], after: &[(u64, String)], now: Timestamp) {
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
                    "failed_health_check_event",
                    now,
                    json!({"appId": app_id, "taskId": task_id, "instanceId": task_id, "version": version,
                           "healthCheck": check, "consecutiveFailures": failures, "cause": cause}),
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
                self.request_kill(task_id, "unhealthy");
                self.emit(
                    "unhealthy_task_kill_event",
                    now,
                    json!({"appId": app_id, "taskId": task_id, "instanceId": task_id, "version": version,
                           "reason": reason, "host": host, "slaveId": agent}),
                );
            }
        }
    }

    /// Remembers an update id; false when it was already applied.
    fn remember_update(&mut self, id: uuid::Uuid) -> bool {
        if !self.processed_updates.insert(id) {
            return false;
        }
        self.processed_order.push_back(id);
        if self.processed_order.len() > REMEMBERED_UPDATES {
            if let Some(old) = self.processed_order.pop_front() {
                self.processed_updates.remove(&old);
            }
        }
        true
    }

    fn emit_status(&mut self, task: &TaskRecord, now: Timestamp) {
        let payload = status_event(task);
        self.emit("status_update_event", now, payload);
    }

    /// A task reached a terminal state: report it, apply backoff when it was not
    /// asked to stop, and drop it (its resources return to the agent).
    fn finish_task(&mut self, id: &TaskId, state: TaskState, message: Option<String>, now: Timestamp) {
        let Some(mut task) = self.remove_task(id) else { return };
        task.state = state;
        task.updated_at = now;
        if message.is_some() {
            task.message = message;
        }
        self.emit_status(&task, now);
        if task.kill_requested {
            return;
        }
        if let Some(app) = self.apps.get_mut(&task.app_id) {
            let def = &app.definition;
            app.backoff.failures += 1;
            // why: at most 64.
            #[allow(clippy::cast_possible_wrap)]
            let exponent = app.backoff.failures.saturating_sub(1).min(64) as i32;
            let delay = (def.backoff_seconds * def.backoff_factor.powi(exponent)).min(def.max_launch_delay_seconds);
            // why: float-to-int `as` saturates (NaN is 0); the delay is validated non-negative.
            #[allow(clippy::cast_possible_truncation)]
            let delay_ms = (delay * 1000.0) as i64;
            app.backoff.not_before = now.plus_millis(delay_ms);
            app.last_task_failure = Some(json!({
                "appId": task.app_id, "host": task.host, "message": task.message.clone().unwrap_or_default(),
                "state": state, "taskId": task.id, "timestamp": now.to_iso(), "version": task.version,
                "slaveId": task.agent_id,
            }));
            self.changes.apps.insert(task.app_id.clone());
        }
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

    /// A draining agent with no task left (what `plinth node drain` waits for).
    pub fn is_drained(&self, agent: &AgentId) -> bool {
        self.agents.get(agent).is_some_and(|a| a.record.draining)
            && self.tasks_by_agent.get(agent).is_none_or(|tasks| tasks.is_empty())
    }

    // ---- time

    /// One scheduling round: lost agents, supervision (launch via offers, kill
    /// surplus), deployment progress.
    pub fn tick(&mut self, now: Timestamp) {
        self.detect_lost_agents(now);
        self.expunge_unreachable(now);
        let mut todo: BTreeSet<AppId> = std::mem::take(&mut self.needs_supervision).into_iter().collect();
        todo.extend(self.offer_stats.keys().cloned());
        let mut offers = OfferRound::new(self);
        let mut budget = self.config.max_launches_per_tick;
        let mut looked_at = HashSet::with_capacity(todo.len());
        for app_id in todo {
            if budget == 0 {
                // Out of launch tokens this round: look again next tick.
                self.needs_supervision.insert(app_id);
                continue;
            }
            self.supervise(&app_id, &mut offers, &mut budget, now);
            looked_at.insert(app_id);
        }
        // A deployment can only have moved if its app was looked at.
        self.progress_deployments(&looked_at, now);
    }

    fn detect_lost_agents(&mut self, now: Timestamp) {
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
            self.emit("agent_lost_event", now, json!({"agentId": agent}));
        }
    }

    /// Expunges unreachable tasks past `expungeAfterSeconds` (as `TASK_LOST`).
    fn expunge_unreachable(&mut self, now: Timestamp) {
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

    /// The first of an app's `dependencies` that is not settled: short of its instances
    /// of ready tasks, or in a deployment. Unknown dependencies do not hold anything back.
    fn unsettled_dependency(&self, app_id: &AppId) -> Option<AppId> {
        let app = self.apps.get(app_id)?;
        app.definition.dependencies.iter().filter_map(|d| AppId::parse(d).ok()).find(|dep| {
            dep != app_id
                && self.apps.contains_key(dep)
                && (!self.app_converged(dep) || self.deployments.values().any(|d| &d.app_id == dep))
        })
    }

    /// An unreachable task past `inactiveAfterSeconds` no longer counts: it is replaced.
    fn is_inactive(&self, task: &TaskRecord, strategy: &UnreachableStrategy, now: Timestamp) -> bool {
        match (strategy, task.unreachable_since) {
            (UnreachableStrategy::Enabled { inactive_after_seconds, .. }, Some(since)) => {
                now.seconds_since(since) >= *inactive_after_seconds
            }
            _ => false,
        }
    }

    /// Decides launches and kills for one app.
    fn supervise(&mut self, app_id: &AppId, offers: &mut OfferRound, budget: &mut usize, now: Timestamp) {
        let Some(app) = self.apps.get(app_id) else { return };
        let target = instance_count(&app.definition);
        let config_version = app.config_version.clone();
        let has_checks = Readiness::of(&app.definition);
        let strategy = app.definition.upgrade_strategy.clone();
        let oldest_first = app.definition.kill_selection == "OLDEST_FIRST";
        let unreachable_strategy = app.definition.unreachable_strategy.clone();
        let all: Vec<&TaskRecord> =
            self.app_tasks(app_id).into_iter().filter(|t| !self.is_inactive(t, &unreachable_strategy, now)).collect();
        let total = all.len();
        let any_unreachable = all.iter().any(|t| t.unreachable_since.is_some());
        // Tasks on a draining agent are replaced like tasks of an old version: within the
        // upgrade strategy, replacements ready before they stop.
        let draining = |t: &TaskRecord| self.agents.get(&t.agent_id).is_some_and(|a| a.record.draining);
        let current = |t: &TaskRecord| t.version == config_version && !draining(t);
        let mut new: Vec<&TaskRecord> = all.iter().copied().filter(|t| !t.kill_requested && current(t)).collect();
        let old: Vec<&TaskRecord> = all.iter().copied().filter(|t| !t.kill_requested && !current(t)).collect();
        let mut kills: Vec<(TaskId, &'static str)> = Vec::new();
        let launches;
        if old.is_empty() {
            if new.len() > target {
                // Scale down: not-yet-running tasks first, then by killSelection.
                new.sort_by(|a, b| {
                    a.is_running().cmp(&b.is_running()).then_with(|| {
                        if oldest_first {
                            a.staged_at.cmp(&b.staged_at)
                        } else {
                            b.staged_at.cmp(&a.staged_at)
                        }
                    })
                });
                for t in new.iter().take(new.len() - target) {
                    kills.push((t.id.clone(), "scaling down"));
                }
            }
            launches = target.saturating_sub(new.len());
        } else {
            // Rolling replacement within upgradeStrategy.
            // why: float-to-int `as` saturates (NaN is 0); both capacities are validated in 0..=1.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let max_total = ((target as f64) * (1.0 + strategy.maximum_over_capacity)).floor() as usize;
            let max_total = max_total.max(target);
            // why: as above.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let min_ready = ((target as f64) * strategy.minimum_health_capacity).ceil() as usize;
            let ready_new = new.iter().filter(|t| t.is_ready(has_checks)).count();
            let ready_old = old.iter().filter(|t| t.is_ready(has_checks)).count();
            let want_new = target.saturating_sub(new.len());
            let mut launch = want_new.min(max_total.saturating_sub(total));
            let mut killable = (ready_new + ready_old).saturating_sub(min_ready);
            // Old tasks that serve nothing can go at once.
            for t in old.iter().filter(|t| !t.is_ready(has_checks)) {
                kills.push((t.id.clone(), "replaced by a new version"));
            }
            let mut ready_old_sorted: Vec<&&TaskRecord> = old.iter().filter(|t| t.is_ready(has_checks)).collect();
            ready_old_sorted.sort_by_key(|t| t.staged_at);
            // Never leave more old tasks than the new version still lacks.
            let excess_old = (ready_old + new.len()).saturating_sub(target);
            for (killed_ready, t) in ready_old_sorted.iter().enumerate() {
                if killable == 0 || killed_ready >= excess_old.max(if new.len() >= target { ready_old } else { 0 }) {
                    break;
                }
                kills.push((t.id.clone(), "replaced by a new version"));
                killable -= 1;
            }
            let transitional = all.iter().any(|t| t.kill_requested || !t.is_ready(has_checks));
            if launch == 0 && kills.is_empty() && !transitional && !ready_old_sorted.is_empty() {
                // maximumOverCapacity 0 with minimumHealthCapacity 1 would never move: make room for one.
                kills.push((ready_old_sorted[0].id.clone(), "replaced by a new version"));
                launch = 0;
            }
            launches = launch;
        }
        for (id, reason) in kills {
            self.request_kill(&id, reason);
        }
        if launches == 0 {
            self.offer_stats.remove(app_id);
            if any_unreachable {
                // Look again when inactiveAfterSeconds passes.
                self.needs_supervision.insert(app_id.clone());
            }
            return;
        }
        let backoff_until = self.apps.get(app_id).map_or(Timestamp(0), |a| a.backoff.not_before);
        let since = self.offer_stats.get(app_id).map_or(now, |(s, _)| *s);
        let mut stats = self.offer_stats.remove(app_id).map(|(_, s)| s).unwrap_or_default();
        if let Some(dependency) = self.unsettled_dependency(app_id) {
            // Dependencies order start and upgrade: launch only once they serve.
            stats.last_round.clear();
            stats.last_round.insert(
                "Dependency".into(),
                (0, format!("waiting for dependency {dependency} to be running and healthy")),
            );
            self.offer_stats.insert(app_id.clone(), (since, stats));
            return;
        }
        if now < backoff_until {
            stats.last_round.clear();
            stats.last_round.insert(
                "Backoff".into(),
                (
                    0,
                    format!(
                        "launch delayed by backoff for {:.1}s after task failures",
                        backoff_until.seconds_since(now)
                    ),
                ),
            );
            self.offer_stats.insert(app_id.clone(), (since, stats));
            return;
        }
        let wanted = launches.min(*budget);
        let placed = self.place(app_id, wanted, offers, &mut stats, now);
        *budget -= placed;
        if placed < wanted {
            self.offer_stats.insert(app_id.clone(), (since, stats));
        } else if placed < launches {
            self.needs_supervision.insert(app_id.clone());
        }
    }

    /// Offers the pool to an app for `count` launches; records declines in `stats`.
    fn place(
        &mut self,
        app_id: &AppId,
        count: usize,
        offers: &mut OfferRound,
        stats: &mut OfferStats,
        now: Timestamp,
    ) -> usize {
        let Some(app) = self.apps.get(app_id) else { return 0 };
        let def = app.definition.clone();
        let config_version = app.config_version.clone();
        let need = Resources::scalars(def.cpus, def.mem, def.disk);
        // The API refuses ports out of range; an app that still has one is never placed.
        let Some(port_requests) = port_requests(&def) else { return 0 };
        let parsed_constraints = def.parsed_constraints();
        let mut spreads: Vec<Spread> = parsed_constraints.iter().map(|c| self.spread(app_id, &c.field)).collect();
        stats.last_round.clear();
        stats.last_round_processed = 0;
        let mut placed = 0;
        let agent_count = offers.agents.len();
        let mut tried_without_success = 0;
        while placed < count && tried_without_success < agent_count {
            let index = self.offer_cursor % agent_count;
            self.offer_cursor = self.offer_cursor.wrapping_add(1);
            let agent_id = offers.agents[index].clone();
            let Some(agent) = self.agents.get(&agent_id) else {
                tried_without_success += 1;
                continue;
            };
            stats.processed += 1;
            stats.last_round_processed += 1;
            let decision = match_offer(agent, &need, &port_requests, &parsed_constraints, &spreads);
            match decision {
                Err((code, message)) => {
                    stats.unused += 1;
                    stats.last_unused_at = Some(now);
                    let entry = stats.last_round.entry(code.to_string()).or_insert((0, message));
                    entry.0 += 1;
                    tried_without_success += 1;
                }
                Ok(ports) => {
                    let host = agent.record.advertise_ip.clone();
                    for (spread, c) in spreads.iter_mut().zip(&parsed_constraints) {
                        if let Some(v) =
                            constraints::field_value(&c.field, &agent.record.hostname, &agent.record.attributes)
                        {
                            *spread.counts.entry(v.to_string()).or_default() += 1;
                        }
                    }
                    let uuid = self.uuid();
                    let task = TaskRecord {
                        id: TaskId::generate(app_id, uuid),
                        app_id: app_id.clone(),
                        version: config_version.clone(),
                        agent_id: agent_id.clone(),
                        host,
                        ports: ports.clone(),
                        resources: Resources { ports: PortRanges::new(ports.iter().map(|p| (*p, *p))), ..need.clone() },
                        state: TaskState::TaskStaging,
                        staged_at: now,
                        started_at: None,
                        updated_at: now,
                        kill_requested: false,
                        kill_reason: None,
                        healthy: None,
                        message: None,
                        health: None,
                        ip_addresses: Vec::new(),
                        ready: None,
                        unreachable_since: None,
                    };
                    tracing::debug!(app_id = %app_id, task_id = %task.id, node_id = %agent_id, "launching task");
                    self.changes.tasks.insert(task.id.clone());
                    self.emit_status(&task, now);
                    self.index_task(task);
                    self.bump_generation(&agent_id);
                    stats.last_used_at = Some(now);
                    placed += 1;
                    tried_without_success = 0;
                }
            }
        }
        placed
    }

    /// How an app's live tasks spread over a constraint field.
    fn spread(&self, app_id: &AppId, field: &str) -> Spread {
        let mut spread = Spread::default();
        for agent in self.agents.values().filter(|a| a.record.active) {
            if let Some(v) = constraints::field_value(field, &agent.record.hostname, &agent.record.attributes) {
                spread.all_values.insert(v.to_string());
            }
        }
        for task in self.app_tasks(app_id).into_iter().filter(|t| !t.kill_requested) {
            if let Some(agent) = self.agents.get(&task.agent_id) {
                if let Some(v) = constraints::field_value(field, &agent.record.hostname, &agent.record.attributes) {
                    *spread.counts.entry(v.to_string()).or_default() += 1;
                }
            }
        }
        spread
    }

    fn progress_deployments(&mut self, apps: &HashSet<AppId>, now: Timestamp) {
        let ids: Vec<DeploymentId> =
            self.deployments.values().filter(|d| apps.contains(&d.app_id)).map(|d| d.id.clone()).collect();
        for id in ids {
            // Finished steps cascade within one tick.
            while let Some(d) = self.deployments.get(&id).cloned() {
                let done = match d.current_actions().first() {
                    // Marathon's start step creates the app with no tasks: done at once.
                    Some(DeploymentAction::StartApplication) => true,
                    Some(DeploymentAction::StopApplication) => {
                        self.tasks_by_app.get(&d.app_id).is_none_or(HashSet::is_empty)
                    }
                    Some(_) => self.app_converged(&d.app_id),
                    None => true,
                };
                if done && d.current_step < d.steps.len() {
                    let d = self.deployments.get_mut(&id).expect("present above");
                    d.current_step += 1;
                    let json = d.to_marathon_json();
                    self.changes.deployments.insert(id.clone());
                    // The step that just completed is the one before the new current step.
                    let step = json["steps"][d.current_step.saturating_sub(2)].clone();
                    self.emit("deployment_step_success", now, json!({"plan": json, "currentStep": step}));
                    continue;
                }
                if done {
                    self.deployments.remove(&id);
                    self.changes.deployments.insert(id.clone());
                    self.emit("deployment_success", now, json!({"id": id, "plan": d.to_marathon_json()}));
                    break;
                }
                let blocked = self
                    .offer_stats
                    .get(&d.app_id)
                    .map(|(_, s)| summarize_declines(s))
                    .or_else(|| self.readiness_gap(&d.app_id));
                if blocked != d.blocked_reason {
                    if let Some(d) = self.deployments.get_mut(&id) {
                        d.blocked_reason = blocked;
                    }
                    self.changes.deployments.insert(id.clone());
                }
                break;
            }
        }
    }

    /// Why launched tasks of the current version do not count yet (not running, not
    /// healthy, not ready), e.g. `waiting for 2 of 4 new tasks to become healthy (last
    /// failure: HTTP 500)`.
    fn readiness_gap(&self, app_id: &AppId) -> Option<String> {
        let app = self.apps.get(app_id)?;
        let needs = Readiness::of(&app.definition);
        let target = instance_count(&app.definition);
        let new: Vec<&TaskRecord> = self
            .app_tasks(app_id)
            .into_iter()
            .filter(|t| !t.kill_requested && t.version == app.config_version)
            .collect();
        if new.is_empty() {
            return None;
        }
        let ready = new.iter().filter(|t| t.is_ready(needs)).count();
        if ready >= target {
            return None;
        }
        let running = new.iter().filter(|t| t.is_running()).count();
        if running < new.len() {
            return Some(format!(
                "waiting for {} of {target} new tasks to start running",
                target - running.min(target)
            ));
        }
        let what = if needs.health_checks { "healthy" } else { "ready" };
        let cause = new
            .iter()
            .filter_map(|t| t.health.as_ref())
            .flat_map(|h| failures_per_check(Some(h)))
            .map(|(_, cause)| cause)
            .find(|c| !c.is_empty());
        let mut text = format!("waiting for {} of {target} new tasks to become {what}", target - ready);
        if let Some(cause) = cause {
            text.push_str(&format!(" (last failure: {cause})"));
        }
        Some(text)
    }

    /// All of the app's tasks run its current config, are ready, and number `instances`.
    fn app_converged(&self, app_id: &AppId) -> bool {
        let Some(app) = self.apps.get(app_id) else { return true };
        let needs = Readiness::of(&app.definition);
        let mut count = 0;
        for task in self.tasks_by_app.get(app_id).into_iter().flatten().filter_map(|t| self.tasks.get(t)) {
            if task.state.is_terminal() {
                continue;
            }
            if task.version != app.config_version || !task.is_ready(needs) {
                return false;
            }
            count += 1;
        }
        count == instance_count(&app.definition)
    }

    /// Drains what changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    // ---- queries

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
            .filter_map(|t| self.tasks.get(t))
            .filter(|t| !t.state.is_terminal())
            .collect();
        tasks.sort_by(|a, b| a.staged_at.cmp(&b.staged_at).then_with(|| a.id.cmp(&b.id)));
        tasks
    }
    pub fn tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.values()
    }
    pub fn task(&self, id: &TaskId) -> Option<&TaskRecord> {
        self.tasks.get(id)
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
        self.versions.get(id).and_then(|v| v.get(version))
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
}

/// Whether tasks of a lost agent are kept as unreachable rather than lost at once.
fn keeps_unreachable(strategy: &UnreachableStrategy) -> bool {
    match strategy {
        UnreachableStrategy::Enabled { inactive_after_seconds, expunge_after_seconds } => {
            *inactive_after_seconds > 0.0 || *expunge_after_seconds > 0.0
        }
        UnreachableStrategy::Disabled(_) => true,
    }
}

/// `(consecutiveFailures, lastFailureCause)` per health check from Marathon's
/// `healthCheckResults` array.
fn failures_per_check(results: Option<&Value>) -> Vec<(u64, String)> {
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

/// Marathon's `status_update_event` body for a task.
fn status_event(task: &TaskRecord) -> Value {
    json!({
        "slaveId": task.agent_id, "taskId": task.id, "taskStatus": task.state,
        "message": task.message.clone().unwrap_or_default(), "appId": task.app_id,
        "host": task.host, "ports": task.ports, "ipAddresses": [{"ipAddress": task.host, "protocol": "IPv4"}],
        "version": task.version,
    })
}

/// A readable summary of why offers were declined, e.g.
/// `insufficient mem on 2 of 2 agents (needs 100000 MB, agent has 1024 MB free)`.
pub fn summarize_declines(stats: &OfferStats) -> String {
    if stats.last_round.is_empty() {
        return "waiting for offers: no active agent".into();
    }
    let parts: Vec<String> = stats
        .last_round
        .iter()
        .map(|(code, (count, message))| {
            if code == "Backoff" || code == "Dependency" {
                message.clone()
            } else {
                format!("{message} ({count} of {} offers)", stats.last_round_processed)
            }
        })
        .collect();
    parts.join("; ")
}

/// The agents offered to apps in one round.
struct OfferRound {
    agents: Vec<AgentId>,
}

impl OfferRound {
    fn new(core: &Core) -> Self {
        OfferRound {
            agents: core
                .agents
                .values()
                .filter(|a| a.record.active && !a.record.draining && a.seen_since_start)
                .map(|a| a.record.id.clone())
                .collect(),
        }
    }
}

/// Whether an agent's free resources fit one task; the ports it would get, or the
/// decline reason (Marathon's code and a readable message).
fn match_offer(
    agent: &AgentState,
    need: &Resources,
    port_requests: &[Option<u16>],
    parsed_constraints: &[plinth_protocol::Constraint],
    spreads: &[Spread],
) -> Result<Vec<u16>, (&'static str, String)> {
    let record = &agent.record;
    for (c, spread) in parsed_constraints.iter().zip(spreads) {
        let value = constraints::field_value(&c.field, &record.hostname, &record.attributes);
        constraints::allows(c, value, spread).map_err(|reason| ("UnfulfilledConstraint", reason))?;
    }
    let free = agent.free();
    let eps = 1e-9;
    if free.cpus + eps < need.cpus {
        return Err((
            "InsufficientCpus",
            format!("insufficient cpus: needs {}, agent has {} free", need.cpus, round2(free.cpus)),
        ));
    }
    if free.mem + eps < need.mem {
        return Err((
            "InsufficientMemory",
            format!("insufficient mem: needs {} MB, agent has {} MB free", need.mem, round2(free.mem)),
        ));
    }
    if free.disk + eps < need.disk {
        return Err((
            "InsufficientDisk",
            format!("insufficient disk: needs {} MB, agent has {} MB free", need.disk, round2(free.disk)),
        ));
    }
    let mut ports_left = free.ports;
    let mut ports = Vec::with_capacity(port_requests.len());
    for request in port_requests.iter().flatten() {
        if !ports_left.remove(*request) {
            return Err(("InsufficientPorts", format!("insufficient ports: port {request} is not free")));
        }
    }
    let dynamic = port_requests.iter().filter(|r| r.is_none()).count();
    let Some(mut picked) = ports_left.take_lowest(dynamic) else {
        return Err((
            "InsufficientPorts",
            format!("insufficient ports: needs {dynamic}, agent has {} free", ports_left.len()),
        ));
    };
    picked.reverse();
    for request in port_requests {
        ports.push(match request {
            Some(p) => *p,
            None => picked.pop().expect("take_lowest returned one per dynamic request"),
        });
    }
    Ok(ports)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Host ports a task needs, in order: `Some(port)` fixed, `None` any from the offer.
/// `None` altogether when a fixed port is out of range.
fn port_requests(def: &AppDefinition) -> Option<Vec<Option<u16>>> {
    let count = def.host_port_count();
    let mut requests = Vec::with_capacity(count);
    match (def.network_mode(), def.container_port_mappings()) {
        (NetworkMode::Bridge, Some(_)) => {
            for m in def.host_port_mappings() {
                requests.push(m.host_port.filter(|p| *p > 0).map(u16::try_from).transpose().ok()?);
            }
        }
        (NetworkMode::Host, Some(mappings)) if def.port_definitions.as_ref().is_none_or(Vec::is_empty) => {
            for m in mappings {
                requests.push(m.host_port.filter(|p| *p > 0).map(u16::try_from).transpose().ok()?);
            }
        }
        _ => {
            for d in def.port_definitions.iter().flatten() {
                requests.push((def.require_ports && d.port > 0).then_some(d.port).map(u16::try_from).transpose().ok()?);
            }
        }
    }
    requests.truncate(count);
    Some(requests)
}

/// A port field of a definition entering the core: the API validates ports, so one out of
/// range makes the app invalid.
fn port_u16(port: i64, field: &str) -> Result<u16, CoreError> {
    u16::try_from(port).map_err(|_| CoreError::InvalidApp(format!("{field} {port} is not between 0 and 65535")))
}

/// `instances` as a count (negative, which the API refuses, counts as 0).
fn instance_count(def: &AppDefinition) -> usize {
    usize::try_from(def.instances.max(0)).unwrap_or(usize::MAX)
}

/// Service ports declared by a definition, in port order.
// why: each port is clamped to 0..=65535 before the cast.
#[allow(clippy::cast_sign_loss)]
fn service_ports_of(def: &AppDefinition) -> Vec<u16> {
    match (def.network_mode(), def.container_port_mappings()) {
        (NetworkMode::Bridge, Some(m)) => m.iter().map(|p| p.service_port.clamp(0, 65535) as u16).collect(),
        (_, Some(m)) if def.port_definitions.as_ref().is_none_or(Vec::is_empty) => {
            m.iter().map(|p| p.service_port.clamp(0, 65535) as u16).collect()
        }
        _ => def.port_definitions.iter().flatten().map(|d| d.port.clamp(0, 65535) as u16).collect(),
    }
}

/// Whether two definitions differ only in `instances` (and version metadata).
fn same_config(a: &AppDefinition, b: &AppDefinition) -> bool {
    let strip = |d: &AppDefinition| {
        let mut d = d.clone();
        d.instances = 0;
        d.version = None;
        d.version_info = None;
        d
    };
    strip(a) == strip(b)
}
/// Result of `put_app`.
#[derive(Debug, Clone)]
pub struct PutOutcome {
    pub created: bool,
    pub app: AppRecord,
    pub deployment: DeploymentId,
    pub version: String,
}
