//! `/v2/groups`: Marathon's application groups and app `dependencies`.
//!
//! Groups are derived from app ids (`/a/b/c` lives in `/a` and `/a/b`). What app ids
//! cannot carry — explicitly created (possibly empty) groups, group-level
//! `dependencies` and group versions — lives in `groups.json` in the data dir, written
//! atomically after the apps' changes are durable. Every request is validated as a
//! whole (definitions, ids, unknown dependency targets, dependency cycles across the
//! request and the existing apps) before anything changes, and all app changes of one
//! request run in one [`Master::command`], so one store transaction. Dependencies order
//! the plan: apps start after what they depend on, and stop before it.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{OriginalUri, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use plinth_protocol::{AppDefinition, AppId, BodyError, DeploymentId, Timestamp, Violation};

use super::{app_json, Body, Embed, Params};
use crate::error::ApiError;
use crate::server::Master;
use plinth_scheduler::{AppRecord, Core, CoreError, Event};

/// File in the data dir with what groups add to apps.
const META_FILE: &str = "groups.json";
/// Group versions remembered per group (oldest dropped first).
const MAX_GROUP_VERSIONS: usize = 50;

/// Serialises group changes: the metadata file is read, planned against and rewritten
/// by one request at a time.
static META_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A group refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The group or one of its apps exists already (409).
    #[error("{0}")]
    Conflict(String),
    #[error("cannot {operation} {path}")]
    Meta { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot decode {path} (damaged or from a newer version)")]
    MetaDecode { path: PathBuf, source: serde_json::Error },
}

impl From<CoreError> for GroupError {
    fn from(e: CoreError) -> Self {
        GroupError::Api(ApiError::Core(e))
    }
}

fn invalid(path: impl Into<String>, error: impl Into<String>) -> GroupError {
    GroupError::Api(ApiError::Invalid(vec![Violation { path: path.into(), errors: vec![error.into()] }]))
}

impl IntoResponse for GroupError {
    fn into_response(self) -> Response {
        match self {
            GroupError::Api(e) => e.into_response(),
            GroupError::Conflict(message) => (StatusCode::CONFLICT, Json(json!({"message": message}))).into_response(),
            e @ (GroupError::Meta { .. } | GroupError::MetaDecode { .. }) => {
                let chain = match std::error::Error::source(&e) {
                    Some(source) => format!("{e}: {source}"),
                    None => e.to_string(),
                };
                ApiError::Internal(chain).into_response()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Group metadata

/// What the group API knows about one group beyond its apps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupRecord {
    /// Absolute paths (apps or groups) every app in this group depends on.
    #[serde(default)]
    dependencies: Vec<String>,
    /// Versions (ISO timestamps) at which the group changed, oldest first.
    #[serde(default)]
    versions: Vec<String>,
}

/// Groups created or changed through `/v2/groups`, by absolute path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct GroupMeta {
    #[serde(default)]
    groups: BTreeMap<String, GroupRecord>,
}

fn meta_path(dir: &Path) -> PathBuf {
    dir.join(META_FILE)
}

async fn load_meta(dir: &Path) -> Result<GroupMeta, GroupError> {
    let path = meta_path(dir);
    match tokio::fs::read(&path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| GroupError::MetaDecode { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GroupMeta::default()),
        Err(source) => Err(GroupError::Meta { operation: "read", path, source }),
    }
}

/// Writes the metadata durably: a temp file, fsync, rename over the old one, fsync the dir.
async fn save_meta(dir: &Path, meta: &GroupMeta) -> Result<(), GroupError> {
    let path = meta_path(dir);
    let bytes =
        serde_json::to_vec_pretty(meta).map_err(|e| ApiError::Internal(format!("cannot encode groups: {e}")))?;
    let dir = dir.to_path_buf();
    let target = path.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let tmp = dir.join(format!("{META_FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("group writer panicked: {e}")))?
    .map_err(|source| GroupError::Meta { operation: "write", path, source })
}

// ---------------------------------------------------------------------------------------
// Paths

/// The group holding `path` (`/a/b` → `/a`, `/a` → `/`).
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Every enclosing group of `path`, nearest first, ending with `/`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut current = path;
    std::iter::from_fn(move || {
        if current == "/" {
            return None;
        }
        current = parent(current);
        Some(current)
    })
}

/// Whether `path` is `group` or lies inside it.
fn is_within(path: &str, group: &str) -> bool {
    group == "/" || path == group || path.strip_prefix(group).is_some_and(|rest| rest.starts_with('/'))
}

/// Resolves a Marathon id or dependency against a group: absolute ids stay, relative
/// ones join the group, `.` and `..` segments are followed. Segments are checked as app
/// ids are. The root itself comes back as `/`.
fn resolve(base: &str, raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    let mut segments: Vec<&str> =
        if raw.starts_with('/') { Vec::new() } else { base.split('/').filter(|s| !s.is_empty()).collect() };
    for segment in raw.split('/').filter(|s| !s.is_empty()) {
        match segment {
            "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(format!("'{raw}' leads above the root group"));
                }
            }
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        return Ok("/".into());
    }
    let path = format!("/{}", segments.join("/"));
    AppId::parse(&path).map_err(|e| e.to_string())?;
    Ok(path)
}

/// A violation path under a request path prefix (`""` is the body's top level).
fn under(prefix: &str, rest: &str) -> String {
    match (prefix, rest) {
        ("", "") => "/".into(),
        ("", rest) => rest.into(),
        (prefix, "/") | (prefix, "") => prefix.into(),
        (prefix, rest) => format!("{prefix}{rest}"),
    }
}

// ---------------------------------------------------------------------------------------
// Request bodies

/// One group of a request body, ids resolved.
#[derive(Debug)]
struct GroupSpec {
    id: String,
    /// Where it sits in the body (`""` top, `/groups(0)`, ...), for 422 paths.
    json_path: String,
    apps: Option<Vec<AppSpec>>,
    groups: Option<Vec<GroupSpec>>,
    dependencies: Option<Vec<String>>,
}

#[derive(Debug)]
struct AppSpec {
    id: AppId,
    json_path: String,
    def: AppDefinition,
}

impl GroupSpec {
    fn all_apps(&self) -> Vec<&AppSpec> {
        let mut out: Vec<&AppSpec> = self.apps.iter().flatten().collect();
        for g in self.groups.iter().flatten() {
            out.extend(g.all_apps());
        }
        out
    }

    fn all_groups(&self) -> Vec<&GroupSpec> {
        let mut out = vec![self];
        for g in self.groups.iter().flatten() {
            out.extend(g.all_groups());
        }
        out
    }
}

/// Parses a group body whose id is already known (`id`), collecting every violation.
fn parse_group(
    value: &Value,
    id: String,
    json_path: String,
    seen: &mut BTreeSet<String>,
    v: &mut Vec<Violation>,
) -> GroupSpec {
    let mut add = |path: String, error: String| v.push(Violation { path, errors: vec![error] });
    let mut spec =
        GroupSpec { id: id.clone(), json_path: json_path.clone(), apps: None, groups: None, dependencies: None };
    let Some(body) = value.as_object() else {
        add(under(&json_path, "/"), "a group must be a JSON object".into());
        return spec;
    };
    if body.get("pods").and_then(Value::as_array).is_some_and(|p| !p.is_empty()) {
        add(under(&json_path, "/pods"), "pods are not supported; use apps".into());
    }
    if let Some(deps) = body.get("dependencies") {
        spec.dependencies = Some(parse_dependencies(deps, &id, &under(&json_path, "/dependencies"), v));
    }
    if let Some(items) = array_field(body, "apps", &json_path, v) {
        let mut parsed = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = under(&json_path, &format!("/apps({i})"));
            if let Some(app) = parse_app(item, &id, &path, seen, v) {
                parsed.push(app);
            }
        }
        spec.apps = Some(parsed);
    }
    if let Some(items) = array_field(body, "groups", &json_path, v) {
        let mut parsed = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = under(&json_path, &format!("/groups({i})"));
            let Some(raw) = item.get("id").and_then(Value::as_str) else {
                v.push(Violation { path: format!("{path}/id"), errors: vec!["a nested group needs an id".into()] });
                continue;
            };
            match resolve(&id, raw) {
                Ok(child) if parent(&child) == id && child != "/" => {
                    if !seen.insert(child.clone()) {
                        v.push(Violation {
                            path: format!("{path}/id"),
                            errors: vec![format!("'{child}' is given twice")],
                        });
                        continue;
                    }
                    parsed.push(parse_group(item, child, path, seen, v));
                }
                Ok(child) => v.push(Violation {
                    path: format!("{path}/id"),
                    errors: vec![format!("group '{child}' is not a direct child of '{id}'")],
                }),
                Err(e) => v.push(Violation { path: format!("{path}/id"), errors: vec![e] }),
            }
        }
        spec.groups = Some(parsed);
    }
    spec
}

/// The array under `key` when given; anything else there is a violation.
fn array_field<'a>(
    body: &'a serde_json::Map<String, Value>,
    key: &str,
    json_path: &str,
    v: &mut Vec<Violation>,
) -> Option<&'a Vec<Value>> {
    let value = body.get(key)?;
    if value.is_null() {
        return None;
    }
    let items = value.as_array();
    if items.is_none() {
        v.push(Violation {
            path: under(json_path, &format!("/{key}")),
            errors: vec![format!("must be an array of {key}")],
        });
    }
    items
}

/// Dependencies of a group or app, resolved against `base` (the group holding them).
fn parse_dependencies(value: &Value, base: &str, path: &str, v: &mut Vec<Violation>) -> Vec<String> {
    let Some(items) = value.as_array() else {
        v.push(Violation { path: path.into(), errors: vec!["must be an array of ids".into()] });
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}({i})");
        match item.as_str().map(|raw| resolve(base, raw)) {
            Some(Ok(dep)) if dep == "/" => {
                v.push(Violation { path: item_path, errors: vec!["cannot depend on the root group".into()] })
            }
            Some(Ok(dep)) => out.push(dep),
            Some(Err(e)) => v.push(Violation { path: item_path, errors: vec![e] }),
            None => v.push(Violation { path: item_path, errors: vec!["must be a string".into()] }),
        }
    }
    out
}

/// An app of a group body: its id and dependencies made absolute, then parsed,
/// validated and normalised as `POST /v2/apps` does, violations under `path`.
fn parse_app(
    value: &Value,
    group: &str,
    path: &str,
    seen: &mut BTreeSet<String>,
    v: &mut Vec<Violation>,
) -> Option<AppSpec> {
    let Some(body) = value.as_object() else {
        v.push(Violation { path: path.into(), errors: vec!["an app definition must be a JSON object".into()] });
        return None;
    };
    let Some(raw_id) = body.get("id").and_then(Value::as_str) else {
        v.push(Violation { path: format!("{path}/id"), errors: vec!["an app in a group needs an id".into()] });
        return None;
    };
    let id = match resolve(group, raw_id).and_then(|id| AppId::parse(&id).map_err(|e| e.to_string())) {
        Ok(id) if id.parent() == group => id,
        Ok(id) => {
            v.push(Violation {
                path: format!("{path}/id"),
                errors: vec![format!("app '{id}' is not a direct child of group '{group}'; put it in a nested group")],
            });
            return None;
        }
        Err(e) => {
            v.push(Violation { path: format!("{path}/id"), errors: vec![e] });
            return None;
        }
    };
    if !seen.insert(id.to_string()) {
        v.push(Violation { path: format!("{path}/id"), errors: vec![format!("'{id}' is given twice")] });
        return None;
    }
    let mut body = body.clone();
    body.insert("id".into(), json!(id));
    if let Some(deps) = body.get("dependencies").cloned() {
        let before = v.len();
        let resolved = parse_dependencies(&deps, group, &format!("{path}/dependencies"), v);
        if v.len() > before {
            return None;
        }
        body.insert("dependencies".into(), json!(resolved));
    }
    let prefixed = |violations: Vec<Violation>| {
        violations.into_iter().map(|x| Violation { path: under(path, &x.path), errors: x.errors }).collect::<Vec<_>>()
    };
    let mut def = match AppDefinition::from_value(Value::Object(body)) {
        Ok(def) => def,
        Err(BodyError::Invalid(violations)) => {
            v.extend(prefixed(violations));
            return None;
        }
        Err(BodyError::Malformed(detail)) => {
            v.push(Violation { path: path.into(), errors: vec![detail] });
            return None;
        }
    };
    // Validate before and after folding old forms (which can expose conflicts).
    let checked = def.validate().and_then(|()| {
        def.normalize();
        def.validate()
    });
    if let Err(violations) = checked {
        v.extend(prefixed(violations));
        return None;
    }
    Some(AppSpec { id, json_path: path.into(), def })
}

// ---------------------------------------------------------------------------------------
// Planning

/// What a group request asks for.
#[derive(Debug)]
enum Request {
    Create(GroupSpec),
    Update { spec: GroupSpec, force: bool },
    Scale { id: String, factor: f64, force: bool },
    Delete { id: String },
}

/// One change to one app.
#[derive(Debug, Clone)]
enum Action {
    Stop(AppId),
    Start(AppDefinition),
    /// A new definition; `restart` when more than `instances` changed.
    Update {
        def: AppDefinition,
        restart: bool,
    },
}

impl Action {
    fn app(&self) -> String {
        match self {
            Action::Stop(id) => id.to_string(),
            Action::Start(def) | Action::Update { def, .. } => def.id.clone(),
        }
    }
    fn name(&self) -> &'static str {
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
struct Plan {
    steps: Vec<Vec<Action>>,
    meta: GroupMeta,
    version: String,
}

impl Plan {
    fn to_json(&self) -> Value {
        json!({
            "version": self.version,
            "steps": self.steps.iter().map(|step| json!({
                "actions": step.iter().map(|a| json!({"action": a.name(), "app": a.app()})).collect::<Vec<_>>()
            })).collect::<Vec<_>>(),
        })
    }
}

/// Every group path: the root, the apps' enclosing groups and the explicit ones.
fn group_paths<'a>(apps: impl Iterator<Item = &'a str>, meta: &GroupMeta) -> BTreeSet<String> {
    let mut groups = BTreeSet::from(["/".to_string()]);
    for path in apps {
        groups.extend(ancestors(path).map(String::from));
    }
    for path in meta.groups.keys() {
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
struct Graph {
    edges: BTreeMap<String, Vec<String>>,
    /// `(declared by, target)` for targets that are neither an app nor a group.
    unknown: Vec<(String, String)>,
}

fn dependency_graph(apps: &BTreeMap<AppId, AppDefinition>, meta: &GroupMeta, groups: &BTreeSet<String>) -> Graph {
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
            for target in meta.groups.get(group).map(|r| r.dependencies.as_slice()).unwrap_or_default() {
                if exists(target) {
                    targets.push(target.clone());
                }
            }
        }
        edges.entry(parent(&node).to_string()).or_default().push(node.clone());
        edges.entry(node).or_default().extend(targets);
    }
    for (group, record) in &meta.groups {
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
fn levels(graph: &Graph) -> Result<HashMap<String, usize>, Vec<String>> {
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
fn plan(core: &Core, meta: &GroupMeta, request: &Request, now: Timestamp) -> Result<Plan, GroupError> {
    let current: BTreeMap<AppId, AppDefinition> = core.apps().map(|a| (a.id.clone(), a.definition.clone())).collect();
    let current_groups = group_paths(current.keys().map(AppId::as_str), meta);
    let mut target = current.clone();
    let mut target_meta = meta.clone();
    let version = now.to_iso();
    // Where each app or group of the body sits in it, for error paths.
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    let mut force = false;
    let touched_group: String;

    match request {
        Request::Create(spec) => {
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
        Request::Update { spec, force: f } => {
            force = *f;
            apply_spec(spec, &mut target, &mut target_meta, &current_groups, &mut origin);
            touched_group = spec.id.clone();
        }
        Request::Scale { id, factor, force: f } => {
            force = *f;
            if !current_groups.contains(id) {
                return Err(ApiError::NotFound(format!("Group '{id}' does not exist")).into());
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
        Request::Delete { id } => {
            if !current_groups.contains(id) {
                return Err(ApiError::NotFound(format!("Group '{id}' does not exist")).into());
            }
            target.retain(|app, _| !is_within(app.as_str(), id));
            target_meta.groups.retain(|path, _| !is_within(path, id));
            touched_group = id.clone();
        }
    }

    // Versions: the changed group, its enclosing groups and the groups of the body.
    let mut versioned: BTreeSet<String> = ancestors(&touched_group).map(String::from).collect();
    if !matches!(request, Request::Delete { .. }) {
        versioned.insert(touched_group.clone());
    }
    if let Request::Create(spec) | Request::Update { spec, .. } = request {
        versioned.extend(spec.all_groups().into_iter().map(|g| g.id.clone()));
    }
    for path in versioned {
        let record = target_meta.groups.entry(path).or_default();
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
        return Err(ApiError::Invalid(violations).into());
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
        return Err(ApiError::Invalid(violations).into());
    }
    let target_levels = levels(&graph).map_err(|cycle| {
        let path = cycle.iter().find_map(|n| path_of(n, &origin)).unwrap_or_else(|| "/dependencies".into());
        invalid(path, format!("dependency cycle: {}", cycle.join(" -> ")))
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
    Ok(Plan { steps, meta: target_meta, version })
}

/// Applies a group body to the target state: its dependencies, its apps (apps of the
/// group missing from a given `apps` list are removed, as Marathon does), its nested
/// groups likewise.
fn apply_spec(
    spec: &GroupSpec,
    apps: &mut BTreeMap<AppId, AppDefinition>,
    meta: &mut GroupMeta,
    current_groups: &BTreeSet<String>,
    origin: &mut BTreeMap<String, String>,
) {
    origin.insert(spec.id.clone(), spec.json_path.clone());
    let record = meta.groups.entry(spec.id.clone()).or_default();
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
            meta.groups.retain(|path, _| !is_within(path, group));
        }
        for child in list {
            apply_spec(child, apps, meta, current_groups, origin);
        }
    }
}

/// Carries out a plan's app actions in order. Only core errors that validation cannot
/// foresee (service ports running out) can stop it part-way.
fn execute(core: &mut Core, plan: &Plan, force: bool, now: Timestamp) -> Result<Vec<DeploymentId>, CoreError> {
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

// ---------------------------------------------------------------------------------------
// Handlers

/// `/v2/groups` and `/v2/groups/{*rest}` (nested ids make the path ambiguous for axum).
pub async fn dispatch_root(
    State(master): State<Arc<Master>>,
    method: Method,
    params: Params,
    uri: OriginalUri,
    body: Body,
) -> Result<Response, GroupError> {
    route(&master, method, "", &params, &uri.0, body).await
}

pub async fn dispatch(
    State(master): State<Arc<Master>>,
    method: Method,
    axum::extract::Path(rest): axum::extract::Path<String>,
    params: Params,
    uri: OriginalUri,
    body: Body,
) -> Result<Response, GroupError> {
    route(&master, method, &rest, &params, &uri.0, body).await
}

async fn route(
    master: &Master,
    method: Method,
    rest: &str,
    params: &Params,
    uri: &axum::http::Uri,
    body: Body,
) -> Result<Response, GroupError> {
    let rest = rest.trim_matches('/');
    let (raw_id, versions) = match rest.strip_suffix("versions") {
        Some(group) if group.is_empty() || group.ends_with('/') => (group.trim_end_matches('/'), true),
        _ => (rest, false),
    };
    let id = resolve("/", if raw_id.is_empty() { "/" } else { raw_id })
        .map_err(|e| ApiError::NotFound(format!("Group '/{raw_id}' does not exist ({e})")))?;
    match (method, versions) {
        (Method::GET, false) => show(master, &id, params).await,
        (Method::GET, true) => list_versions(master, &id).await,
        (Method::POST, false) => create(master, &id, params, body).await,
        (Method::PUT, false) => update(master, &id, params, body).await,
        (Method::DELETE, false) => destroy(master, &id).await,
        (method, _) => Err(ApiError::MethodNotAllowed(format!("{method} is not supported on {}", uri.path())).into()),
    }
}

/// Which app details to embed (`embed=group.apps.tasks`, `group.apps.lastTaskFailure`...).
fn embed_of(params: &Params) -> Embed {
    let mut embed = Embed { counts: true, deployments: true, ..Default::default() };
    for item in params.all("embed") {
        if item.ends_with("tasks") {
            embed.tasks = true;
        }
        if item.ends_with("lastTaskFailure") {
            embed.last_task_failure = true;
        }
        if item.ends_with("readiness") {
            embed.readiness = true;
        }
    }
    embed
}

struct Tree<'a> {
    core: &'a Core,
    meta: &'a GroupMeta,
    groups: BTreeSet<String>,
    apps_by_group: BTreeMap<&'a str, Vec<&'a AppRecord>>,
    embed: Embed,
    fallback_version: String,
}

impl<'a> Tree<'a> {
    fn new(core: &'a Core, meta: &'a GroupMeta, embed: Embed, fallback_version: String) -> Self {
        let groups = group_paths(core.apps().map(|a| a.id.as_str()), meta);
        let mut apps_by_group: BTreeMap<&str, Vec<&AppRecord>> = BTreeMap::new();
        for app in core.apps() {
            apps_by_group.entry(app.id.parent()).or_default().push(app);
        }
        Tree { core, meta, groups, apps_by_group, embed, fallback_version }
    }

    /// The group's JSON and its version (the newest change in it).
    fn json(&self, id: &str) -> (Value, String) {
        let record = self.meta.groups.get(id);
        let mut version = record.and_then(|r| r.versions.last().cloned()).unwrap_or_default();
        let apps: Vec<Value> = self
            .apps_by_group
            .get(id)
            .into_iter()
            .flatten()
            .map(|app| {
                version = version.clone().max(app.version.clone());
                app_json(self.core, app, self.embed)
            })
            .collect();
        let mut groups = Vec::new();
        for child in self.groups.iter().filter(|g| *g != "/" && parent(g) == id) {
            let (value, child_version) = self.json(child);
            version = version.max(child_version);
            groups.push(value);
        }
        if version.is_empty() {
            version = self.fallback_version.clone();
        }
        let dependencies = record.map(|r| r.dependencies.clone()).unwrap_or_default();
        let value = json!({"id": id, "apps": apps, "groups": groups, "pods": [], "dependencies": dependencies, "version": version});
        (value, version)
    }
}

async fn show(master: &Master, id: &str, params: &Params) -> Result<Response, GroupError> {
    let meta = load_meta(&master.config.data_dir).await?;
    let guard = master.read().await;
    let tree = Tree::new(&guard.core, &meta, embed_of(params), master.started_at.to_iso());
    if !tree.groups.contains(id) {
        return Err(ApiError::NotFound(format!("Group '{id}' does not exist")).into());
    }
    Ok(Json(tree.json(id).0).into_response())
}

async fn list_versions(master: &Master, id: &str) -> Result<Response, GroupError> {
    let meta = load_meta(&master.config.data_dir).await?;
    let guard = master.read().await;
    let core = &guard.core;
    let groups = group_paths(core.apps().map(|a| a.id.as_str()), &meta);
    if !groups.contains(id) {
        return Err(ApiError::NotFound(format!("Group '{id}' does not exist")).into());
    }
    let mut versions: BTreeSet<String> =
        meta.groups.get(id).map(|r| r.versions.iter().cloned().collect()).unwrap_or_default();
    for app in core.apps().filter(|a| is_within(a.id.as_str(), id)) {
        versions.extend(core.app_versions(&app.id).unwrap_or_default());
    }
    // Newest first, as Marathon lists versions.
    Ok(Json(versions.into_iter().rev().collect::<Vec<_>>()).into_response())
}

async fn create(master: &Master, url_id: &str, params: &Params, body: Body) -> Result<Response, GroupError> {
    let value = body.value()?;
    let raw = value.get("id").and_then(Value::as_str);
    let id = match (url_id, raw) {
        (_, Some(raw)) => resolve(url_id, raw).map_err(|e| invalid("/id", e))?,
        ("/", None) => return Err(invalid("/id", "a new group needs an id")),
        (url_id, None) => url_id.to_string(),
    };
    if id == "/" {
        return Err(GroupError::Conflict("The root group always exists. Use PUT to change it.".into()));
    }
    let spec = parse_body(&value, id.clone())?;
    let dry_run = params.flag("dryRun")?;
    let (status, body) = change(master, Request::Create(spec), false, dry_run).await?;
    let status = if status == StatusCode::OK && !dry_run { StatusCode::CREATED } else { status };
    Ok((status, [(header::LOCATION, format!("/v2/groups{id}"))], Json(body)).into_response())
}

async fn update(master: &Master, id: &str, params: &Params, body: Body) -> Result<Response, GroupError> {
    let value = body.value()?;
    let force = params.flag("force")?;
    let dry_run = params.flag("dryRun")?;
    let has_content = ["apps", "groups", "dependencies"].iter().any(|k| value.get(k).is_some());
    let request = if let Some(factor) = value.get("scaleBy") {
        let factor = factor
            .as_f64()
            .filter(|f| f.is_finite() && *f > 0.0)
            .ok_or_else(|| invalid("/scaleBy", "must be a number greater than 0"))?;
        if has_content {
            return Err(invalid("/scaleBy", "cannot be combined with apps, groups or dependencies"));
        }
        Request::Scale { id: id.to_string(), factor, force }
    } else {
        if let (Some(version), false) = (value.get("version").and_then(Value::as_str), has_content) {
            return Err(invalid(
                "/version",
                format!("rolling a group back to version '{version}' is not supported; PUT the definitions instead"),
            ));
        }
        Request::Update { spec: parse_body(&value, id.to_string())?, force }
    };
    let (status, body) = change(master, request, force, dry_run).await?;
    Ok((status, Json(body)).into_response())
}

async fn destroy(master: &Master, id: &str) -> Result<Response, GroupError> {
    let (status, body) = change(master, Request::Delete { id: id.to_string() }, true, false).await?;
    Ok((status, Json(body)).into_response())
}

fn parse_body(value: &Value, id: String) -> Result<GroupSpec, GroupError> {
    let mut violations = Vec::new();
    let mut seen = BTreeSet::from([id.clone()]);
    let spec = parse_group(value, id, String::new(), &mut seen, &mut violations);
    if violations.is_empty() {
        Ok(spec)
    } else {
        Err(ApiError::Invalid(violations).into())
    }
}

/// Plans a request and, unless `dry_run`, applies it: the app changes in one command
/// (one store transaction), then the group metadata.
async fn change(
    master: &Master,
    request: Request,
    force: bool,
    dry_run: bool,
) -> Result<(StatusCode, Value), GroupError> {
    let _serialised = META_LOCK.lock().await;
    let dir = master.config.data_dir.clone();
    let meta = load_meta(&dir).await?;
    if dry_run {
        let guard = master.read().await;
        let plan = plan(&guard.core, &meta, &request, Timestamp::now())?;
        return Ok((StatusCode::OK, plan.to_json()));
    }
    let outcome = master
        .command_with(|core, now| {
            Ok(plan(core, &meta, &request, now).and_then(|plan| {
                let deployments = execute(core, &plan, force, now)?;
                Ok((plan, deployments))
            }))
        })
        .await??;
    let (plan, deployments) = outcome;
    if plan.meta != meta {
        save_meta(&dir, &plan.meta).await?;
    }
    let group = match &request {
        Request::Create(spec) | Request::Update { spec, .. } => spec.id.clone(),
        Request::Scale { id, .. } | Request::Delete { id } => id.clone(),
    };
    tracing::info!(group_id = %group, version = %plan.version, apps_changed = deployments.len(), "group changed");
    {
        let guard = master.read().await;
        for app in guard.core.apps().filter(|a| is_within(a.id.as_str(), &group)) {
            master.prefetch_image(&app.definition);
        }
    }
    master.publish(Event::new(
        "group_change_success",
        Timestamp::now(),
        json!({"groupId": group, "version": plan.version}),
    ));
    // One id to follow, as Marathon answers; a change without app changes gets a fresh
    // id that is already finished.
    let deployment =
        deployments.first().cloned().unwrap_or_else(|| DeploymentId::new(uuid::Uuid::new_v4().to_string()));
    Ok((StatusCode::OK, json!({"version": plan.version, "deploymentId": deployment, "deploymentIds": deployments})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_against_the_group() {
        assert_eq!(resolve("/prod", "db").unwrap(), "/prod/db");
        assert_eq!(resolve("/prod/web", "../db").unwrap(), "/prod/db");
        assert_eq!(resolve("/prod", "/other/x").unwrap(), "/other/x");
        assert_eq!(resolve("/prod", "./a/./b").unwrap(), "/prod/a/b");
        assert_eq!(resolve("/prod", "..").unwrap(), "/");
        assert!(resolve("/", "../x").is_err());
        assert!(resolve("/", "Bad").is_err());
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), vec!["/a/b", "/a", "/"]);
        assert!(is_within("/a/b", "/a") && !is_within("/ab", "/a") && is_within("/x", "/"));
    }

    fn graph_of(apps: &[(&str, &[&str])], group_deps: &[(&str, &[&str])]) -> (Graph, BTreeMap<AppId, AppDefinition>) {
        let apps: BTreeMap<AppId, AppDefinition> = apps
            .iter()
            .map(|(id, deps)| {
                let def =
                    AppDefinition::from_value(json!({"id": id, "cmd": "x", "dependencies": deps})).expect("valid");
                (AppId::parse(id).expect("id"), def)
            })
            .collect();
        let meta = GroupMeta {
            groups: group_deps
                .iter()
                .map(|(g, d)| {
                    (
                        g.to_string(),
                        GroupRecord { dependencies: d.iter().map(|s| s.to_string()).collect(), versions: vec![] },
                    )
                })
                .collect(),
        };
        let groups = group_paths(apps.keys().map(AppId::as_str), &meta);
        (dependency_graph(&apps, &meta, &groups), apps)
    }

    #[test]
    fn dependencies_order_levels_and_cycles_are_spelled_out() {
        let (graph, _) = graph_of(&[("/p/db", &[]), ("/p/api", &["db"]), ("/p/web", &["../p/api"])], &[]);
        let depth = levels(&graph).expect("no cycle");
        assert!(depth["/p/db"] < depth["/p/api"] && depth["/p/api"] < depth["/p/web"]);

        let (graph, _) = graph_of(&[("/a/x", &[]), ("/b/y", &[])], &[("/a", &["/b"]), ("/b", &["/a"])]);
        let cycle = levels(&graph).expect_err("cycle");
        assert_eq!(cycle.first(), cycle.last());
        let text = cycle.join(" -> ");
        assert!(text.contains("/a") && text.contains("/b"), "{text}");

        let (graph, _) = graph_of(&[("/x", &["/missing"])], &[]);
        assert_eq!(graph.unknown, vec![("/x".to_string(), "/missing".to_string())]);
    }

    #[test]
    fn long_chains_do_not_overflow() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("/c{i}")).collect();
        let deps: Vec<Vec<String>> =
            (0..20_000).map(|i| if i == 0 { vec![] } else { vec![format!("/c{}", i - 1)] }).collect();
        let pairs: Vec<(&str, Vec<&str>)> =
            ids.iter().zip(&deps).map(|(id, d)| (id.as_str(), d.iter().map(String::as_str).collect())).collect();
        let borrowed: Vec<(&str, &[&str])> = pairs.iter().map(|(id, d)| (*id, d.as_slice())).collect();
        let (graph, _) = graph_of(&borrowed, &[]);
        assert_eq!(levels(&graph).expect("no cycle")["/c19999"], 19_999);
    }

    #[test]
    fn body_violations_carry_nested_paths() {
        let body = json!({"id": "/prod", "apps": [{"id": "db", "cmd": "x", "cpus": 0}],
            "groups": [{"id": "web", "apps": [{"id": "a", "cmd": "x", "constraints": [["hostname", "SOMETIMES"]]},
                                               {"id": "/prod/web/a", "cmd": "x"}]},
                       {"id": "/elsewhere"}]});
        let Err(GroupError::Api(ApiError::Invalid(v))) = parse_body(&body, "/prod".into()) else {
            panic!("expected 422")
        };
        let paths: Vec<&str> = v.iter().map(|x| x.path.as_str()).collect();
        for expected in ["/apps(0)/cpus", "/groups(0)/apps(0)/constraints(0)", "/groups(0)/apps(1)/id", "/groups(1)/id"]
        {
            assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
        }
    }
}

#[cfg(test)]
mod api_tests {
    use std::time::Duration;

    use axum::body::Body as HttpBody;
    use axum::http::Request as HttpRequest;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use crate::server::{Master, MasterConfig};

    async fn master(dir: &std::path::Path) -> std::sync::Arc<Master> {
        let config = MasterConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.to_path_buf(),
            agent_timeout: Duration::from_secs(10),
            token: None,
            hostname: "127.0.0.1".into(),
            registry: Default::default(),
        };
        Master::open(config, 8080).await.expect("master opens")
    }

    async fn call(master: &std::sync::Arc<Master>, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let request = HttpRequest::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body.map_or_else(HttpBody::empty, |b| HttpBody::from(b.to_string())))
            .expect("request");
        let response = crate::api::router(master.clone()).oneshot(request).await.expect("response");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn app(id: &str, deps: &[&str]) -> Value {
        json!({"id": id, "cmd": "sleep 100", "cpus": 0.1, "mem": 16, "dependencies": deps})
    }

    fn app_ids(group: &Value) -> Vec<String> {
        let mut ids: Vec<String> = group["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a["id"].as_str().unwrap_or("").to_string())
            .collect();
        for g in group["groups"].as_array().into_iter().flatten() {
            ids.extend(app_ids(g));
        }
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn groups_are_created_shown_scaled_and_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = master(dir.path()).await;
        let product = json!({"id": "/product", "dependencies": [],
            "groups": [
                {"id": "/product/database", "apps": [app("mongo", &[]), app("mysql", &[])]},
                {"id": "/product/service", "dependencies": ["/product/database"],
                 "apps": [app("rails-app", &[]), app("play-app", &["rails-app"])]}]});
        let (status, body) = call(&m, "POST", "/v2/groups?dryRun=true", Some(product.clone())).await;
        assert_eq!(status, 200, "{body}");
        let steps: Vec<Vec<String>> = body["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| {
                s["actions"]
                    .as_array()
                    .expect("actions")
                    .iter()
                    .map(|a| a["app"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .collect();
        let step_of = |app: &str| steps.iter().position(|s| s.iter().any(|a| a == app)).expect(app);
        assert!(step_of("/product/database/mongo") < step_of("/product/service/rails-app"), "{steps:?}");
        assert!(step_of("/product/service/rails-app") < step_of("/product/service/play-app"), "{steps:?}");
        assert_eq!(call(&m, "GET", "/v2/apps", None).await.1["apps"], json!([]), "a dry run changes nothing");

        let (status, body) = call(&m, "POST", "/v2/groups", Some(product.clone())).await;
        assert_eq!(status, 201, "{body}");
        assert!(body["deploymentId"].is_string() && body["version"].is_string(), "{body}");
        let (status, again) = call(&m, "POST", "/v2/groups", Some(product)).await;
        assert_eq!(status, 409, "{again}");

        let (_, root) = call(&m, "GET", "/v2/groups", None).await;
        assert_eq!(root["id"], "/");
        assert_eq!(app_ids(&root).len(), 4, "{root}");
        let (status, service) = call(&m, "GET", "/v2/groups/product/service", None).await;
        assert_eq!(status, 200, "{service}");
        assert_eq!(service["dependencies"], json!(["/product/database"]));
        assert_eq!(app_ids(&service), vec!["/product/service/play-app", "/product/service/rails-app"]);
        let play = service["apps"]
            .as_array()
            .expect("apps")
            .iter()
            .find(|a| a["id"] == "/product/service/play-app")
            .expect("play");
        assert_eq!(
            play["dependencies"],
            json!(["/product/service/rails-app"]),
            "relative dependencies are stored absolute"
        );
        assert_eq!(call(&m, "GET", "/v2/groups/nothing", None).await.0, 404);

        // scaleBy doubles every app of the group (nested too).
        let (status, body) = call(&m, "PUT", "/v2/groups/product?force=true", Some(json!({"scaleBy": 2}))).await;
        assert_eq!(status, 200, "{body}");
        let (_, mongo) = call(&m, "GET", "/v2/apps/product/database/mongo", None).await;
        assert_eq!(mongo["app"]["instances"], 2);
        let (_, versions) = call(&m, "GET", "/v2/groups/product/versions", None).await;
        assert!(versions.as_array().is_some_and(|v| v.len() >= 2), "{versions}");

        // The metadata survives a restart of the master.
        drop(m);
        let m = master(dir.path()).await;
        let (_, service) = call(&m, "GET", "/v2/groups/product/service", None).await;
        assert_eq!(service["dependencies"], json!(["/product/database"]));

        let (status, body) = call(&m, "DELETE", "/v2/groups/product", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(call(&m, "GET", "/v2/apps", None).await.1["apps"], json!([]));
        assert_eq!(call(&m, "GET", "/v2/groups/product", None).await.0, 404);
    }

    #[tokio::test]
    async fn cycles_unknown_targets_and_bad_apps_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = master(dir.path()).await;
        let (status, _) = call(&m, "POST", "/v2/apps", Some(app("/shop/db", &[]))).await;
        assert_eq!(status, 201);
        let before = (call(&m, "GET", "/v2/apps", None).await.1, call(&m, "GET", "/v2/groups", None).await.1);

        let cycle = json!({"id": "/loop", "groups": [
            {"id": "a", "dependencies": ["/loop/b"], "apps": [app("x", &[])]},
            {"id": "b", "dependencies": ["/loop/a"], "apps": [app("y", &[])]}]});
        let (status, body) = call(&m, "POST", "/v2/groups", Some(cycle)).await;
        assert_eq!(status, 422, "{body}");
        let detail = &body["details"][0];
        assert!(
            detail["path"].as_str().is_some_and(|p| p.starts_with("/groups(") && p.ends_with("/dependencies")),
            "{body}"
        );
        assert!(
            detail["errors"][0]
                .as_str()
                .is_some_and(|e| e.contains("cycle") && e.contains("/loop/a") && e.contains("/loop/b")),
            "{body}"
        );

        // A cycle through an existing app: /shop/db is changed to depend on the new /shop/web.
        let through = json!({"apps": [app("db", &["web"]), app("web", &["db"])]});
        let (status, body) = call(&m, "PUT", "/v2/groups/shop", Some(through)).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["details"][0]["path"].as_str().is_some_and(|p| p.starts_with("/apps(")), "{body}");

        let unknown = json!({"id": "/u", "apps": [app("x", &["/nowhere"])]});
        let (status, body) = call(&m, "POST", "/v2/groups", Some(unknown)).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["details"][0]["path"], "/apps(0)/dependencies", "{body}");

        let bad = json!({"id": "/bad", "apps": [app("ok", &[]), {"id": "cpu", "cmd": "x", "cpus": -1}]});
        let (status, body) = call(&m, "POST", "/v2/groups", Some(bad)).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["details"][0]["path"], "/apps(1)/cpus", "{body}");

        let dup = json!({"id": "/dup", "apps": [app("a", &[]), app("/dup/a", &[])]});
        assert_eq!(call(&m, "POST", "/v2/groups", Some(dup)).await.0, 422);
        assert_eq!(call(&m, "PUT", "/v2/groups/shop", Some(json!({"scaleBy": 0}))).await.0, 422);

        let after = (call(&m, "GET", "/v2/apps", None).await.1, call(&m, "GET", "/v2/groups", None).await.1);
        assert_eq!(before, after, "rejected requests change nothing");
    }

    #[tokio::test]
    async fn put_replaces_the_apps_of_a_group_and_stops_dependents_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = master(dir.path()).await;
        let group = json!({"id": "/g", "apps": [app("db", &[]), app("api", &["db"]), app("web", &["api"])]});
        assert_eq!(call(&m, "POST", "/v2/groups", Some(group)).await.0, 201);
        let (status, plan) = call(&m, "DELETE", "/v2/groups/g", None).await;
        assert_eq!(status, 200, "{plan}");
        assert_eq!(
            call(&m, "POST", "/v2/groups", Some(json!({"id": "/g", "apps": [app("db", &[]), app("api", &["db"])]})))
                .await
                .0,
            201
        );

        // Without `web`... and with `api` gone: a dry run shows stop then start/update.
        let update = json!({"apps": [app("db", &[]), app("cache", &["db"])]});
        let (status, plan) = call(&m, "PUT", "/v2/groups/g?dryRun=true&force=true", Some(update.clone())).await;
        assert_eq!(status, 200, "{plan}");
        let actions: Vec<(String, String)> = plan["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .flat_map(|s| s["actions"].as_array().cloned().unwrap_or_default())
            .map(|a| (a["action"].as_str().unwrap_or("").to_string(), a["app"].as_str().unwrap_or("").to_string()))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("StopApplication".to_string(), "/g/api".to_string()),
                ("StartApplication".to_string(), "/g/cache".to_string())
            ],
            "unchanged /g/db is left alone"
        );
        // A deployment runs for /g/db: changing it needs force.
        let (status, _) = call(
            &m,
            "PUT",
            "/v2/groups/g",
            Some(json!({"apps": [{"id": "db", "cmd": "sleep 5", "cpus": 0.1, "mem": 16}]})),
        )
        .await;
        assert_eq!(status, 409);
        let (status, body) = call(&m, "PUT", "/v2/groups/g?force=true", Some(update)).await;
        assert_eq!(status, 200, "{body}");
        let (_, g) = call(&m, "GET", "/v2/groups/g", None).await;
        assert_eq!(app_ids(&g), vec!["/g/cache", "/g/db"]);
    }
}
