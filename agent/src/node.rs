//! The agent's shell: the node state ([`Node`]) that the loops, the API and the checks
//! share. It feeds the reconciler with what the master wants (handed in by
//! [`crate::master_link`]) and what the runtime sees, carries out its decisions,
//! checkpoints after every change and queues status updates for the master.
//! [`crate::start`] builds it and runs its loops.
use plinth_protocol::agent::{DesiredState, StatusUpdate, TaskSpec};
use plinth_protocol::{error_chain, AgentId, Resources, TaskId, TaskState, Timestamp};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::config::{AgentConfig, AgentOptions, IMAGES_DIR};
use crate::executor_contract::{ContainerNetwork, ContainerTask, MappedPort};
use crate::reconciler::{self, Action, KillWhy, Plan, Transition};
use crate::runtime::{LaunchRequest, RuntimeHandle, TaskRuntime};
use crate::state::{NodeState, TaskRecord};
use crate::taskenv;
use plinth_protocol::marathon::NetworkMode;

/// Sandboxes live in `work_dir/tasks/TASK_ID`.
pub const TASKS_DIR: &str = "tasks";
/// How often unused images are looked for.
const IMAGE_GC_INTERVAL: Duration = Duration::from_secs(600);

pub(crate) struct Node {
    pub config: AgentConfig,
    pub options: AgentOptions,
    pub resources: Resources,
    pub advertise_ip: IpAddr,
    runtime: Arc<dyn TaskRuntime>,
    state: Mutex<NodeState>,
    agent_id: Mutex<Option<AgentId>>,
    outbox_ready: Notify,
    /// When the master last answered (`partition.rs`).
    pub(crate) contact: crate::partition::MasterContact,
    /// Serves every app's service ports from the master's service table.
    pub(crate) balancer: crate::lb::Balancer,
}

impl Node {
    pub fn new(
        config: AgentConfig,
        options: AgentOptions,
        resources: Resources,
        advertise_ip: IpAddr,
        runtime: Arc<dyn TaskRuntime>,
        state: NodeState,
        agent_id: Option<AgentId>,
    ) -> Self {
        let balancer = crate::lb::Balancer::new(config.lb.clone());
        Node {
            balancer,
            config,
            options,
            resources,
            advertise_ip,
            runtime,
            state: Mutex::new(state),
            agent_id: Mutex::new(agent_id),
            outbox_ready: Notify::new(),
            contact: crate::partition::MasterContact::new(),
        }
    }
}

/// Runs blocking work (file I/O, process spawning, fsync) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("agent work panicked")
}

/// Whole milliseconds of `d` (saturating: no `Duration` here comes near u64::MAX ms).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Node {
    pub fn lock(&self) -> MutexGuard<'_, NodeState> {
        // State is only changed whole under the lock; a panicking holder cannot leave it
        // half-updated in a way a later checkpoint would make worse than a crash.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn agent_id(&self) -> Option<AgentId> {
        self.agent_id.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The id the master gave this agent (see [`crate::master_link`]).
    pub fn set_agent_id(&self, agent_id: AgentId) {
        *self.agent_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(agent_id);
    }

    /// Wakes the status outbox: there is something to send, or someone to send it to.
    pub fn wake_outbox(&self) {
        self.outbox_ready.notify_one();
    }

    /// Returns once the outbox is woken (see [`Node::wake_outbox`]).
    pub async fn outbox_woken(&self) {
        self.outbox_ready.notified().await;
    }

    /// The agent id once known, else the hostname: what logs call this node.
    pub fn node_id(&self) -> String {
        self.agent_id().map_or_else(|| self.config.hostname.clone(), |id| id.to_string())
    }

    fn sandbox_for(&self, task_id: &TaskId) -> PathBuf {
        self.config.work_dir.join(TASKS_DIR).join(task_id.as_str())
    }

    /// Whether `sandbox` is a task directory of this agent (refused tasks have none):
    /// nothing outside `work_dir/tasks/` is ever served or deleted.
    pub fn owns_sandbox(&self, sandbox: &Path) -> bool {
        let tasks_dir = self.config.work_dir.join(TASKS_DIR);
        sandbox.parent() == Some(tasks_dir.as_path())
    }

    fn remove_sandbox(&self, record: &TaskRecord) {
        if !self.owns_sandbox(&record.sandbox) {
            return;
        }
        debug!(node_id = %self.node_id(), task_id = %record.spec.task_id, "removing the sandbox of a finished task");
        if let Err(err) = std::fs::remove_dir_all(&record.sandbox) {
            if err.kind() != std::io::ErrorKind::NotFound {
                warn!(task_id = %record.spec.task_id, error = %error_chain(&err), "cannot remove sandbox {}", record.sandbox.display());
            }
        }
    }

    pub fn save(&self, state: &NodeState) {
        if let Err(err) = state.save(&self.config.work_dir) {
            // The agent keeps running; the next change retries the write.
            error!(node_id = %self.node_id(), error = %error_chain(&err), "cannot write the checkpoint");
        }
    }

    /// Re-attaches to every task in the checkpoint. Nothing is started or killed here:
    /// the next tick sees what became of each task while the agent was away.
    pub fn recover(&self) {
        let mut state = self.lock();
        let mut adopted = 0;
        for record in state.tasks.values_mut().filter(|r| !r.is_terminal()) {
            let handle = record
                .handle
                .clone()
                .unwrap_or_else(|| RuntimeHandle::unresolved(record.spec.task_id.clone(), record.sandbox.clone()));
            record.handle = Some(self.runtime.recover(&handle));
            adopted += 1;
            info!(
                node_id = %self.node_id(), task_id = %record.spec.task_id, app_id = %record.spec.app_id,
                pid = ?record.handle.as_ref().and_then(|h| h.pid), "re-adopting task"
            );
        }
        if adopted > 0 {
            self.save(&state);
        }
    }

    /// Applies a desired state from the master (ignored unless its generation is newer).
    pub fn apply(&self, desired: DesiredState, now: Timestamp) {
        let mut state = self.lock();
        let generation = desired.generation;
        match reconciler::plan(state.applied_generation, &desired, &state.tasks, now) {
            Plan::Ignore { applied, .. } => {
                debug!(node_id = %self.node_id(), generation, applied, "ignoring a desired state that is not newer");
            }
            Plan::Apply { actions } => {
                info!(
                    node_id = %self.node_id(), generation, tasks = desired.tasks.len(), actions = actions.len(),
                    "applying desired state"
                );
                state.applied_generation = generation;
                state.desired = desired;
                for action in actions {
                    self.execute(&mut state, action, now);
                }
                self.save(&state);
                self.wake_outbox();
            }
        }
    }

    /// Polls every live task, records what changed, and keeps converging (kill
    /// escalation) and collecting old sandboxes.
    pub fn tick(&self, now: Timestamp) {
        let mut state = self.lock();
        let mut changed = false;
        let live: Vec<TaskId> =
            state.tasks.values().filter(|r| !r.is_terminal()).map(|r| r.spec.task_id.clone()).collect();
        for task_id in live {
            let Some(record) = state.tasks.get(&task_id) else { continue };
            let observation = match &record.handle {
                Some(handle) => self.runtime.poll(handle),
                None => crate::runtime::Observation::Gone { message: "the task was never handed to a runtime".into() },
            };
            if let Some(transition) = reconciler::observe(record, &observation) {
                self.transition(&mut state, &task_id, transition, now);
                changed = true;
            }
        }
        let desired = state.desired.clone();
        for action in reconciler::converge(&desired, &state.tasks, now) {
            self.execute(&mut state, action, now);
            changed = true;
        }
        for task_id in reconciler::collectable(
            &state.desired,
            &state.tasks,
            now,
            self.options.sandbox_retention,
            self.options.keep_terminal,
        ) {
            if let Some(record) = state.tasks.remove(&task_id) {
                self.remove_sandbox(&record);
                changed = true;
            }
        }
        if changed {
            self.save(&state);
            self.wake_outbox();
        }
    }

    fn execute(&self, state: &mut NodeState, action: Action, now: Timestamp) {
        match action {
            Action::Launch(spec) => self.launch(state, spec, now),
            Action::Kill { task_id, grace, why } => {
                let Some(record) = state.tasks.get_mut(&task_id) else { return };
                record.kill_requested_at = Some(now);
                info!(
                    node_id = %self.node_id(), task_id = %task_id, app_id = %record.spec.app_id,
                    grace_ms = millis(grace), requested = (why == KillWhy::Requested), "killing task"
                );
                if let Some(handle) = &record.handle {
                    if let Err(err) = self.runtime.kill(handle, grace) {
                        warn!(task_id = %task_id, error = %error_chain(&err), "kill failed; it will be forced after the grace period");
                    }
                }
            }
            Action::ForceKill { task_id } => {
                let Some(record) = state.tasks.get_mut(&task_id) else { return };
                record.force_killed = true;
                warn!(node_id = %self.node_id(), task_id = %task_id, app_id = %record.spec.app_id, "task outlived its kill grace period; forcing it");
                if let Some(handle) = &record.handle {
                    if let Err(err) = self.runtime.force_kill(handle) {
                        error!(task_id = %task_id, error = %error_chain(&err), "cannot force-kill task");
                    }
                }
            }
            Action::Refuse { spec, state: task_state, reason, message } => {
                warn!(node_id = %self.node_id(), task_id = %spec.task_id, app_id = %spec.app_id, %message, "not launching task");
                let task_id = spec.task_id.clone();
                let mut record = TaskRecord::new(spec, PathBuf::new(), now);
                record.finished_at = Some(now);
                state.tasks.insert(task_id.clone(), record);
                let transition = Transition {
                    state: task_state,
                    message: Some(message),
                    reason: Some(reason),
                    exit_code: None,
                    pid: None,
                };
                self.transition(state, &task_id, transition, now);
            }
        }
    }

    fn launch(&self, state: &mut NodeState, spec: TaskSpec, now: Timestamp) {
        let task_id = spec.task_id.clone();
        let sandbox = self.sandbox_for(&task_id);
        info!(
            node_id = %self.node_id(), task_id = %task_id, app_id = %spec.app_id, generation = state.applied_generation,
            "launching task"
        );
        let request = LaunchRequest {
            env: taskenv::task_env(&spec, &self.config.hostname, &sandbox),
            spec: spec.clone(),
            sandbox: sandbox.clone(),
            logs: self.options.logs,
            fetch_cache: Some(self.config.work_dir.join(crate::fetch::CACHE_DIR)),
            container: self.container_task(&spec),
            confinement: self.config.task_confinement(),
            notify_socket: Some(self.config.work_dir.join(crate::executor_contract::NOTIFY_SOCKET)),
        };
        // Checkpoint the intent first: if the agent dies during the launch, the restarted
        // agent finds the executor through the sandbox instead of launching it twice.
        state.tasks.insert(task_id.clone(), TaskRecord::new(spec, sandbox, now));
        self.save(state);
        match self.runtime.launch(&request) {
            Ok(handle) => {
                if let Some(record) = state.tasks.get_mut(&task_id) {
                    record.handle = Some(handle);
                }
                self.transition(
                    state,
                    &task_id,
                    Transition {
                        state: TaskState::TaskStarting,
                        message: None,
                        reason: None,
                        exit_code: None,
                        pid: None,
                    },
                    now,
                );
            }
            Err(err) => {
                let message = error_chain(&err).to_string();
                warn!(node_id = %self.node_id(), task_id = %task_id, error = %message, "launch failed");
                self.transition(
                    state,
                    &task_id,
                    Transition {
                        state: TaskState::TaskFailed,
                        message: Some(format!("Launch failed: {message}")),
                        reason: Some(reconciler::REASON_COMMAND_FAILED),
                        exit_code: None,
                        pid: None,
                    },
                    now,
                );
            }
        }
    }

    /// What the executor needs to run a Docker task beyond its app definition; `None`
    /// for command tasks.
    fn container_task(&self, spec: &TaskSpec) -> Option<ContainerTask> {
        let docker = spec.app.container.as_ref()?.docker.as_ref().filter(|d| !d.image.trim().is_empty())?;
        let settings = &self.config.containers;
        let network = match spec.app.network_mode() {
            NetworkMode::Host => ContainerNetwork::Host,
            NetworkMode::Bridge => ContainerNetwork::Bridge {
                bridge: settings.bridge.clone(),
                subnet: settings.subnet.clone(),
                ipam_dir: self.config.work_dir.join("ipam"),
            },
            NetworkMode::None => ContainerNetwork::None,
        };
        // The offer's host ports go, in order, to the mappings that asked for one.
        let port_mappings = spec
            .app
            .host_port_mappings()
            .into_iter()
            .zip(&spec.host_ports)
            .map(|(m, host_port)| MappedPort {
                container_port: u16::try_from(m.container_port).unwrap_or(0),
                host_port: *host_port,
                protocol: m.protocol.clone(),
            })
            .collect();
        Some(ContainerTask {
            image: docker.image.clone(),
            force_pull: docker.force_pull_image,
            registry: self.config.registry_url(),
            images_dir: self.config.work_dir.join(IMAGES_DIR),
            max_layer_bytes: settings.max_layer_bytes,
            network,
            port_mappings,
            host: self.advertise_ip.to_string(),
            dns_search: settings.dns_search.clone(),
            local_image: None,
            userns_remap: settings.userns_remap,
        })
    }

    /// Records a state change and queues its status update for the master.
    fn transition(&self, state: &mut NodeState, task_id: &TaskId, transition: Transition, now: Timestamp) {
        let Some(record) = state.tasks.get_mut(task_id) else { return };
        record.state = transition.state;
        if transition.pid.is_some() {
            record.pid = transition.pid;
        }
        if transition.state == TaskState::TaskRunning {
            record.running_since = Some(now);
        }
        if transition.message.is_some() {
            record.message = transition.message.clone();
        }
        record.reason = transition.reason.map(str::to_string);
        record.exit_code = transition.exit_code.or(record.exit_code);
        let terminal = transition.state.is_terminal();
        if terminal {
            record.finished_at = Some(now);
            if let Some(handle) = &record.handle {
                if let Err(err) = self.runtime.cleanup(handle) {
                    warn!(task_id = %task_id, error = %error_chain(&err), "cannot clean up after task");
                }
            }
        }
        let log = |level_error: bool| {
            if level_error {
                warn!(
                    node_id = %self.node_id(), task_id = %task_id, app_id = %record.spec.app_id,
                    state = %transition.state, message = transition.message.as_deref().unwrap_or(""), "task ended"
                );
            } else {
                info!(
                    node_id = %self.node_id(), task_id = %task_id, app_id = %record.spec.app_id,
                    state = %transition.state, message = transition.message.as_deref().unwrap_or(""), "task state changed"
                );
            }
        };
        log(matches!(transition.state, TaskState::TaskFailed | TaskState::TaskError));
        let mut extra = BTreeMap::new();
        // A container on the bridge has its own address; Marathon shows it in ipAddresses.
        if transition.state == TaskState::TaskRunning {
            if let Some(ip) = crate::inspect::container_ip(&record.sandbox) {
                extra.insert("ipAddresses".to_string(), serde_json::json!([{"ipAddress": ip, "protocol": "IPv4"}]));
            }
        }
        let update = StatusUpdate {
            update_id: uuid::Uuid::new_v4(),
            task_id: task_id.clone(),
            app_id: record.spec.app_id.clone(),
            state: transition.state,
            message: transition.message,
            exit_code: transition.exit_code,
            reason: transition.reason.map(str::to_string),
            timestamp: now.to_iso(),
            healthy: None,
            extra,
        };
        state.outbox.push(update);
    }

    /// Queues a `TASK_RUNNING` update carrying health or readiness results, unless the
    /// task stopped running (or is being killed) while its check ran: an update about a
    /// task that already ended would read as if it were running again.
    pub(crate) fn queue_check_update(
        &self,
        task_id: &TaskId,
        healthy: Option<bool>,
        extra: BTreeMap<String, serde_json::Value>,
    ) {
        let mut state = self.lock();
        let Some(record) = state.tasks.get(task_id) else { return };
        if record.state != TaskState::TaskRunning || record.kill_requested_at.is_some() {
            return;
        }
        let update = StatusUpdate {
            update_id: uuid::Uuid::new_v4(),
            task_id: task_id.clone(),
            app_id: record.spec.app_id.clone(),
            state: TaskState::TaskRunning,
            message: None,
            exit_code: None,
            reason: None,
            timestamp: Timestamp::now().to_iso(),
            healthy,
            extra,
        };
        state.outbox.push(update);
        self.save(&state);
        self.wake_outbox();
    }

    /// Applies `--stop-tasks-after-master-lost-secs` (`partition.rs`): empties the desired
    /// state, so the reconciler kills every task (with its grace period) on the next tick.
    /// The master hears `TASK_KILLED` for each once it answers again, and decides afresh.
    pub fn stop_tasks_if_master_lost(&self) {
        let policy = self.config.stop_tasks_after_master_lost;
        let silent_for = self.contact.silent_for();
        let mut state = self.lock();
        if !crate::partition::must_stop(policy, silent_for, state.desired.tasks.len()) {
            return;
        }
        warn!(
            node_id = %self.node_id(), tasks = state.desired.tasks.len(), silent_ms = millis(silent_for),
            "no answer from the master past --stop-tasks-after-master-lost-secs; stopping every task"
        );
        state.desired.tasks.clear();
        self.save(&state);
    }

    /// Ticks every `--tick` and at once when an executor reports news on the notify
    /// socket (a task started or ended), so a state change reaches the master without
    /// waiting for the interval.
    pub async fn tick_loop(self: Arc<Self>) {
        let mut interval = tokio::time::interval(self.options.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let news = crate::executor_news::bind(&self.config.work_dir);
        loop {
            match &news {
                Some(news) => tokio::select! {
                    _ = interval.tick() => {}
                    () = news.next() => {}
                },
                None => {
                    interval.tick().await;
                }
            }
            let node = self.clone();
            blocking(move || {
                node.stop_tasks_if_master_lost();
                node.tick(Timestamp::now());
            })
            .await;
        }
    }

    /// Collects unused image layers and blobs: those unused for a day, and the oldest
    /// unpinned ones while the store is above its high-water mark.
    pub async fn image_gc_loop(self: Arc<Self>) {
        let mut interval = tokio::time::interval(IMAGE_GC_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let images_dir = self.config.work_dir.join(IMAGES_DIR);
            if !images_dir.exists() {
                continue;
            }
            let policy = crate::image::GcPolicy {
                max_age: self.options.image_max_age,
                high_water_bytes: self.options.image_high_water_bytes,
                ..Default::default()
            };
            // The layers this agent's containers use: a remap's own, with --userns-remap.
            let options =
                crate::image::ImageStoreOptions { id_remap: self.config.containers.userns_remap, ..Default::default() };
            let result = blocking(move || {
                crate::image::ImageStore::open(images_dir, options).and_then(|store| store.gc(policy))
            })
            .await;
            match result {
                Ok(report) if report.freed_bytes > 0 => info!(
                    node_id = %self.node_id(), freed_bytes = report.freed_bytes, layers = report.removed_layers,
                    blobs = report.removed_blobs, remaining_bytes = report.remaining_bytes, "collected unused images"
                ),
                Ok(_) => {}
                Err(err) => {
                    warn!(node_id = %self.node_id(), error = %error_chain(&err), "image garbage collection failed")
                }
            }
        }
    }
}
