//! The core's state: the [`Core`] with its records and indexes (tasks by app and by
//! agent, agents' used resources), building it empty or from a store [`Snapshot`], and the
//! few primitives every concern uses to change it (index and remove tasks, bump an agent's
//! generation, record events in [`Changes`]).
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use plinth_protocol::views::events::EventBody;
use plinth_protocol::{AgentId, AppDefinition, AppId, DeploymentId, PortRanges, Resources, TaskId, Timestamp};

use crate::changes::Changes;
use crate::drain::Drain;
use plinth_protocol::agent::Service;

use crate::model::{
    status_event, AgentRecord, AppRecord, DeploymentRecord, Event, GroupRecords, OfferStats, Snapshot, TaskRecord,
};

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
    /// How long a planned kill waits for every balancer to drop the task (the app's
    /// `PLINTH_DRAIN_SECONDS` label overrides it).
    pub drain_timeout_ms: i64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            agent_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            service_ports: (10_000, 20_000),
            max_launches_per_tick: 10_000,
            drain_timeout_ms: 5_000,
        }
    }
}

/// The scheduler core.
pub struct Core {
    pub(crate) config: CoreConfig,
    pub(crate) next_uuid: IdSource,
    pub(crate) apps: BTreeMap<AppId, AppRecord>,
    /// Shared, never changed once stored: a read copy of the core shares them too.
    pub(crate) versions: BTreeMap<AppId, BTreeMap<String, Arc<AppDefinition>>>,
    /// Boxed: a growing map moves 32-byte entries instead of whole records (at 1M tasks
    /// the moves and their fresh pages were a fifth of the core's time).
    pub(crate) tasks: HashMap<TaskId, Box<TaskRecord>>,
    pub(crate) tasks_by_app: HashMap<AppId, HashSet<TaskId>>,
    pub(crate) tasks_by_agent: HashMap<AgentId, HashSet<TaskId>>,
    pub(crate) agents: BTreeMap<AgentId, AgentState>,
    pub(crate) deployments: BTreeMap<DeploymentId, DeploymentRecord>,
    pub(crate) offer_stats: HashMap<AppId, (Timestamp, OfferStats)>,
    pub(crate) processed_updates: HashSet<uuid::Uuid>,
    pub(crate) processed_order: VecDeque<uuid::Uuid>,
    /// Rotates across agents between placements so tasks spread over the pool.
    pub(crate) offer_cursor: usize,
    /// Apps whose tasks or definition changed since they were last supervised; a tick
    /// looks only at these, queued apps and deploying apps, so idle apps cost nothing.
    pub(crate) needs_supervision: HashSet<AppId>,
    /// Tasks kept as `TASK_UNREACHABLE` on lost agents (see `unreachableStrategy`).
    pub(crate) unreachable: HashSet<TaskId>,
    /// Explicit groups, group dependencies and versions (`/v2/groups`).
    pub(crate) groups: GroupRecords,
    /// The service table by app (derived, not persisted; `services.rs`), its generation,
    /// the apps to recompute, and tasks drained before their kill.
    pub(crate) services: BTreeMap<AppId, Vec<Service>>,
    pub(crate) services_generation: u64,
    pub(crate) services_dirty: HashSet<AppId>,
    pub(crate) draining: BTreeMap<TaskId, Drain>,
    pub(crate) changes: Changes,
}

/// How many status update ids are remembered for de-duplication.
pub(crate) const REMEMBERED_UPDATES: usize = 100_000;

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
    /// The service table generation its balancer last applied (`None`: no balancer), and
    /// the one whose removed backends it no longer carries connections to.
    pub services_applied: Option<u64>,
    pub services_drained: Option<u64>,
}

impl AgentState {
    pub(crate) fn new(record: AgentRecord) -> Self {
        let free_ports = record.resources.ports.clone();
        AgentState {
            record,
            used: Resources::default(),
            free_ports,
            seen_since_start: false,
            services_applied: None,
            services_drained: None,
        }
    }

    /// Free scalar resources plus free ports: what an offer from this agent holds.
    pub fn free(&self) -> Resources {
        let mut free = self.record.resources.clone();
        free.subtract_scalars(&self.used);
        free.ports = self.free_ports.clone();
        free
    }

    pub(crate) fn take(&mut self, resources: &Resources) {
        self.used.add_scalars(resources);
        for port in resources.ports.ranges().iter().flat_map(|(b, e)| *b..=*e) {
            self.free_ports.remove(port);
        }
    }

    pub(crate) fn give_back(&mut self, resources: &Resources) {
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
            groups: GroupRecords::new(),
            services: BTreeMap::new(),
            services_generation: 0,
            services_dirty: HashSet::new(),
            draining: BTreeMap::new(),
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
            core.versions.entry(app).or_default().insert(version, Arc::new(def));
        }
        for task in snapshot.tasks {
            if task.unreachable_since.is_some() {
                core.unreachable.insert(task.id.clone());
            }
            core.index_task(task);
        }
        core.groups = snapshot.groups.into_iter().collect();
        for deployment in snapshot.deployments {
            core.deployments.insert(deployment.id.clone(), deployment);
        }
        core.restore_drains();
        core
    }

    /// A copy of everything the queries read, for readers that must not hold the
    /// command lock while they render (the master's read model). It cannot decide
    /// anything: its id source is spent, its change log and update de-duplication empty.
    pub fn read_copy(&self) -> Core {
        Core {
            config: self.config.clone(),
            next_uuid: Box::new(uuid::Uuid::nil),
            apps: self.apps.clone(),
            versions: self.versions.clone(),
            tasks: self.tasks.clone(),
            tasks_by_app: self.tasks_by_app.clone(),
            tasks_by_agent: self.tasks_by_agent.clone(),
            agents: self.agents.clone(),
            deployments: self.deployments.clone(),
            offer_stats: self.offer_stats.clone(),
            processed_updates: HashSet::new(),
            processed_order: VecDeque::new(),
            offer_cursor: self.offer_cursor,
            needs_supervision: HashSet::new(),
            unreachable: self.unreachable.clone(),
            groups: self.groups.clone(),
            services: self.services.clone(),
            services_generation: self.services_generation,
            services_dirty: HashSet::new(),
            draining: self.draining.clone(),
            changes: Changes::default(),
        }
    }

    pub(crate) fn uuid(&mut self) -> uuid::Uuid {
        (self.next_uuid)()
    }

    /// Adds a task to the indexes and charges its agent.
    pub(crate) fn index_task(&mut self, task: TaskRecord) {
        self.tasks_by_app.entry(task.app_id.clone()).or_default().insert(task.id.clone());
        self.tasks_by_agent.entry(task.agent_id.clone()).or_default().insert(task.id.clone());
        if let Some(agent) = self.agents.get_mut(&task.agent_id) {
            agent.take(&task.resources);
        }
        self.tasks.insert(task.id.clone(), Box::new(task));
    }

    /// Removes a terminal task and gives its resources back.
    pub(crate) fn remove_task(&mut self, id: &TaskId) -> Option<TaskRecord> {
        let task = *self.tasks.remove(id)?;
        self.unreachable.remove(id);
        self.draining.remove(id);
        self.services_dirty.insert(task.app_id.clone());
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
    pub(crate) fn bump_generation(&mut self, agent: &AgentId) {
        if let Some(state) = self.agents.get_mut(agent) {
            state.record.generation += 1;
            self.changes.agents.insert(agent.clone());
            self.changes.notify_agents.insert(agent.clone());
        }
    }

    /// Records an event (Marathon's bodies, `plinth_protocol::views::events`).
    pub(crate) fn emit<E: EventBody>(&mut self, now: Timestamp, body: &E) {
        self.changes.events.push(Event::of(now, body));
    }

    /// One per task change, and mostly nobody listens: its JSON waits for a reader.
    pub(crate) fn emit_status(&mut self, task: &TaskRecord, now: Timestamp) {
        self.changes.events.push(Event::lazy(now, status_event(task)));
    }

    /// Remembers an update id; false when it was already applied.
    pub(crate) fn remember_update(&mut self, id: uuid::Uuid) -> bool {
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

    /// The definition a task runs: its version's, else the app's current one.
    pub(crate) fn version_definition(&self, app: &AppId, version: &str) -> Option<&AppDefinition> {
        self.versions
            .get(app)
            .and_then(|v| v.get(version))
            .map(|d| &**d)
            .or_else(|| self.apps.get(app).map(|a| &*a.definition))
    }

    /// Drains what changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        // Derived from what changed, so every call's table change wakes the agents with it.
        self.refresh_services();
        std::mem::take(&mut self.changes)
    }
}
