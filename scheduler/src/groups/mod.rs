//! Marathon's application groups and app `dependencies`, planned inside the core.
//!
//! Groups are derived from app ids (`/a/b/c` lives in `/a` and `/a/b`). What app ids
//! cannot carry — explicitly created (possibly empty) groups, group-level `dependencies`
//! and group versions — is a [`GroupRecord`] per group path, kept by the core and written
//! with the apps' changes in one store transaction ([`crate::Changes::groups`]). Every request is
//! validated as a whole (ids, unknown dependency targets, dependency cycles across the
//! request and the existing apps) before anything changes. Dependencies order the plan:
//! apps start after what they depend on, and stop before it.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use plinth_protocol::views::deployment::{DeploymentAction, DeploymentStep, DeploymentSteps};
use plinth_protocol::views::events::GroupChangeSuccess;
use plinth_protocol::{AppDefinition, AppId, DeploymentId, Timestamp, Violation};

use crate::error::CoreError;
pub use crate::model::{GroupRecord, GroupRecords, GroupSnapshot};

mod paths;
mod rollback;
use crate::state::Core;
pub use paths::{ancestors, is_within, parent, resolve, under};

/// Group versions remembered per group (oldest dropped first), with their snapshots.
const MAX_GROUP_VERSIONS: usize = 50;

/// A group request refused as a whole; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The group or one of its apps exists already (409).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// Ids, dependencies or cycles (422), with the request paths they are at.
    #[error("Object is not valid")]
    Invalid(Vec<Violation>),
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// A group request carried out: its plan, the deployments it started and the one id to
/// follow (the first deployment, or a fresh already finished one when no app changed).
#[derive(Debug)]
pub struct GroupChange {
    pub group: String,
    pub plan: GroupPlan,
    pub deployments: Vec<DeploymentId>,
    pub deployment: DeploymentId,
}

impl Core {
    /// Every group record (explicit groups, group dependencies and versions).
    pub fn group_records(&self) -> &GroupRecords {
        &self.groups
    }

    /// Every group path: the root, the apps' enclosing groups and the explicit ones.
    pub fn group_paths(&self) -> BTreeSet<String> {
        group_paths(self.apps.keys().map(AppId::as_str), &self.groups)
    }

    /// Checks a request against the current state and works out what it would do
    /// (`dryRun`); changes nothing.
    pub fn plan_groups(&self, request: &GroupRequest, now: Timestamp) -> Result<GroupPlan, GroupError> {
        plan(self, &self.groups, request, now)
    }

    /// Plans and carries out a group request: the app actions in order, then the group
    /// records, all in this call's [`crate::Changes`] (one store transaction). `force` overrides
    /// app locks of updates.
    pub fn change_groups(
        &mut self,
        request: &GroupRequest,
        force: bool,
        now: Timestamp,
    ) -> Result<GroupChange, GroupError> {
        let mut plan = self.plan_groups(request, now)?;
        let deployments = execute(self, &plan, force, now)?;
        // After the apps changed: their versions now are what the new group versions hold.
        self.record_snapshots(&mut plan.groups, &plan.version);
        let changed: Vec<String> = plan
            .groups
            .iter()
            .filter(|(path, record)| self.groups.get(*path) != Some(record))
            .map(|(path, _)| path.clone())
            .chain(self.groups.keys().filter(|path| !plan.groups.contains_key(*path)).cloned())
            .collect();
        self.changes.groups.extend(changed);
        self.groups = plan.groups.clone();
        let group = request.group().to_string();
        let deployment = match deployments.first() {
            Some(d) => d.clone(),
            None => DeploymentId::new(self.uuid().to_string()),
        };
        self.emit(now, &GroupChangeSuccess { group_id: group.clone(), version: plan.version.clone() });
        Ok(GroupChange { group, plan, deployments, deployment })
    }

    /// The dependency cycle a new app would close with the existing apps and groups, e.g.
    /// `["/a", "/b", "/a"]` (`POST /v2/apps` refuses it as `/v2/groups` does).
    pub fn dependency_cycle(&self, def: &AppDefinition) -> Option<Vec<String>> {
        let id = AppId::parse(&def.id).ok()?;
        let mut apps: BTreeMap<AppId, AppDefinition> =
            self.apps.values().map(|a| (a.id.clone(), AppDefinition::clone(&a.definition))).collect();
        apps.insert(id.clone(), def.clone());
        let groups = group_paths(apps.keys().map(AppId::as_str), &self.groups);
        let graph = dependency_graph(&apps, &self.groups, &groups);
        // A path from what the app depends on back to the app (a cycle an older master let
        // in elsewhere is not this app's fault).
        let start = id.to_string();
        let mut came_from: HashMap<&str, &str> = HashMap::new();
        let mut todo = vec![start.as_str()];
        while let Some(node) = todo.pop() {
            for next in graph.edges.get(node).into_iter().flatten() {
                if next == &start {
                    let mut cycle = vec![start.clone(), node.to_string()];
                    let mut at = node;
                    while let Some(previous) = came_from.get(at) {
                        cycle.push(previous.to_string());
                        at = previous;
                    }
                    cycle.reverse();
                    return Some(cycle);
                }
                if !came_from.contains_key(next.as_str()) {
                    came_from.insert(next, node);
                    todo.push(next);
                }
            }
        }
        None
    }
}

/// One group of a request body, ids resolved (the API parses bodies into these).
#[derive(Debug)]
pub struct GroupSpec {
    pub id: String,
    /// Where it sits in the body (`""` top, `/groups(0)`, ...), for 422 paths.
    pub json_path: String,
    pub apps: Option<Vec<AppSpec>>,
    pub groups: Option<Vec<GroupSpec>>,
    pub dependencies: Option<Vec<String>>,
}

#[derive(Debug)]
pub struct AppSpec {
    pub id: AppId,
    pub json_path: String,
    pub def: AppDefinition,
}

impl GroupSpec {
    pub fn all_apps(&self) -> Vec<&AppSpec> {
        let mut out: Vec<&AppSpec> = self.apps.iter().flatten().collect();
        for g in self.groups.iter().flatten() {
            out.extend(g.all_apps());
        }
        out
    }

    pub fn all_groups(&self) -> Vec<&GroupSpec> {
        let mut out = vec![self];
        for g in self.groups.iter().flatten() {
            out.extend(g.all_groups());
        }
        out
    }
}

/// What a group request asks for.
#[derive(Debug)]
pub enum GroupRequest {
    Create(GroupSpec),
    Update {
        spec: GroupSpec,
        force: bool,
    },
    Scale {
        id: String,
        factor: f64,
        force: bool,
    },
    Delete {
        id: String,
    },
    /// Back to what the group held at one of its versions (`{"version": ...}`).
    Rollback {
        id: String,
        version: String,
        force: bool,
    },
}

impl GroupRequest {
    /// The group the request is about.
    pub fn group(&self) -> &str {
        match self {
            GroupRequest::Create(spec) | GroupRequest::Update { spec, .. } => &spec.id,
            GroupRequest::Scale { id, .. } | GroupRequest::Delete { id } | GroupRequest::Rollback { id, .. } => id,
        }
    }
}

/// One change to one app.
#[derive(Debug, Clone)]
pub enum Action {
    Stop(AppId),
    Start(AppDefinition),
    /// A new definition; `restart` when more than `instances` changed.
    Update {
        def: AppDefinition,
        restart: bool,
    },
}

impl Action {
    pub fn app(&self) -> String {
        match self {
            Action::Stop(id) => id.to_string(),
            Action::Start(def) | Action::Update { def, .. } => def.id.clone(),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Action::Stop(_) => "StopApplication",
            Action::Start(_) => "StartApplication",
            Action::Update { restart: true, .. } => "RestartApplication",
            Action::Update { restart: false, .. } => "ScaleApplication",
        }
    }
}

/// A validated request: app actions in execution order, grouped into steps
/// (dependencies first), and the group metadata afterwards.
#[derive(Debug)]
pub struct GroupPlan {
    pub steps: Vec<Vec<Action>>,
    /// Every group record after the change.
    pub groups: GroupRecords,
    pub version: String,
}

impl GroupPlan {
    /// Marathon's steps of the plan (the answer of a dry run).
    pub fn steps_view(&self) -> DeploymentSteps {
        DeploymentSteps {
            steps: self
                .steps
                .iter()
                .map(|step| DeploymentStep {
                    actions: step
                        .iter()
                        .map(|a| DeploymentAction { action: a.name().to_string(), app: a.app() })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Every group path: the root, the apps' enclosing groups and the explicit ones.
pub(crate) fn group_paths<'a>(apps: impl Iterator<Item = &'a str>, meta: &GroupRecords) -> BTreeSet<String> {
    let mut groups = BTreeSet::from(["/".to_string()]);
    for path in apps {
        groups.extend(ancestors(path).map(String::from));
    }
    for path in meta.keys() {
        groups.insert(path.clone());
        groups.extend(ancestors(path).map(String::from));
    }
    groups
}

/// Whether `definition` would change nothing for `current` (service ports left at 0
/// keep the ones already assigned).
fn unchanged(current: &AppDefinition, definition: &AppDefinition) -> bool {
    let mut new = definition.clone();
    for (n, c) in new.port_definitions.iter_mut().flatten().zip(current.port_definitions.iter().flatten()) {
        if n.port == 0 {
            n.port = c.port;
        }
    }
    if let (Some(new_maps), Some(cur_maps)) = (port_mappings_mut(&mut new), current.container_port_mappings()) {
        for (n, c) in new_maps.iter_mut().zip(cur_maps) {
            if n.service_port == 0 {
                n.service_port = c.service_port;
            }
        }
    }
    let strip = |d: &AppDefinition| {
        let mut d = d.clone();
        d.version = None;
        d.version_info = None;
        d
    };
    strip(current) == strip(&new)
}

fn port_mappings_mut(def: &mut AppDefinition) -> Option<&mut Vec<plinth_protocol::marathon::PortMapping>> {
    let container = def.container.as_mut()?;
    match container.port_mappings.as_mut() {
        Some(m) => Some(m),
        None => container.docker.as_mut().and_then(|d| d.port_mappings.as_mut()),
    }
}

/// Whether only `instances` differs.
fn only_scaled(current: &AppDefinition, definition: &AppDefinition) -> bool {
    let mut scaled = current.clone();
    scaled.instances = definition.instances;
    unchanged(&scaled, definition)
}

/// The dependency graph of a whole state: apps and groups are nodes (their paths never
/// clash, checked before); an app points at what it depends on (its own
/// `dependencies` and its enclosing groups'), a group at everything in it.
pub struct Graph {
    pub edges: BTreeMap<String, Vec<String>>,
    /// `(declared by, target)` for targets that are neither an app nor a group.
    pub unknown: Vec<(String, String)>,
}

pub fn dependency_graph(
    apps: &BTreeMap<AppId, AppDefinition>,
    meta: &GroupRecords,
    groups: &BTreeSet<String>,
) -> Graph {
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unknown = Vec::new();
    let exists = |path: &str| groups.contains(path) || AppId::parse(path).is_ok_and(|id| apps.contains_key(&id));
    for (id, def) in apps {
        let node = id.to_string();
        let mut targets = Vec::new();
        for raw in &def.dependencies {
            match resolve(id.parent(), raw) {
                Ok(target) if exists(&target) => targets.push(target),
                Ok(target) => unknown.push((node.clone(), target)),
                Err(_) => unknown.push((node.clone(), raw.clone())),
            }
        }
        for group in ancestors(id.as_str()) {
            for target in meta.get(group).map(|r| r.dependencies.as_slice()).unwrap_or_default() {
                if exists(target) {
                    targets.push(target.clone());
                }
            }
        }
        edges.entry(parent(&node).to_string()).or_default().push(node.clone());
        edges.entry(node).or_default().extend(targets);
    }
    for (group, record) in meta {
        for target in &record.dependencies {
            if !exists(target) {
                unknown.push((group.clone(), target.clone()));
            }
        }
    }
    for group in groups {
        if group != "/" {
            edges.entry(parent(group).to_string()).or_default().push(group.clone());
        }
        edges.entry(group.clone()).or_default();
    }
    for targets in edges.values_mut() {
        targets.sort();
        targets.dedup();
    }
    Graph { edges, unknown }
}

/// Depth levels (0 = depends on nothing) of every node, or the first cycle found.
pub fn levels(graph: &Graph) -> Result<HashMap<String, usize>, Vec<String>> {
    #[derive(PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    let mut level: HashMap<String, usize> = HashMap::new();
    let no_edges = Vec::new();
    for start in graph.edges.keys() {
        if marks.contains_key(start.as_str()) {
            continue;
        }
        // Iterative depth-first search: long dependency chains cannot overflow the stack.
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        marks.insert(start, Mark::Open);
        while let Some(&(node, index)) = stack.last() {
            let targets = graph.edges.get(node).unwrap_or(&no_edges);
            if let Some(next) = targets.get(index) {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                match marks.get(next.as_str()) {
                    None => {
                        marks.insert(next, Mark::Open);
                        stack.push((next, 0));
                    }
                    Some(Mark::Open) => {
                        let from = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[from..].iter().map(|(n, _)| n.to_string()).collect();
                        cycle.push(next.clone());
                        return Err(cycle);
                    }
                    Some(Mark::Done) => {}
                }
            } else {
                let depth = targets.iter().filter_map(|t| level.get(t)).map(|l| l + 1).max().unwrap_or(0);
                level.insert(node.to_string(), depth);
                marks.insert(node, Mark::Done);
                stack.pop();
            }
        }
    }
    Ok(level)
}

/// Checks the request against the current state and works out what to do.
fn plan(core: &Core, meta: &GroupRecords, request: &GroupRequest, now: Timestamp) -> Result<GroupPlan, GroupError> {
    let current: BTreeMap<AppId, AppDefinition> =
        core.apps().map(|a| (a.id.clone(), AppDefinition::clone(&a.definition))).collect();
    let current_groups = group_paths(current.keys().map(AppId::as_str), meta);
    let mut target = current.clone();
    let mut target_meta = meta.clone();
    let version = now.to_iso();
    // Where each app or group of the body sits in it, for error paths.
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    let mut force = false;
    let touched_group: String;

    match request {
        GroupRequest::Create(spec) => {
            if current_groups.contains(&spec.id) {
                return Err(GroupError::Conflict(format!(
                    "Group {} is already created. Use PUT to change this group.",
                    spec.id
                )));
            }
            if let Some(app) = spec.all_apps().into_iter().find(|a| current.contains_key(&a.id)) {
                return Err(CoreError::AppExists(app.id.clone()).into());
            }
            apply_spec(spec, &mut target, &mut target_meta, &current_groups, &mut origin);
            touched_group = spec.id.clone();
        }
        GroupRequest::Update { spec, force: f } => {
            force = *f;
            apply_spec(spec, &mut target, &mut target_meta, &current_groups, &mut origin);
            touched_group = spec.id.clone();
        }
        GroupRequest::Scale { id, factor, force: f } => {
            force = *f;
            if !current_groups.contains(id) {
                return Err(GroupError::NotFound(format!("Group '{id}' does not exist")));
            }
            for (_, def) in target.iter_mut().filter(|(app, _)| is_within(app.as_str(), id)) {
                // Marathon rounds up so a scaled group never loses an app entirely.
                let scaled = (def.instances as f64 * factor).ceil();
                // why: cast only when finite and below i64::MAX.
                #[allow(clippy::cast_possible_truncation)]
                let instances =
                    if scaled.is_finite() && scaled < i64::MAX as f64 { scaled as i64 } else { def.instances };
                def.instances = instances;
            }
            touched_group = id.clone();
        }
        GroupRequest::Rollback { id, version: wanted, force: f } => {
            force = *f;
            if !current_groups.contains(id) {
                return Err(GroupError::NotFound(format!("Group '{id}' does not exist")));
            }
            rollback::apply(core, meta, id, wanted, &mut target, &mut target_meta)?;
            touched_group = id.clone();
        }
        GroupRequest::Delete { id } => {
            if !current_groups.contains(id) {
                return Err(GroupError::NotFound(format!("Group '{id}' does not exist")));
            }
            target.retain(|app, _| !is_within(app.as_str(), id));
            target_meta.retain(|path, _| !is_within(path, id));
            touched_group = id.clone();
        }
    }

    // Versions: the changed group, its enclosing groups and the groups of the body.
    let mut versioned: BTreeSet<String> = ancestors(&touched_group).map(String::from).collect();
    if !matches!(request, GroupRequest::Delete { .. }) {
        versioned.insert(touched_group.clone());
    }
    if let GroupRequest::Create(spec) | GroupRequest::Update { spec, .. } = request {
        versioned.extend(spec.all_groups().into_iter().map(|g| g.id.clone()));
    }
    for path in versioned {
        let record = target_meta.entry(path).or_default();
        record.versions.push(version.clone());
        let excess = record.versions.len().saturating_sub(MAX_GROUP_VERSIONS);
        record.versions.drain(..excess);
    }

    let target_groups = group_paths(target.keys().map(AppId::as_str), &target_meta);
    let mut violations = Vec::new();
    let path_of = |node: &str, origin: &BTreeMap<String, String>| origin.get(node).map(|p| under(p, "/dependencies"));
    for app in target.keys() {
        if target_groups.contains(app.as_str()) {
            let path = origin.get(app.as_str()).map(|p| under(p, "/id")).unwrap_or_else(|| "/id".into());
            violations.push(Violation { path, errors: vec![format!("'{app}' is both an app and a group")] });
        }
    }
    if !violations.is_empty() {
        return Err(GroupError::Invalid(violations));
    }
    let graph = dependency_graph(&target, &target_meta, &target_groups);
    for (node, dep) in &graph.unknown {
        // Only what this request declares is its fault; older dangling ids are ignored.
        if let Some(path) = path_of(node, &origin) {
            violations
                .push(Violation { path, errors: vec![format!("dependency '{dep}' is neither an app nor a group")] });
        }
    }
    if !violations.is_empty() {
        return Err(GroupError::Invalid(violations));
    }
    let target_levels = levels(&graph).map_err(|cycle| {
        let path = cycle.iter().find_map(|n| path_of(n, &origin)).unwrap_or_else(|| "/dependencies".into());
        GroupError::Invalid(vec![Violation { path, errors: vec![format!("dependency cycle: {}", cycle.join(" -> "))] }])
    })?;
    // The current state had no cycle (it was checked when made); if an older master let
    // one in, stops are simply unordered.
    let current_levels = levels(&dependency_graph(&current, meta, &current_groups)).unwrap_or_default();

    // Stops: dependents (deepest) first.
    let mut stops: Vec<&AppId> = current.keys().filter(|id| !target.contains_key(*id)).collect();
    let stop_level = |id: &AppId| current_levels.get(id.as_str()).copied().unwrap_or(0);
    stops.sort_by_key(|id| (std::cmp::Reverse(stop_level(id)), (*id).clone()));
    let mut steps: Vec<Vec<Action>> = Vec::new();
    let mut last_level = None;
    for id in stops {
        if last_level != Some(stop_level(id)) {
            steps.push(Vec::new());
            last_level = Some(stop_level(id));
        }
        if let Some(step) = steps.last_mut() {
            step.push(Action::Stop(id.clone()));
        }
    }
    // Starts and updates: dependencies (shallowest) first.
    let mut changes: Vec<(usize, Action)> = Vec::new();
    for (id, def) in &target {
        let level = target_levels.get(id.as_str()).copied().unwrap_or(0);
        match current.get(id) {
            None => changes.push((level, Action::Start(def.clone()))),
            Some(old) if unchanged(old, def) => {}
            Some(old) => {
                if !force {
                    let deployments: Vec<DeploymentId> =
                        core.app_deployments(id).iter().map(|d| d.id.clone()).collect();
                    if !deployments.is_empty() {
                        return Err(CoreError::AppLocked { app: id.clone(), deployments }.into());
                    }
                }
                changes.push((level, Action::Update { def: def.clone(), restart: !only_scaled(old, def) }));
            }
        }
    }
    changes.sort_by_key(|(level, a)| (*level, a.app()));
    let mut last_level = None;
    for (level, action) in changes {
        if last_level != Some(level) {
            steps.push(Vec::new());
            last_level = Some(level);
        }
        if let Some(step) = steps.last_mut() {
            step.push(action);
        }
    }
    Ok(GroupPlan { steps, groups: target_meta, version })
}

/// Applies a group body to the target state: its dependencies, its apps (apps of the
/// group missing from a given `apps` list are removed, as Marathon does), its nested
/// groups likewise.
fn apply_spec(
    spec: &GroupSpec,
    apps: &mut BTreeMap<AppId, AppDefinition>,
    meta: &mut GroupRecords,
    current_groups: &BTreeSet<String>,
    origin: &mut BTreeMap<String, String>,
) {
    origin.insert(spec.id.clone(), spec.json_path.clone());
    let record = meta.entry(spec.id.clone()).or_default();
    if let Some(deps) = &spec.dependencies {
        record.dependencies = deps.clone();
    }
    if let Some(list) = &spec.apps {
        let keep: BTreeSet<&AppId> = list.iter().map(|a| &a.id).collect();
        apps.retain(|id, _| id.parent() != spec.id || keep.contains(id));
        for app in list {
            origin.insert(app.id.to_string(), app.json_path.clone());
            apps.insert(app.id.clone(), app.def.clone());
        }
    }
    if let Some(list) = &spec.groups {
        let keep: BTreeSet<&str> = list.iter().map(|g| g.id.as_str()).collect();
        let dropped: Vec<&String> =
            current_groups.iter().filter(|g| *g != "/" && parent(g) == spec.id && !keep.contains(g.as_str())).collect();
        for group in dropped {
            apps.retain(|id, _| !is_within(id.as_str(), group));
            meta.retain(|path, _| !is_within(path, group));
        }
        for child in list {
            apply_spec(child, apps, meta, current_groups, origin);
        }
    }
}

/// Carries out a plan's app actions in order. Only core errors that validation cannot
/// foresee (service ports running out) can stop it part-way.
fn execute(core: &mut Core, plan: &GroupPlan, force: bool, now: Timestamp) -> Result<Vec<DeploymentId>, CoreError> {
    let mut deployments = Vec::new();
    for action in plan.steps.iter().flatten() {
        let deployment = match action {
            Action::Stop(id) => core.delete_app(id, now)?.0,
            Action::Start(def) => core.create_app(def.clone(), now)?.1,
            Action::Update { def, .. } => core.put_app(def.clone(), now, force)?.deployment,
        };
        deployments.push(deployment);
    }
    Ok(deployments)
}
