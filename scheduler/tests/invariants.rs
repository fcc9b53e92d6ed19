//! Property-based invariants of the scheduler core: random sequences of API commands,
//! agent registrations and losses, status updates and ticks with advancing time, with the
//! core's invariants checked after every step. Only the public API is used, as the master
//! uses it.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::json;

use plinth_protocol::agent::{Registration, StatusUpdate, SyncRequest};
use plinth_protocol::{AgentId, AppDefinition, AppId, DeploymentId, Resources, TaskState, Timestamp};
use plinth_scheduler::{Core, CoreConfig, DeploymentAction, KillTarget, Snapshot};

const APPS: [&str; 3] = ["/a", "/b", "/g/c"];
const AGENTS: usize = 3;
const AGENT_RESOURCES: &str = "cpus:2;mem:1024;disk:1000;ports:[31000-31004]";
const TIMEOUT_MS: i64 = 10_000;

/// What an app definition of a step looks like.
#[derive(Debug, Clone)]
struct Spec {
    instances: i64,
    cpus: f64,
    mem: f64,
    ports: usize,
    /// One fixed host port (`requirePorts`) instead of dynamic ones.
    fixed_port: bool,
    min_health: f64,
    max_over: f64,
    /// Keeps tasks of a lost agent as unreachable for a while.
    unreachable: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Create(usize, Spec),
    /// A new version (new command and resources).
    Update(usize, Spec, bool),
    Scale(usize, i64, bool),
    Restart(usize, bool),
    Delete(usize),
    Kill(usize, usize, bool),
    Cancel(usize, bool),
    Register(usize),
    /// The agent stops (or resumes) heartbeating; past the timeout it is lost.
    Silence(usize),
    /// A status update for the n-th task (modulo the number of tasks).
    Status(usize, TaskState),
    /// The agents confirm every kill the master asked for.
    ConfirmKills,
    Tick(i64),
    /// The master is killed (`kill -9`) and starts again from what it stored: every
    /// record the core ever reported as changed (the store writes them all), nothing else.
    Crash,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0i64..4,
        prop_oneof![Just(0.1), Just(0.5), Just(1.0)],
        prop_oneof![Just(32.0), Just(256.0)],
        0usize..3,
        any::<bool>(),
        prop_oneof![Just(0.0), Just(0.5), Just(1.0)],
        prop_oneof![Just(0.0), Just(0.5), Just(1.0)],
        any::<bool>(),
    )
        .prop_map(|(instances, cpus, mem, ports, fixed_port, min_health, max_over, unreachable)| Spec {
            instances,
            cpus,
            mem,
            ports,
            fixed_port,
            min_health,
            max_over,
            unreachable,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let app = 0..APPS.len();
    let agent = 0..AGENTS;
    prop_oneof![
        3 => (app.clone(), spec()).prop_map(|(a, s)| Op::Create(a, s)),
        2 => (app.clone(), spec(), any::<bool>()).prop_map(|(a, s, f)| Op::Update(a, s, f)),
        2 => (app.clone(), 0i64..5, any::<bool>()).prop_map(|(a, n, f)| Op::Scale(a, n, f)),
        1 => (app.clone(), any::<bool>()).prop_map(|(a, f)| Op::Restart(a, f)),
        2 => app.clone().prop_map(Op::Delete),
        1 => (app.clone(), 0usize..4, any::<bool>()).prop_map(|(a, n, s)| Op::Kill(a, n, s)),
        1 => (app, any::<bool>()).prop_map(|(a, f)| Op::Cancel(a, f)),
        2 => agent.clone().prop_map(Op::Register),
        1 => agent.prop_map(Op::Silence),
        4 => (0usize..16, prop_oneof![
            4 => Just(TaskState::TaskRunning),
            1 => Just(TaskState::TaskFailed),
            1 => Just(TaskState::TaskFinished),
        ])
            .prop_map(|(n, s)| Op::Status(n, s)),
        2 => Just(Op::ConfirmKills),
        1 => Just(Op::Crash),
        6 => prop_oneof![Just(150i64), Just(2_000), Just(6_000)].prop_map(Op::Tick),
    ]
}

/// The world around the core: the clock, the agents and what the invariants remember.
struct World {
    core: Core,
    now: Timestamp,
    next_update: u128,
    next_cmd: u64,
    agents: Vec<Option<AgentId>>,
    silent: Vec<bool>,
    generations: HashMap<AgentId, u64>,
    /// Per deleted app id: the deployments, versions and commands it had when deleted.
    deleted: HashMap<AppId, Deleted>,
    crashes: u32,
}

#[derive(Debug, Default)]
struct Deleted {
    deployments: BTreeSet<DeploymentId>,
    versions: BTreeSet<String>,
    commands: BTreeSet<String>,
}

impl World {
    fn new() -> Self {
        let mut n = 0u128;
        let ids = Box::new(move || {
            n += 1;
            uuid::Uuid::from_u128(n)
        });
        let config = CoreConfig { agent_timeout_ms: TIMEOUT_MS, ..CoreConfig::default() };
        World {
            core: Core::new(config, ids),
            now: Timestamp(1_700_000_000_000),
            next_update: 1 << 64,
            next_cmd: 0,
            agents: vec![None; AGENTS],
            silent: vec![false; AGENTS],
            generations: HashMap::new(),
            deleted: HashMap::new(),
            crashes: 0,
        }
    }

    fn definition(&mut self, app: usize, spec: &Spec) -> AppDefinition {
        self.next_cmd += 1;
        let ports: Vec<serde_json::Value> = if spec.fixed_port {
            vec![json!({"port": 31001})]
        } else {
            (0..spec.ports).map(|_| json!({"port": 0})).collect()
        };
        let mut value = json!({
            "id": APPS[app], "cmd": format!("v{}", self.next_cmd), "instances": spec.instances,
            "cpus": spec.cpus, "mem": spec.mem, "disk": 0, "portDefinitions": ports,
            "requirePorts": spec.fixed_port, "backoffSeconds": 1,
            "upgradeStrategy": {"minimumHealthCapacity": spec.min_health, "maximumOverCapacity": spec.max_over},
        });
        if spec.unreachable {
            value["unreachableStrategy"] = json!({"inactiveAfterSeconds": 5, "expungeAfterSeconds": 20});
        }
        let mut def = AppDefinition::from_value(value).expect("valid json");
        def.normalize();
        def.validate().expect("valid app");
        def
    }

    fn update_id(&mut self) -> uuid::Uuid {
        self.next_update += 1;
        uuid::Uuid::from_u128(self.next_update)
    }

    fn apply(&mut self, op: &Op) {
        // Every step takes a little time, so versions of successive commands differ.
        self.now = self.now.plus_millis(1);
        let now = self.now;
        match op {
            Op::Create(app, spec) => {
                let def = self.definition(*app, spec);
                let _ = self.core.create_app(def, now);
            }
            Op::Update(app, spec, force) => {
                let def = self.definition(*app, spec);
                let _ = self.core.put_app(def, now, *force);
            }
            Op::Scale(app, n, force) => {
                let id = AppId::parse(APPS[*app]).expect("id");
                if let Some(current) = self.core.app(&id) {
                    let mut def = AppDefinition::clone(&current.definition);
                    def.instances = *n;
                    def.version = None;
                    def.version_info = None;
                    let _ = self.core.put_app(def, now, *force);
                }
            }
            Op::Restart(app, force) => {
                let _ = self.core.restart_app(&AppId::parse(APPS[*app]).expect("id"), now, *force);
            }
            Op::Delete(app) => {
                let id = AppId::parse(APPS[*app]).expect("id");
                let before = self.incarnation(&id);
                if self.core.delete_app(&id, now).is_ok() {
                    let mut gone = before;
                    gone.deployments.extend(self.core.app_deployments(&id).iter().map(|d| d.id.clone()));
                    self.deleted.insert(id, gone);
                }
            }
            Op::Kill(app, n, scale) => {
                let id = AppId::parse(APPS[*app]).expect("id");
                let tasks = self.core.app_tasks(&id);
                if let Some(task) = tasks.get(n % tasks.len().max(1)) {
                    let target = KillTarget::Tasks(vec![task.id.clone()]);
                    let _ = self.core.kill_tasks(target, *scale, now, true);
                }
            }
            Op::Cancel(app, force) => {
                let id = AppId::parse(APPS[*app]).expect("id");
                let first = self.core.app_deployments(&id).first().map(|d| d.id.clone());
                if let Some(deployment) = first {
                    let cancelled = self.core.cancel_deployment(&deployment, *force, now).is_ok();
                    if cancelled && self.deleted.get(&id).is_some_and(|d| d.deployments.contains(&deployment)) {
                        // Rolling back a deletion restores the app by design (as Marathon does).
                        self.deleted.remove(&id);
                    }
                }
            }
            Op::Register(agent) => {
                let registration = Registration {
                    agent_id: self.agents[*agent].clone(),
                    hostname: format!("agent-{agent}"),
                    advertise_ip: format!("10.0.0.{agent}"),
                    http_port: 5051,
                    resources: Resources::parse(AGENT_RESOURCES).expect("resources"),
                    attributes: Default::default(),
                    last_generation: self.agents[*agent]
                        .as_ref()
                        .and_then(|a| self.generations.get(a))
                        .copied()
                        .unwrap_or(0),
                    tasks: vec![],
                    version: "test".into(),
                };
                self.agents[*agent] = Some(self.core.register_agent(registration, now));
                self.silent[*agent] = false;
            }
            Op::Silence(agent) => self.silent[*agent] = !self.silent[*agent],
            Op::Status(n, state) => {
                let mut tasks: Vec<_> =
                    self.core.tasks().map(|t| (t.id.clone(), t.app_id.clone(), t.agent_id.clone())).collect();
                tasks.sort();
                if let Some((task, app, agent)) = tasks.get(n % tasks.len().max(1)).cloned() {
                    let update = StatusUpdate::new(self.update_id(), task, app, *state, now.to_iso());
                    self.core.apply_status_updates(&agent, vec![update], now);
                }
            }
            Op::ConfirmKills => {
                let killing: Vec<_> = self
                    .core
                    .tasks()
                    .filter(|t| t.kill_requested)
                    .map(|t| (t.id.clone(), t.app_id.clone(), t.agent_id.clone()))
                    .collect();
                for (task, app, agent) in killing {
                    let update = StatusUpdate::new(self.update_id(), task, app, TaskState::TaskKilled, now.to_iso());
                    self.core.apply_status_updates(&agent, vec![update], now);
                }
            }
            Op::Crash => {
                let stored = stored(&self.core);
                let config = CoreConfig { agent_timeout_ms: TIMEOUT_MS, ..CoreConfig::default() };
                // Fresh ids after each restart, never repeated, as random ones would be.
                self.crashes += 1;
                let mut n = u128::from(self.crashes) << 100;
                let ids = Box::new(move || {
                    n += 1;
                    uuid::Uuid::from_u128(n)
                });
                self.core = Core::restore(config, ids, stored, now);
            }
            Op::Tick(ms) => {
                self.now = self.now.plus_millis(*ms);
                let now = self.now;
                for (agent, silent) in self.agents.clone().iter().zip(self.silent.clone()) {
                    let Some(agent) = agent.as_ref().filter(|_| !silent) else { continue };
                    let generation = self.core.desired_state(agent).map_or(0, |d| d.generation);
                    let request = SyncRequest::new(agent.clone(), generation);
                    self.core.sync_agent(&request, now);
                }
                self.core.tick(now);
            }
        }
        self.core.take_changes();
    }

    /// What the app `id` is made of now (to check that a deleted app never comes back).
    fn incarnation(&self, id: &AppId) -> Deleted {
        let versions: BTreeSet<String> = self.core.app_versions(id).unwrap_or_default().into_iter().collect();
        let commands =
            versions.iter().filter_map(|v| self.core.app_version(id, v)).filter_map(|d| d.cmd.clone()).collect();
        let deployments = self.core.app_deployments(id).iter().map(|d| d.id.clone()).collect();
        Deleted { deployments, versions, commands }
    }
}

/// `instances × (1 + maximumOverCapacity)`, rounded down and never below `instances`, as
/// the supervisor computes it.
fn over_capacity_bound(def: &AppDefinition) -> usize {
    let target = usize::try_from(def.instances.max(0)).unwrap_or(0);
    let mut bound = target;
    while (bound + 1) as f64 <= target as f64 * (1.0 + def.upgrade_strategy.maximum_over_capacity) + 1e-9 {
        bound += 1;
    }
    bound
}

fn is_live(state: TaskState) -> bool {
    matches!(state, TaskState::TaskStaging | TaskState::TaskStarting | TaskState::TaskRunning)
}

/// Checks every invariant after `op`; `launched` holds the tasks the step launched per app.
fn check(world: &mut World, op: &Op, launched: &BTreeMap<AppId, usize>) -> Result<(), TestCaseError> {
    let core = &world.core;
    // 1. A deployment never launches an app above instances × (1 + maximumOverCapacity).
    //    A command may lower `instances` below what runs; the surplus is then killed over
    //    the next ticks, so the bound is checked where tasks are launched.
    for app in core.apps() {
        let deploying = core
            .app_deployments(&app.id)
            .iter()
            .any(|d| !matches!(d.current_actions().first(), Some(DeploymentAction::StopApplication) | None));
        if !deploying || launched.get(&app.id).copied().unwrap_or(0) == 0 {
            continue;
        }
        // Tasks of a lost agent kept as unreachable are not running: past
        // inactiveAfterSeconds they are replaced by design while they wait to be expunged.
        let live = core
            .app_tasks(&app.id)
            .iter()
            .filter(|t| !t.kill_requested && t.unreachable_since.is_none() && is_live(t.state))
            .count();
        let bound = over_capacity_bound(&app.definition);
        prop_assert!(live <= bound, "{op:?}: {} has {live} live tasks, bound {bound}", app.id);
    }
    // 2. No agent is over-committed, and no host port is used twice on an agent.
    for agent in core.agents() {
        let tasks: Vec<_> = core.tasks().filter(|t| t.agent_id == agent.record.id).collect();
        let total = &agent.record.resources;
        let (cpus, mem, disk) = tasks
            .iter()
            .fold((0.0, 0.0, 0.0), |(c, m, d), t| (c + t.resources.cpus, m + t.resources.mem, d + t.resources.disk));
        prop_assert!(cpus <= total.cpus + 1e-6, "{op:?}: agent {} has {cpus} cpus taken", agent.record.id);
        prop_assert!(mem <= total.mem + 1e-6, "{op:?}: agent {} has {mem} mem taken", agent.record.id);
        prop_assert!(disk <= total.disk + 1e-6, "{op:?}: agent {} has {disk} disk taken", agent.record.id);
        let mut ports = BTreeSet::new();
        for port in tasks.iter().flat_map(|t| t.ports.iter()) {
            prop_assert!(ports.insert(*port), "{op:?}: port {port} used twice on {}", agent.record.id);
        }
    }
    // 3. Generations of an agent's desired state never decrease.
    for agent in core.agents() {
        let generation = core.desired_state(&agent.record.id).map_or(0, |d| d.generation);
        let before = world.generations.insert(agent.record.id.clone(), generation).unwrap_or(0);
        prop_assert!(generation >= before, "{op:?}: generation of {} went {before} -> {generation}", agent.record.id);
    }
    // 4. After a tick, every app short of instances says why in the queue (declines,
    //    backoff, a dependency, no agent to offer), or is in a rolling replacement that
    //    waits for old tasks.
    if matches!(op, Op::Tick(_)) {
        // No offer at all is a reason too (`waiting for offers: no active agent`).
        let offers = core.agents().any(|a| a.record.active && !a.record.draining && a.seen_since_start);
        for entry in core.queue(world.now) {
            let Some(app) = core.app(&entry.app_id) else { continue };
            let tasks = core.app_tasks(&app.id);
            let rolling =
                tasks.iter().any(|t| t.kill_requested || t.version != app.config_version || !is_live(t.state));
            prop_assert!(
                !entry.stats.last_round.is_empty() || !offers || rolling,
                "{op:?}: {} is short of {} tasks without a reason",
                app.id,
                entry.count
            );
        }
    }
    // 5. A deleted and re-created app keeps nothing of its old self (no deployment, no
    //    version, not its definition), unless the deletion itself was rolled back.
    for (id, gone) in world.deleted.iter().filter(|(id, _)| core.app(id).is_some()) {
        let now = world.incarnation(id);
        let kept: Vec<_> = now.deployments.intersection(&gone.deployments).collect();
        prop_assert!(kept.is_empty(), "{op:?}: deployments {kept:?} of the deleted {id} survive");
        let versions: Vec<_> = now.versions.intersection(&gone.versions).collect();
        prop_assert!(versions.is_empty(), "{op:?}: versions {versions:?} of the deleted {id} are back");
        if let Some(cmd) = core.app(id).and_then(|a| a.definition.cmd.clone()) {
            prop_assert!(!gone.commands.contains(&cmd), "{op:?}: the deleted definition of {id} ({cmd}) is back");
        }
    }
    Ok(())
}

/// What the store holds for `core`: its records (the master writes every changed one
/// before it answers, so after any command the store equals these).
fn stored(core: &Core) -> Snapshot {
    let mut app_versions = Vec::new();
    for app in core.apps() {
        for version in core.app_versions(&app.id).unwrap_or_default() {
            if let Some(def) = core.app_version(&app.id, &version) {
                app_versions.push((app.id.clone(), version, def.clone()));
            }
        }
    }
    Snapshot {
        apps: core.apps().cloned().collect(),
        app_versions,
        tasks: core.tasks().cloned().collect(),
        agents: core.agents().map(|a| a.record.clone()).collect(),
        deployments: core.deployments().cloned().collect(),
        groups: core.group_records().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut world = World::new();
    for op in ops {
        let before: BTreeSet<_> = world.core.tasks().map(|t| t.id.clone()).collect();
        world.apply(op);
        let mut launched: BTreeMap<AppId, usize> = BTreeMap::new();
        for task in world.core.tasks().filter(|t| !before.contains(&t.id)) {
            *launched.entry(task.app_id.clone()).or_default() += 1;
        }
        check(&mut world, op, &launched)?;
    }
    Ok(())
}

/// A few seconds in a test run; `PROPTEST_CASES=5000` searches longer.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256);
    Config { cases, failure_persistence: None, ..Config::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn invariants_hold_over_random_histories(ops in proptest::collection::vec(op(), 1..80)) {
        run(&ops)?;
    }
}
